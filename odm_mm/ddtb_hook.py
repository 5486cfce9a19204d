"""DDTBCalibHook: OffsetHook's calibration plus DDTB's choice of the layers
that get a dynamic gate.

Glue (mmengine). The official DDTB code spends its first epoch on a
full-precision calibration pass that records, for every activation
quantizer, the max and the min of its input at each batch; the layers with
the largest ``var(max) + var(min)`` (the top ``dynamic_ratio``) get the
dynamic gate. Here, before the first training iteration and after the
bounds are calibrated (:class:`~odm_mm.hooks.OffsetHook`, offsets off by
default), the same statistic is measured on ``dynamic_batches`` batches
(default: one epoch of the training set, as official) of the same private
fixed-seed loader (:func:`odm_mm.quantizers.ddtb.dynamic_scores`) and
:func:`~odm_mm.quantizers.ddtb.select_dynamic` sets the ``dynamic`` flags.
The flags are buffers, so they are in every checkpoint; a resumed run (all
quantizers initialised) is not re-selected. Under DDP rank 0's choice is
broadcast. The random-number state is restored afterwards.

The official first stage (``first_stage``: a share of the training
iterations, official 4 of its 60 epochs after the calibration epoch) sets
``first_stage`` on every DDTB quantizer for those iterations: the dynamic
layers compute their gate but quantize with the static bounds, and the model
adds ``MSE(logits, 0)`` (``loss_quant_aux``).
"""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import broadcast, get_world_size
from mmengine.logging import print_log

from mmagic.registry import HOOKS

from .hooks import OffsetHook
from .quantizers.ddtb import _ddtb_layers, dynamic_scores, select_dynamic

__all__ = ['DDTBCalibHook']


@HOOKS.register_module()
class DDTBCalibHook(OffsetHook):
    """Calibrate the bounds (OffsetHook) and choose DDTB's dynamic layers.

    Args:
        dynamic_ratio: Share of the DDTB layers that get the dynamic gate,
            ``int(n * ratio)`` layers (official: 0.3 EDSR, 0.5 RDN,
            0.1 SRResNet).
        dynamic_batches: Batches measured for the choice; None (default):
            one epoch of the training set (the official calibration epoch).
        first_stage: Share of the training iterations in the official first
            stage (module docstring), in [0, 1); 0 (default) skips it.
            Official: 4 of 60 epochs, ``4 / 60``.
        **kwargs: :class:`~odm_mm.hooks.OffsetHook` arguments; ``shift`` and
            ``scale`` default to False (DDTB has no offsets).
    """

    def __init__(self, dynamic_ratio: float = 0.3,
                 dynamic_batches: Optional[int] = None,
                 first_stage: float = 0.0, **kwargs) -> None:
        if isinstance(dynamic_ratio, bool) or not isinstance(
                dynamic_ratio, (int, float)) or not 0 <= dynamic_ratio <= 1:
            raise ValueError('DDTBCalibHook.dynamic_ratio must be a number in '
                             f'[0, 1], got {dynamic_ratio!r}')
        if dynamic_batches is not None and (
                isinstance(dynamic_batches, bool)
                or not isinstance(dynamic_batches, int)
                or dynamic_batches < 1):
            raise ValueError('DDTBCalibHook.dynamic_batches must be None (one '
                             f'epoch) or an int >= 1, got {dynamic_batches!r}')
        if isinstance(first_stage, bool) or not isinstance(
                first_stage, (int, float)) or not 0 <= first_stage < 1:
            raise ValueError('DDTBCalibHook.first_stage must be a share of '
                             f'the iterations in [0, 1), got {first_stage!r}')
        kwargs.setdefault('shift', False)
        kwargs.setdefault('scale', False)
        super().__init__(**kwargs)
        self.dynamic_ratio = float(dynamic_ratio)
        self.dynamic_batches = dynamic_batches
        self.first_stage = float(first_stage)

    def _dynamic_count(self, runner) -> int:
        """Batches of the dynamic-layer choice: ``dynamic_batches``, at
        most (and by default) one epoch of the private loader."""
        epoch = len(self._private_loader(runner))
        return epoch if self.dynamic_batches is None else \
            min(self.dynamic_batches, epoch)

    def _iter_batches(self, runner, model, n: int) -> Iterator:
        """The first ``n`` preprocessed batches of the private loader, one
        at a time (an epoch need not fit in memory)."""
        for i, data in enumerate(self._private_loader(runner)):
            if i >= n:
                return
            yield model.data_preprocessor(data, True)['inputs']

    def calibration_passes(self, runner=None) -> int:
        """OffsetHook's passes plus the choice's batches (each a
        preprocessor and a generator call)."""
        extra = 2 * self._dynamic_count(runner) if runner is not None else 0
        return super().calibration_passes(runner) + extra

    def first_stage_iters(self, runner) -> int:
        """Iterations of the first stage: ``int(first_stage x max_iters)``."""
        return int(self.first_stage * runner.max_iters)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Switch the first stage on for its iterations, off afterwards."""
        stage = runner.iter < self.first_stage_iters(runner)
        for _, m in _ddtb_layers(self._model(runner).generator):
            m.act_quantizer.first_stage = stage

    def before_train(self, runner) -> None:
        """Calibrate, then choose the dynamic layers (not when resumed)."""
        model = self._model(runner)
        restored = hasattr(model, 'quant_layers') and all(
            bool(m.act_quantizer.initialized)
            for _, m in _ddtb_layers(model.generator))
        super().before_train(runner)
        # QuantConvs and placement sites (odm_mm.placement) alike
        layers = _ddtb_layers(model.generator)
        if not layers:
            print_log('DDTBCalibHook: no DDTB layer (quant_cfg.method is not '
                      "'ddtb'); nothing to choose.", logger='current')
            return
        if not restored:
            states = (random.getstate(), np.random.get_state(),
                      torch.get_rng_state())
            try:
                n = self._dynamic_count(runner)
                scores = dynamic_scores(model.generator,
                                        self._iter_batches(runner, model, n))
                print_log(f'DDTBCalibHook: dynamic layers chosen over {n} '
                          'batches', logger='current')
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.set_rng_state(states[2])
            select_dynamic(model.generator, scores, self.dynamic_ratio)
            if get_world_size() > 1:
                for _, m in layers:
                    q = m.act_quantizer
                    broadcast(q.dynamic, src=0)
                    q.set_dynamic(bool(q.dynamic))
            self._log_choice(layers, scores)
        else:
            self._log_choice(layers, None)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Under DDP, then give every rank rank 0's gate statistics.

        A dynamic gate's BatchNorm updates its running statistics from its
        rank's own batch in the training forward. DDP (``broadcast_buffers``)
        copies rank 0's buffers only at the start of the next training
        forward, and validation (``val_step``) bypasses that, so between
        steps the ranks' quantizer states differed. Broadcasting every DDTB
        quantizer's buffers here (before CheckpointHook) keeps them
        identical; training is unchanged (a training-mode BatchNorm
        normalises with the batch's statistics, not the running ones).
        """
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if get_world_size() > 1:
            for _, m in _ddtb_layers(self._model(runner).generator):
                for buf in m.act_quantizer.buffers():
                    broadcast(buf, src=0)

    def nominal_choice(self, generator: torch.nn.Module) -> str:
        """Without calibration data: make ``int(n * dynamic_ratio)`` DDTB
        layers dynamic, the first ones in module order, so that a cost
        count of the config alone has the right number of gates (exact for
        networks whose quantized layers all have the same width, e.g. EDSR;
        the trained model's choice comes from data). Returns a note."""
        layers = _ddtb_layers(generator)
        k = int(len(layers) * self.dynamic_ratio)
        for i, (_, m) in enumerate(layers):
            m.act_quantizer.set_dynamic(i < k)
        return (f'DDTB: {k} of {len(layers)} layers counted as dynamic '
                f'(nominal: the first {k}; training chooses them from data, '
                'pass the checkpoint for the trained choice)')

    @staticmethod
    def _log_choice(layers: List, scores: Dict[str, float] = None) -> None:
        rows = [f'{"layer":<40} {"var(max)+var(min)":>18} dynamic']
        for name, m in layers:
            sc = '-' if scores is None else f'{scores[name]:.6g}'
            rows.append(f'{name:<40} {sc:>18} '
                        f'{"yes" if m.act_quantizer._dynamic else "-"}')
        n = sum(m.act_quantizer._dynamic for _, m in layers)
        rows.append(f'{n} of {len(layers)} DDTB layers dynamic')
        print_log('DDTB dynamic gates:\n' + '\n'.join(rows),
                  logger='current')
