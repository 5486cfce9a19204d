"""W2A2 EDSR with res_scale 0.1 stays finite, or the guard stops it.

Smoke-size version of ``tools/analysis/fullsize_nan_check.py`` (the
full-size run, 256 channels x 32 blocks, is recorded in
docs/troubleshooting.md): EDSR with 8 channels, 2 blocks and mmagic's
full-size ``res_scale=0.1``, W2A2, from a random FP32 teacher on T91
patches, 3 iterations through ``tools/train.py`` for ODM, PAMS, DAQ and
DDTB (each with its own calibration hook, optimizer and losses, as in
``configs/<method>/edsr_x4_w2a2.py``), NumericalGuardHook on.

A run must end with every logged loss finite in the checkpoint's message
hub and every saved tensor finite; a non-finite value that was not caught
fails the test. The last case poisons a DDTB run and checks that the guard
stops it naming the iteration and keeps the last good checkpoint.
"""
import math

import pytest
import torch

import odm_mm

# (importing test_guards also registers its _TestPoisonHook)
from test_guards import assert_stopped_at_2_keeping_iter_1
from tiny_odm import load, train, write_config, write_fp32_checkpoint

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')

# per method: quant_cfg, losses, optimizer and hooks of its W2A2 config
_PAMS_OPTIM = '''dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={'act_quantizer': dict(lr_mult=100.)}))'''
_DDTB_OPTIM = '''dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={
        'act_quantizer': dict(lr_mult=100. / 255),
        'act_quantizer.gate': dict(lr_mult=1.)}))'''
_CALIB = "dict(type='OffsetHook', ratio=0.3, num_batches=2, shift=False, " \
    'scale=False)'
METHODS = {
    'odm': dict(extra='', optim=None, calib=None),
    'pams': dict(extra='var_loss=None,', optim=_PAMS_OPTIM, calib=_CALIB),
    'daq': dict(extra='var_loss=None, skt_loss=None,', optim=_PAMS_OPTIM,
                calib=_CALIB),
    'ddtb': dict(extra='var_loss=None,', optim=_DDTB_OPTIM,
                 calib="dict(type='DDTBCalibHook', dynamic_ratio=0.3, "
                 'num_batches=2, dynamic_batches=2)'),
}


def _config(tmp_path, method, extra_hooks=()):
    fp32 = write_fp32_checkpoint(tmp_path / 'fp32.pth')
    cfg = write_config(tmp_path / f'{method}.py', fp32, f'nan_{method}',
                       max_iters=3, val_interval=10, ckpt_interval=1)
    spec = METHODS[method]
    text = cfg.read_text() + f'''
model = dict(
    generator=dict(mid_channels=8, num_blocks=2, res_scale=0.1),
    fp32_checkpoint={str(fp32)!r},
    quant_cfg=dict(w_bits=2, a_bits=2, method={method!r}),
    {spec['extra']})
'''
    if spec['optim']:
        text += f'optim_wrapper = {spec["optim"]}\n'
    if spec['calib']:
        text += (f"custom_hooks = [{spec['calib']}, "
                 "dict(type='NumericalGuardHook')]\n")
    text += f'custom_hooks = custom_hooks + {list(extra_hooks)!r}\n'
    cfg.write_text(text)
    return cfg


def _all_finite(state):
    return [k for k, v in state.items() if torch.is_tensor(v) and
            v.is_floating_point() and not bool(torch.isfinite(v).all())]


@pytest.mark.parametrize('method', sorted(METHODS))
def test_w2a2_res_scale_01_finite(tmp_path, tiny_data_root, method):
    cfg = _config(tmp_path, method)
    work = tmp_path / 'work'
    train(cfg, work, tiny_data_root)
    ckpt = load(work / 'iter_3.pth')
    assert ckpt['meta']['iter'] == 3
    assert ckpt['meta']['cfg'].count('res_scale=0.1') >= 1
    scalars = ckpt['message_hub']['log_scalars']
    losses = [k for k in scalars if k.startswith('train/loss')]
    assert 'train/loss' in losses
    for key in losses:
        values = scalars[key].data[0]
        assert len(values) == 3, key
        assert all(math.isfinite(float(v)) for v in values), (key, values)
    assert _all_finite(ckpt['state_dict']) == []


def test_w2a2_nan_is_stopped_naming_iteration(tmp_path, tiny_data_root):
    cfg = _config(tmp_path, 'ddtb',
                  extra_hooks=[dict(type='_TestPoisonHook', at=2)])
    work = tmp_path / 'work'
    with pytest.raises(FloatingPointError) as err:
        train(cfg, work, tiny_data_root)
    assert_stopped_at_2_keeping_iter_1(str(err.value), work)
