"""``tools/dist_train.sh`` with DDTB's official placement: ranks agree.

The 2-process gloo launcher (as :mod:`test_dist_train`) runs the tiny T91
recipe of :mod:`tiny_odm` with DDTB as its authors placed it
(``quant_cfg.placement='ddtb_official'``: per residual block the identity
path, the ReLU output and the residual branch are quantized by
:class:`~odm_mm.placement.ActSite` modules, not by the convs; the official
gate init), calibrated by DDTBCalibHook on each rank's own data shard, for 2
iterations. A probe hook saves each rank's full generator state (parameters
and buffers: site bounds, gate weights and BatchNorm statistics, dynamic
flags, weights) right after calibration and after the last step. Checked:

* the placement's quantizers exist (per block the skip and residual sites
  and conv2's input; conv1 reads its input unquantized), were calibrated on
  each rank, and one of the 6 got the dynamic gate (int(6 x 0.3));
* after calibration both ranks hold identical state, bit for bit (rank 0's
  bounds and choice were broadcast);
* after 2 DDP steps both ranks hold identical state, bit for bit, and the
  site bounds, the gate's BatchNorm statistics and the weights moved. (The
  gate's running statistics, updated from each rank's own batch, differed
  between steps until DDTBCalibHook broadcast rank 0's after each step.)
"""
import pytest
import torch

import odm_mm

from test_dist_train import PROBE, dist_train
from tiny_odm import load, write_config, write_fp32_checkpoint

pytestmark = [
    pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic'),
    pytest.mark.skipif(torch.cuda.is_available(),
                       reason='checks the CPU (gloo) path'),
]

# the probe of test_dist_train reads OffsetHook's table; DDTBCalibHook is one
PROBE_DDTB = PROBE.replace("type(h).__name__ == 'OffsetHook'",
                           "type(h).__name__ == 'DDTBCalibHook'")

DDTB_OFFICIAL = '''
model = dict(
    generator=dict(mid_channels=8, num_blocks=2),
    fp32_checkpoint={fp32!r},
    quant_cfg=dict(w_bits=2, a_bits=2, method='ddtb',
                   placement='ddtb_official',
                   act_cfg=dict(gate_init='official')),
    var_loss=None)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={{
        'act_quantizer': dict(lr_mult=100. / 255),
        'act_quantizer.gate': dict(lr_mult=1.)}}))
custom_hooks = [
    dict(type='DDTBCalibHook', dynamic_ratio=0.3, num_batches=2,
         dynamic_batches=2),
    dict(type='NumericalGuardHook'),
    dict(type='_TestRankProbeHook', out={out!r}),
]
custom_imports = dict(imports=['odm_mm', 'rank_probe'],
                      allow_failed_imports=False)
val_cfg = None
val_dataloader = None
val_evaluator = None
'''


@pytest.fixture(scope='module')
def placement_run(tmp_path_factory, tiny_data_root, venv_python):
    tmp = tmp_path_factory.mktemp('dist_placement')
    (tmp / 'rank_probe.py').write_text(PROBE_DDTB)
    fp32 = write_fp32_checkpoint(tmp / 'fp32.pth')
    cfg = write_config(tmp / 'ddtb.py', fp32, 'dist_ddtb_official',
                       max_iters=2, val_interval=2, ckpt_interval=2)
    cfg.write_text(cfg.read_text() + DDTB_OFFICIAL.format(
        fp32=str(fp32), out=str(tmp)))
    return tmp, dist_train(tmp, cfg, tiny_data_root, venv_python)


def _state(tmp, tag, rank):
    return torch.load(tmp / f'{tag}_rank{rank}.pt',
                      weights_only=False)['state']


def _quantizers(state):
    """Activation-quantizer keys: the placement's sites and conv2's input."""
    return sorted(k for k in state if '.act_quantizer.' in k)


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'ranks differ in {differ}'


def test_sites_calibrated_and_gate_chosen(placement_run):
    tmp, out = placement_run
    assert 'rank 1/2 uses the gloo backend on CPU' in out
    assert 'Iter(train) [2/2]' in out
    calib = _state(tmp, 'calib', 0)
    quants = _quantizers(calib)
    uppers = [k for k in quants if k.endswith('act_quantizer.upper')]
    # 2 blocks x (skip site, residual site, ReLU output = conv2's input)
    assert sorted(k.split('.')[2] for k in uppers) == \
        ['conv2', 'conv2', 'residual_site', 'residual_site', 'skip_site',
         'skip_site']
    assert all(bool(calib[k[:-len('upper')] + 'initialized'])
               for k in uppers)  # calibrated on this rank
    dynamic = [k for k in quants if k.endswith('act_quantizer.dynamic')]
    assert sorted(bool(calib[k]) for k in dynamic) == [False] * 5 + [True]


def test_ranks_identical_after_calibration(placement_run):
    tmp, _ = placement_run
    _assert_identical(_state(tmp, 'calib', 0), _state(tmp, 'calib', 1))


def test_ranks_identical_after_steps(placement_run):
    tmp, _ = placement_run
    f0, f1 = _state(tmp, 'final', 0), _state(tmp, 'final', 1)
    _assert_identical(f0, f1)
    c0 = _state(tmp, 'calib', 0)
    moved = [k for k in f0 if f0[k].is_floating_point() and
             not torch.equal(f0[k], c0[k])]
    assert any('_site.act_quantizer.upper' in k for k in moved)
    assert any('act_quantizer.gate.bn.running_mean' in k for k in moved)
    assert any(k.endswith('conv1.weight') for k in moved)
    saved = load(tmp / 'work' / 'iter_2.pth')['state_dict']
    for key, value in f0.items():
        assert torch.equal(saved[f'generator.{key}'], value), key
