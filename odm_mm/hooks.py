"""OffsetHook: Algorithm 1's calibration (Eq. 6 selection, Eq. 7/8 offsets).

Glue (mmengine). Before the first training iteration the hook:

1. takes ``num_batches`` batches of training patches from the training
   dataset (a private fixed-seed loader; through the model's data
   preprocessor);
2. runs them through the FP32 network (quantization switched off) and
   measures every quantized layer (:func:`odm_mm.calibration.calibrate`):
   percentile bounds and Eq. 6 ``M_mu``/``M_sigma``;
3. initialises the quantizer bounds, enables shift offsets on the top-p
   layers by ``M_mu`` and scale offsets on the top-p layers by ``M_sigma``
   (:func:`odm_mm.calibration.apply_calibration`), logs the table;
4. under DDP, broadcasts rank 0's bounds, offsets and choice to every rank.

Resume: the bounds, offsets and their enabled flags are buffers/parameters of
the model, so they are in every checkpoint; the table is stored in the
checkpoint's ``meta['odm_calibration']``. A run whose quantizers are already
initialised (resumed or ``load_from`` an ODM checkpoint) is never
re-calibrated. The random-number state of python, numpy and torch is restored
after calibration, so calibrating does not change the training sample order
or augmentations.
"""
from __future__ import annotations

import random
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import broadcast, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmagic.registry import HOOKS

from .calibration import OFFSET_INITS, OFFSET_POLICIES, LayerStats, \
    calibrate_model, observe, offset_table, quantization_error
from .layers.act_site import act_sites

__all__ = ['OffsetHook']


@HOOKS.register_module()
class OffsetHook(Hook):
    """Calibrate quantizer ranges and choose distribution offsets.

    Args:
        ratio: Offset ratio p of Eq. 7/8, in (0, 1] (paper: 0.3).
        num_batches: Calibration batches from the train dataloader.
        shift: Enable shift offsets (Eq. 7) on the top-p layers by M_mu.
        scale: Enable scale offsets (Eq. 8) on the top-p layers by M_sigma.
        percentile_j: Percentile j of the activation range init (paper: 1).
        recalib_interval: If > 0, every ``recalib_interval`` iterations the
            bounds of the ODM quantizers are pulled towards the current
            percentiles of the (offset) features of the training batch:
            ``bound <- (1 - m) bound + m P_j`` (m = ``recalib_momentum``),
            measured with quantization on (each activation quantizer's
            ``pull_``; PAMS's has no such rule and stays). This ties the
            ranges to the distribution that L_V is shrinking (not in the
            paper; off by default, see docs/odm_design.md).
        recalib_momentum: m above, in (0, 1].
        seed: Seed of the calibration batch draw (``seed + rank``: under
            DDP each rank measures its own patches, then rank 0's result is
            broadcast).
        offset_init: ``'identity'`` (default) or ``'stats'``: start the
            chosen offsets at the channel-equalising values of Eq. 6's
            statistics, compensated in the conv
            (:func:`odm_mm.calibration.init_offsets_from_stats`).
        offset_policy: ``'both'`` (paper) or ``'one'`` offset kind per
            layer (:func:`odm_mm.calibration.select_offsets`).

    After calibrating, the per-layer quantization noise-to-signal of the
    quantized network on the calibration batches
    (:func:`odm_mm.calibration.quantization_error`) is logged and put in
    the message hub's runtime info as ``odm_quant_error``.
    """

    priority = 'HIGH'

    def __init__(self, ratio: float = 0.3, num_batches: int = 8,
                 shift: bool = True, scale: bool = True,
                 percentile_j: float = 1.0, recalib_interval: int = 0,
                 recalib_momentum: float = 0.1, seed: int = 0,
                 offset_init: str = 'identity',
                 offset_policy: str = 'both') -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not 0.0 < ratio <= 1.0:
            raise ValueError('OffsetHook.ratio (offset ratio p of Eq. 7/8) '
                             f'must be a number in (0, 1], got {ratio!r}')
        if not isinstance(recalib_interval, int) or recalib_interval < 0:
            raise ValueError('OffsetHook.recalib_interval must be an int >= '
                             f'0, got {recalib_interval!r}')
        if not 0.0 < recalib_momentum <= 1.0:
            raise ValueError('OffsetHook.recalib_momentum must be in (0, 1], '
                             f'got {recalib_momentum}')
        if offset_init not in OFFSET_INITS:
            raise ValueError(f'OffsetHook.offset_init must be one of '
                             f'{OFFSET_INITS}, got {offset_init!r}')
        if offset_policy not in OFFSET_POLICIES:
            raise ValueError(f'OffsetHook.offset_policy must be one of '
                             f'{OFFSET_POLICIES}, got {offset_policy!r}')
        self.offset_init, self.offset_policy = offset_init, offset_policy
        self.seed = seed
        self.recalib_interval = recalib_interval
        self.recalib_momentum = recalib_momentum
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'OffsetHook.num_batches must be an int >= 1, '
                             f'got {num_batches!r}')
        if not 0.0 <= percentile_j < 50.0:
            raise ValueError('OffsetHook.percentile_j must be in [0, 50), '
                             f'got {percentile_j}')
        self.ratio = ratio
        self.num_batches = num_batches
        self.shift, self.scale = shift, scale
        self.percentile_j = percentile_j
        self.stats: Optional[Dict[str, Dict]] = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def calibration_passes(self, runner=None) -> int:
        """Forward passes :meth:`before_train` runs (progress display):
        the calibration, the re-measurement of ``offset_init='stats'`` and
        the quantization error, ``num_batches`` each."""
        return (4 if self.offset_init == 'stats' else 3) * self.num_batches

    def _private_loader(self, runner):
        loader = runner.train_dataloader
        gen = torch.Generator().manual_seed(self.seed + get_rank())
        return torch.utils.data.DataLoader(
            loader.dataset, batch_size=loader.batch_size, shuffle=True,
            generator=gen, num_workers=0, collate_fn=loader.collate_fn,
            drop_last=False)

    def _batches(self, runner, model) -> List[torch.Tensor]:
        """``num_batches`` training batches from a private loader.

        The train dataloader itself is not iterated: a second iterator over
        its (infinite) sampler would disturb the training sample order, and a
        resumed run, which skips calibration, must see the same order as an
        uninterrupted one. The private loader draws from the same dataset
        and pipeline with a fixed-seed shuffle, in the main process.
        """
        out = []
        for data in self._private_loader(runner):
            data = model.data_preprocessor(data, True)
            out.append(data['inputs'])
            if len(out) >= self.num_batches:
                break
        if not out:
            raise ValueError('OffsetHook: the training dataset yielded no '
                             'batch for calibration')
        return out

    def before_train(self, runner) -> None:
        """Calibrate once (skipped when restored from a checkpoint)."""
        model = self._model(runner)
        if not hasattr(model, 'quant_layers'):
            raise TypeError('OffsetHook needs model.type=ODMEditModel, got '
                            f'{type(model).__name__}')
        model.check_optim_wrapper(runner.optim_wrapper)
        convs = model.quant_layers()
        if all(bool(m.act_quantizer.initialized) for _, m in convs):
            print_log('OffsetHook: quantizer ranges and offsets restored from '
                      'the checkpoint; not re-calibrating.', logger='current')
            if self.stats:
                self._log(self.stats)
            return
        states = (random.getstate(), np.random.get_state(),
                  torch.get_rng_state())
        try:
            batches = self._batches(runner, model)
            stats = calibrate_model(
                model.generator, batches, ratio=self.ratio, shift=self.shift,
                scale=self.scale, percentile_j=self.percentile_j,
                offset_init=self.offset_init, policy=self.offset_policy)
            if get_world_size() > 1:
                self._broadcast(convs, stats)
                # activation sites (a placement's, the attention
                # operands): rank 0's bounds
                for _, site in act_sites(model.generator):
                    for t in site.act_quantizer.parameters():
                        broadcast(t.data, src=0)
            errors = quantization_error(model.generator, batches)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        self.stats = {n: s.to_dict() for n, s in stats.items()}
        self._log(self.stats)
        runner.message_hub.update_info('odm_quant_error', errors)
        n = max(len(errors), 1)
        act = sum(e['act'] for e in errors.values()) / n
        wgt = sum(e['weight'] for e in errors.values()) / n
        print_log('ODM calibration: mean quantization noise-to-signal at step '
                  f'0: activations {act:.4f}, weights {wgt:.4f}',
                  logger='current')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Optional periodic pull of the bounds (``recalib_interval``)."""
        if not self.recalib_interval or data_batch is None or \
                not self.every_n_train_iters(runner, self.recalib_interval):
            return
        model = self._model(runner)
        gen = model.generator
        convs = model.quant_layers()
        was_training = gen.training
        gen.eval()
        try:
            with torch.no_grad():
                inputs = model.data_preprocessor(data_batch, True)['inputs']
                with observe(convs, self.percentile_j, fp32=False) as obs:
                    gen(inputs)
        finally:
            gen.train(was_training)
        for name, conv in convs:
            # quantizers without a re-calibration rule (PAMS) stay as they are
            if conv.act_quantizer.pull_(obs[name].stats(),
                                        self.recalib_momentum) and \
                    get_world_size() > 1:
                for p in conv.act_quantizer.parameters():
                    broadcast(p.data, src=0)

    @staticmethod
    @torch.no_grad()
    def _broadcast(convs, stats: Dict[str, LayerStats]) -> None:
        """Make every rank use rank 0's bounds, offsets and choice."""
        for name, m in convs:
            extra = [m.weight] + ([m.bias] if m.bias is not None else [])
            for t in list(m.act_quantizer.parameters()) + list(
                    m.weight_quantizer.parameters()) + extra + [
                    m.shift, m.scale, m.shift_enabled, m.scale_enabled]:
                broadcast(t.data, src=0)
            m.sync_offset_flags()
            stats[name].shift = bool(m.shift_enabled)
            stats[name].scale = bool(m.scale_enabled)

    @staticmethod
    def _log(stats: Dict[str, Dict]) -> None:
        table = offset_table({n: LayerStats(**s) for n, s in stats.items()})
        print_log('ODM calibration (Eq. 6, top-p offsets):\n' + table,
                  logger='current')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the calibration table in the checkpoint meta."""
        if self.stats is not None:
            checkpoint.setdefault('meta', {})['odm_calibration'] = self.stats

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the calibration table from a resumed checkpoint."""
        stats = checkpoint.get('meta', {}).get('odm_calibration')
        if stats:
            self.stats = stats
