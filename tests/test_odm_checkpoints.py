"""Checkpoints: mmagic's FP32 format feeds ODM as is; ODM's load safely.

1. An FP32 EDSR checkpoint written the way mmagic writes one: mmagic's own
   ``BaseEditModel`` trained for 1 iteration by an mmengine Runner
   (``tools/train.py configs/fp32/edsr_x4_t91.py``, shrunk) gives
   ``{'meta', 'state_dict': {'generator.conv_first.weight', ...},
   'optimizer', ...}``.
2. That file, as ``model.fp32_checkpoint``, initialises the ODM student and
   the frozen teacher exactly, without renaming a key.
3. The checkpoint of an ODM run started from it loads with
   ``torch.load(..., weights_only=True)`` (with odm_mm imported: its safe
   globals cover mmengine's message hub), and the calibration table that
   OffsetHook stores in ``meta['odm_calibration']`` holds only JSON types.
"""
import copy
import json

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import odm_mm

from conftest import REPO
from tiny_odm import isolated_runs, load, train, write_config

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')

FP32_CONFIG = REPO / 'configs' / 'fp32' / 'edsr_x4_t91.py'
FP32_TINY = [
    'model.generator.mid_channels=8', 'model.generator.num_blocks=2',
    'train_cfg.max_iters=1', 'train_dataloader.batch_size=2',
    'train_dataloader.num_workers=0', 'val_cfg=None', 'val_dataloader=None',
    'val_evaluator=None', 'default_hooks.checkpoint.interval=1',
    'default_hooks.checkpoint.save_best=None', 'experiment_name=fp32_tiny'
]


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory, tiny_data_root):
    """``(FP32 checkpoint, ODM checkpoint, ODM config)`` paths."""
    tmp = tmp_path_factory.mktemp('ckpt')
    train(FP32_CONFIG, tmp / 'fp32', tiny_data_root, options=FP32_TINY)
    fp32 = tmp / 'fp32' / 'iter_1.pth'
    cfg = write_config(tmp / 'odm.py', fp32, 'ckpt_odm', max_iters=2,
                       val_interval=10, ckpt_interval=2)
    train(cfg, tmp / 'odm', tiny_data_root)
    return fp32, tmp / 'odm' / 'iter_2.pth', cfg


def test_fp32_checkpoint_is_mmagic_format(ckpts):
    ckpt = load(ckpts[0])
    assert {'meta', 'state_dict', 'optimizer'} <= set(ckpt)
    assert 'generator.conv_first.weight' in ckpt['state_dict']
    assert all(k.startswith('generator.') for k in ckpt['state_dict'])
    assert ckpt['meta']['iter'] == 1


def test_fp32_checkpoint_initialises_student_and_teacher(ckpts):
    fp32, _, cfg_path = ckpts
    from mmagic.registry import MODELS
    cfg = Config.fromfile(str(cfg_path))
    with isolated_runs(), DefaultScope.overwrite_default_scope('mmagic'):
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
    state = load(fp32)['state_dict']
    gen = model.generator.state_dict()
    teacher = model.teacher.state_dict()
    assert len(model.quantized_layers) == 4
    for key, value in state.items():
        name = key[len('generator.'):]
        assert torch.equal(gen[name], value), name
        assert torch.equal(teacher[name], value), name


def _json_like(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _json_like(v)
                   for k, v in obj.items())
    if isinstance(obj, list):
        return all(_json_like(v) for v in obj)
    return obj is None or type(obj) in (str, int, float, bool)


def test_odm_checkpoint_loads_weights_only(ckpts):
    _, odm, _ = ckpts
    ckpt = torch.load(odm, map_location='cpu', weights_only=True)
    assert {'meta', 'state_dict', 'optimizer', 'message_hub',
            'param_schedulers'} <= set(ckpt)
    state = ckpt['state_dict']
    for suffix in ('act_quantizer.lower', 'act_quantizer.upper', 'shift',
                   'scale', 'shift_enabled', 'scale_enabled'):
        assert f'generator.body.0.conv1.{suffix}' in state, suffix
    assert 'teacher.conv_first.weight' in state
    table = ckpt['meta']['odm_calibration']
    assert list(table) == ['body.0.conv1', 'body.0.conv2', 'body.1.conv1',
                           'body.1.conv2']
    assert _json_like(table)
    assert json.loads(json.dumps(table)) == table
    for name, row in table.items():
        assert set(row) == {'lower', 'upper', 'absmax', 'm_mu', 'm_sigma',
                            'channels', 'shift', 'scale'}
        assert row['shift'] == bool(state[f'generator.{name}.shift_enabled'])
        assert row['scale'] == bool(state[f'generator.{name}.scale_enabled'])


def test_odm_checkpoint_state_dict_alone_needs_no_allowlist(ckpts, tmp_path):
    """The weights and meta alone load with plain torch, no odm_mm globals."""
    _, odm, _ = ckpts
    ckpt = load(odm)
    small = tmp_path / 'weights.pth'
    torch.save({'meta': ckpt['meta'], 'state_dict': ckpt['state_dict']},
               small)
    import subprocess
    import sys
    code = ('import torch; c = torch.load(%r, weights_only=True); '
            "print(len(c['meta']['odm_calibration']))" % str(small))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '4'
