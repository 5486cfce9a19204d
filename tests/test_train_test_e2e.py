"""End to end: tools/train.py, --resume PATH and tools/test.py on tiny data.

Runs the real FP32 config configs/fp32/edsr_x4_t91.py (T91 training with
on-the-fly LR, Set5 validation, Set5/Set14/B100 test) in subprocesses with
the venv python, pointed at the generated data root through
``--cfg-options odm_data_root=...`` and shrunk to a 1-block, 8-channel EDSR.
"""
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

import odm_mm

from conftest import REPO

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

CONFIG = 'configs/fp32/edsr_x4_t91.py'
TINY = ['model.generator.mid_channels=8', 'model.generator.num_blocks=1']


def _run(python: str, args, cwd: Path) -> str:
    proc = subprocess.run([python] + [str(a) for a in args],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _train(python, root, work_dir, max_iters, *extra):
    return _run(python, [
        REPO / 'tools' / 'train.py', REPO / CONFIG, '--work-dir', work_dir,
        *extra, '--cfg-options', f'odm_data_root={root}', *TINY,
        f'train_cfg.max_iters={max_iters}', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2'
    ], work_dir.parent)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data_root, venv_python):
    """Work dir of a 2-iteration training run."""
    work_dir = tmp_path_factory.mktemp('e2e') / 'train'
    _train(venv_python, tiny_data_root, work_dir, 2)
    return work_dir


def test_train_writes_checkpoints(trained):
    ckpt = trained / 'iter_2.pth'
    assert ckpt.is_file()
    assert list(trained.glob('best_Set5_PSNR_iter_2.pth'))
    state = torch.load(ckpt, weights_only=True)  # odm_mm.checkpoint
    assert state['meta']['iter'] == 2
    assert 'generator.body.0.conv1.weight' in state['state_dict']
    # out_dir=None in the config: not mmagic's <cwd>/work_dirs/<name>/
    assert not (trained.parent / 'work_dirs').exists()


def test_resume_from_path(trained, tiny_data_root, venv_python, tmp_path):
    work_dir = tmp_path / 'resumed'
    before = sorted(p.name for p in trained.glob('*.pth'))
    out = _train(venv_python, tiny_data_root, work_dir, 3, '--resume',
                 trained / 'iter_2.pth')
    assert 'resumed epoch: 0, iter: 2' in out
    # the source run keeps its files, its best checkpoint included (which
    # mmengine would delete when this run finds a better one)
    assert sorted(p.name for p in trained.glob('*.pth')) == before
    assert 'best_Set5_PSNR_iter_2.pth' in before
    assert (work_dir / 'iter_3.pth').is_file()
    # a fresh run would have saved iter_2.pth (checkpoint interval 2)
    assert not (work_dir / 'iter_2.pth').exists()


def test_test_tool_writes_metrics(trained, tiny_data_root, venv_python):
    out_file = trained / 'metrics.json'
    out = _run(venv_python, [
        REPO / 'tools' / 'test.py', REPO / CONFIG, trained / 'iter_2.pth',
        '--work-dir', trained / 'test', '--out', out_file, '--cfg-options',
        f'odm_data_root={tiny_data_root}', *TINY
    ], trained.parent)
    assert 'HR images smaller than' not in out  # no training set built
    metrics = json.loads(out_file.read_text())
    for name in ('Set5', 'Set14', 'B100'):
        for metric in ('PSNR', 'SSIM'):
            value = metrics[f'{name}/{metric}']
            assert isinstance(value, float) and math.isfinite(value), value
        assert 5.0 < metrics[f'{name}/PSNR'] < 60.0
        assert f'  {name}/PSNR: ' in out.split('Test metrics:')[-1]
