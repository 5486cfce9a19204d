"""``tools/dist_train.sh CONFIG 2`` on CPU: gloo, identical ranks, finishes.

Runs the tiny ODM recipe of :mod:`tiny_odm` (its mmagic base sets
``env_cfg.dist_cfg.backend='nccl'``) with 2 processes for 2 iterations. A
probe hook (a module written next to the config and imported through
``custom_imports``) saves each rank's model state right after calibration
and after training, and the OffsetHook's own table (it also skips yapf
formatting of the config text, for speed). Checked:

* the launcher switched to gloo on this CPU-only machine and said so;
* each rank calibrated on its own data shard (their measured percentiles
  differ), yet after OffsetHook's broadcast both use rank 0's bounds,
  offsets and offset-layer choice, bit for bit;
* after 2 DDP iterations (cooperative gate, NumericalGuardHook's all-reduced
  checks) the weights, ranges and offsets of both ranks are identical;
* the run ends with a checkpoint.
"""
import os
import socket
import subprocess

import pytest
import torch

import odm_mm

from conftest import REPO
from tiny_odm import load, write_config, write_fp32_checkpoint

pytestmark = [
    pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic'),
    pytest.mark.skipif(torch.cuda.is_available(),
                       reason='checks the CPU (gloo) path'),
]

PROBE = '''
import os
import mmengine.config.config as mm_config
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmagic.registry import HOOKS


# test speed: skip yapf formatting of the config text (see tiny_odm.py)
mm_config.FormatCode = lambda text, **kwargs: (text, None)


@HOOKS.register_module(name='_TestRankProbeHook', force=True)
class RankProbeHook(Hook):
    priority = 'LOW'  # after OffsetHook (HIGH)

    def __init__(self, out):
        self.out = out

    def _save(self, runner, tag):
        model = getattr(runner.model, 'module', runner.model)
        state = {k: v.detach().clone() for k, v in
                 model.generator.state_dict().items()}
        stats = [h.stats for h in runner.hooks
                 if type(h).__name__ == 'OffsetHook'][0]
        torch.save(dict(state=state, stats=stats), os.path.join(
            self.out, f'{tag}_rank{get_rank()}.pt'))

    def before_train(self, runner):
        self._save(runner, 'calib')

    def after_train(self, runner):
        self._save(runner, 'final')
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory, tiny_data_root, venv_python):
    tmp = tmp_path_factory.mktemp('dist')
    (tmp / 'rank_probe.py').write_text(PROBE)
    fp32 = write_fp32_checkpoint(tmp / 'fp32.pth')
    cfg = write_config(tmp / 'dist.py', fp32, 'dist_tiny', max_iters=2,
                       val_interval=2, ckpt_interval=2, extra_hooks=[
                           dict(type='_TestRankProbeHook', out=str(tmp))])
    cfg.write_text(cfg.read_text() + (
        "custom_imports = dict(imports=['odm_mm', 'rank_probe'], "
        'allow_failed_imports=False)\n'
        'val_cfg = None\nval_dataloader = None\nval_evaluator = None\n'))
    return tmp, dist_train(tmp, cfg, tiny_data_root, venv_python)


def dist_train(tmp, cfg, data_root, venv_python) -> str:
    """``tools/dist_train.sh CFG 2`` from ``tmp`` (work dir ``tmp/work``,
    ``tmp`` importable for the probe); returns its output, asserts rc 0."""
    env = dict(os.environ, PYTHON=venv_python, PORT=str(_free_port()),
               PYTHONPATH=f'{tmp}{os.pathsep}{REPO}', OMP_NUM_THREADS='1')
    env.pop('LOCAL_RANK', None)
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(cfg), '2',
         '--work-dir', str(tmp / 'work'), '--cfg-options',
         f'odm_data_root={data_root}'],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def _rank(tmp, tag, rank):
    return torch.load(tmp / f'{tag}_rank{rank}.pt', weights_only=False)


def test_gloo_on_cpu_and_finishes(dist_run):
    tmp, out = dist_run
    assert "dist_cfg: {'backend': 'nccl'}" in out  # mmagic's setting
    assert 'rank 0/2 uses the gloo backend on CPU' in out
    assert 'rank 1/2 uses the gloo backend on CPU' in out
    assert 'Iter(train) [2/2]' in out
    ckpt = load(tmp / 'work' / 'iter_2.pth')
    assert ckpt['meta']['iter'] == 2 and 'odm_calibration' in ckpt['meta']


def test_calibration_is_rank0s_on_both_ranks(dist_run):
    tmp, _ = dist_run
    r0, r1 = _rank(tmp, 'calib', 0), _rank(tmp, 'calib', 1)
    # each rank measured its own shard ...
    assert any(r0['stats'][n]['lower'] != r1['stats'][n]['lower'] or
               r0['stats'][n]['upper'] != r1['stats'][n]['upper']
               for n in r0['stats'])
    # ... and both use rank 0's bounds, offsets and choice
    for key, value in r0['state'].items():
        assert torch.equal(value, r1['state'][key]), key
    for name, st in r0['stats'].items():
        q = f'{name}.act_quantizer.'
        assert float(r1['state'][q + 'lower']) == pytest.approx(
            st['lower'], rel=1e-6)
        assert float(r1['state'][q + 'upper']) == pytest.approx(
            st['upper'], rel=1e-6)
        assert bool(r1['state'][f'{name}.shift_enabled']) == st['shift']
        assert bool(r1['state'][f'{name}.scale_enabled']) == st['scale']
        assert r1['stats'][name]['shift'] == st['shift']
        assert r1['stats'][name]['scale'] == st['scale']
    flags = [st['shift'] for st in r0['stats'].values()]
    assert any(flags) and not all(flags)  # p = 0.5 picks some layers


def test_ranks_identical_after_training(dist_run):
    tmp, _ = dist_run
    f0, f1 = _rank(tmp, 'final', 0), _rank(tmp, 'final', 1)
    c0 = _rank(tmp, 'calib', 0)
    for key, value in f0['state'].items():
        assert torch.equal(value, f1['state'][key]), key
    moved = [k for k in f0['state'] if k.endswith('.weight') and
             not torch.equal(f0['state'][k], c0['state'][k])]
    assert moved  # training changed the weights
    saved = load(tmp / 'work' / 'iter_2.pth')['state_dict']
    for key, value in f0['state'].items():
        assert torch.equal(saved[f'generator.{key}'], value), key
