"""An interrupted ODM run, resumed with --resume, equals an uninterrupted one.

Both go through ``tools/train.py`` with the real local recipe
(``configs/odm/local/edsr_x4_w2a2_t91.py``: random T91 crops, flips and
transposes, MATLAB-bicubic LR on the fly, Set5 validation), shrunk by
:mod:`tiny_odm`: EDSR 8 channels x 2 blocks, batch 2, ``num_workers=0``,
``randomness=dict(seed=0, deterministic=True)``, 4 iterations, lr halved at
iteration 3, OffsetHook with p = 0.5 on 2 calibration batches.

* uninterrupted: iterations 1-4, one checkpoint at 4, validation at 4;
* interrupted: checkpoint at 2, then a hook raises after iteration 3 (the
  work of iteration 3 is lost, as with a kill); ``--resume`` (latest
  checkpoint of the work dir) runs iterations 3-4 and validates at 4.

Why this is bit-exact on CPU although mmengine does not restore RNG states:
the only randomness after the model is built is the data pipeline's numpy
draws (crop/flip/transpose) and the InfiniteSampler's seeded index stream.
Calibration restores the RNG states it consumed and (odm_mm.hooks) restarts
the sampler's index stream, so the uninterrupted run trains on the stream
from its start; the resumed run re-seeds identically, skips calibration
(ranges and offsets come from the checkpoint) and mmengine's train loop
re-draws the first k batches to skip them, consuming exactly the same numpy
draws. Both runs execute in this process, so every float kernel (conv,
matmul, reduction) is the same code with the same thread count and dispatch
on the same inputs: the equality is exact on any CPU, though the values
themselves differ between CPUs and dispatches (docs/test_variants.md).
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook

import odm_mm

from tiny_odm import load, train, val_metrics, write_config, \
    write_fp32_checkpoint

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')


class _Killed(Exception):
    """Raised by :class:`KillAfterIterHook` to simulate a killed process."""


if odm_mm.HAS_MMAGIC:
    from mmagic.registry import HOOKS

    @HOOKS.register_module(name='_TestKillAfterIterHook', force=True)
    class KillAfterIterHook(Hook):
        """Raise after iteration ``at`` (after its checkpoint, if any)."""

        priority = 'LOWEST'

        def __init__(self, at: int) -> None:
            self.at = at

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None) -> None:
            if runner.iter + 1 == self.at:
                raise _Killed(f'killed after iteration {self.at}')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_data_root):
    """Work dirs of the uninterrupted and the interrupted+resumed runs."""
    tmp = tmp_path_factory.mktemp('resume')
    fp32 = write_fp32_checkpoint(tmp / 'fp32.pth')
    full = tmp / 'full'
    train(write_config(tmp / 'full.py', fp32, 'resume_full',
                       ckpt_interval=4, val_interval=4), full,
          tiny_data_root)
    resumed = tmp / 'resumed'
    killed_cfg = write_config(
        tmp / 'killed.py', fp32, 'resume_killed', ckpt_interval=2,
        val_interval=4,
        extra_hooks=[dict(type='_TestKillAfterIterHook', at=3)])
    with pytest.raises(_Killed):
        train(killed_cfg, resumed, tiny_data_root)
    assert sorted(p.name for p in resumed.glob('iter_*.pth')) == \
        ['iter_2.pth']
    train(write_config(tmp / 'resumed.py', fp32, 'resume_resumed',
                       ckpt_interval=2, val_interval=4), resumed,
          tiny_data_root, args=['--resume'])
    return full, resumed


def _resumed_log(work_dir: Path) -> str:
    """The text the resumed run logged, from its resume message on.

    mmengine names a run's log folder by the second it started, so the
    killed and the resumed run share one folder (and one log file, which the
    resumed run rewrites) when both start within the same second, and have
    two folders otherwise. The resumed run is found by its resume message,
    not by counting or ordering folders.
    """
    marker = 'resumed epoch: 0, iter: 2'
    texts = [p.read_text() for p in work_dir.glob('*/*.log')]
    hits = [t for t in texts if marker in t]
    assert len(hits) == 1, f'{len(hits)} logs hold {marker!r}'
    text = hits[0]
    assert text.count(marker) == 1
    return text[text.index(marker):]


def test_resumed_run_really_resumed(runs):
    _, resumed = runs
    text = _resumed_log(resumed)
    assert 'not re-calibrating' in text
    # after the resume, training continues at iteration 3: 1 and 2 not rerun
    iters = [int(m) for m in re.findall(r'Iter\(train\) \[(\d+)/4\]', text)]
    assert iters == [3, 4], iters
    # the checkpoint of the resumed run is the 4th iteration's, and its
    # message hub carries the killed run's iterations 1-2 as well
    ckpt = load(resumed / 'iter_4.pth')
    assert ckpt['meta']['iter'] == 4
    assert len(ckpt['message_hub']['log_scalars']['train/loss'].data[0]) \
        == 4
    assert (resumed / 'last_checkpoint').read_text().strip().endswith(
        'iter_4.pth')


def test_weights_ranges_offsets_identical(runs):
    full, resumed = runs
    a = load(full / 'iter_4.pth')['state_dict']
    b = load(resumed / 'iter_4.pth')['state_dict']
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the test is not vacuous: ranges moved, offsets were chosen and trained
    init = load(resumed / 'iter_2.pth')['state_dict']
    upper = [k for k in a if k.endswith('act_quantizer.upper')]
    assert upper and any(not torch.equal(a[k], init[k]) for k in upper)
    flags = [bool(a[k]) for k in a if k.endswith(('shift_enabled',
                                                  'scale_enabled'))]
    assert any(flags) and not all(flags)


def test_optimizer_and_scheduler_state_identical(runs):
    full, resumed = runs
    a, b = load(full / 'iter_4.pth'), load(resumed / 'iter_4.pth')
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and sa
    for pid in sa:
        for name in sa[pid]:
            assert torch.equal(torch.as_tensor(sa[pid][name]),
                               torch.as_tensor(sb[pid][name])), (pid, name)
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    assert a['param_schedulers'] == b['param_schedulers']
    lrs = {g['lr'] for g in a['optimizer']['param_groups']}
    assert lrs == {5e-5, 5e-3}  # halved at iteration 3, range lr x100


def test_calibration_table_and_losses_identical(runs):
    full, resumed = runs
    a, b = load(full / 'iter_4.pth'), load(resumed / 'iter_4.pth')
    assert a['meta']['odm_calibration'] == b['meta']['odm_calibration']
    ha = a['message_hub']['log_scalars']
    hb = b['message_hub']['log_scalars']
    keys = [k for k in ha if k.startswith('train/') and (
        'loss' in k or 'conflict' in k or k.endswith('lr'))]
    assert 'train/loss' in keys and 'train/conflict_ratio' in keys
    for key in keys:
        va, ca = ha[key].data
        vb, cb = hb[key].data
        assert len(va) == 4, key  # iterations 1-4 in both histories
        np.testing.assert_array_equal(va, vb, err_msg=key)
        np.testing.assert_array_equal(ca, cb, err_msg=key)


def test_validation_metrics_identical(runs):
    full, resumed = runs
    ma, mb = val_metrics(full), val_metrics(resumed)
    assert len(ma) == len(mb) == 1  # one validation, at iteration 4
    assert set(ma[0]) == {'Set5/PSNR', 'Set5/SSIM'}
    assert ma == mb
