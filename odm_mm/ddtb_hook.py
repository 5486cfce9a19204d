"""DDTBCalibHook: OffsetHook's calibration plus DDTB's choice of the layers
that get a dynamic gate.

Glue (mmengine). The official DDTB code spends its first epoch on a
full-precision calibration pass that records, for every activation
quantizer, the max and the min of its input at each batch; the layers with
the largest ``var(max) + var(min)`` (the top ``dynamic_ratio``) get the
dynamic gate. Here, before the first training iteration and after the
bounds are calibrated (:class:`~odm_mm.hooks.OffsetHook`, offsets off by
default), the same statistic is measured on ``num_batches`` batches of the
same private fixed-seed loader (:func:`odm_mm.quantizers_ddtb.dynamic_scores`)
and :func:`~odm_mm.quantizers_ddtb.select_dynamic` sets the ``dynamic`` flags.
The flags are buffers, so they are in every checkpoint; a resumed run (all
quantizers initialised) is not re-selected. Under DDP rank 0's choice is
broadcast. The random-number state is restored afterwards.
"""
from __future__ import annotations

import random
from typing import Dict, List

import numpy as np
import torch
from mmengine.dist import broadcast, get_world_size
from mmengine.logging import print_log

from mmagic.registry import HOOKS

from .hooks import OffsetHook
from .quantizers_ddtb import (DDTBActQuantizer, _ddtb_layers, dynamic_scores,
                              select_dynamic)

__all__ = ['DDTBCalibHook']


@HOOKS.register_module()
class DDTBCalibHook(OffsetHook):
    """Calibrate the bounds (OffsetHook) and choose DDTB's dynamic layers.

    Args:
        dynamic_ratio: Share of the DDTB layers that get the dynamic gate,
            ``int(n * ratio)`` layers (official: 0.3 EDSR, 0.5 RDN,
            0.1 SRResNet).
        **kwargs: :class:`~odm_mm.hooks.OffsetHook` arguments; ``shift`` and
            ``scale`` default to False (DDTB has no offsets).
    """

    def __init__(self, dynamic_ratio: float = 0.3, **kwargs) -> None:
        if isinstance(dynamic_ratio, bool) or not isinstance(
                dynamic_ratio, (int, float)) or not 0 <= dynamic_ratio <= 1:
            raise ValueError('DDTBCalibHook.dynamic_ratio must be a number in '
                             f'[0, 1], got {dynamic_ratio!r}')
        kwargs.setdefault('shift', False)
        kwargs.setdefault('scale', False)
        super().__init__(**kwargs)
        self.dynamic_ratio = float(dynamic_ratio)

    def before_train(self, runner) -> None:
        """Calibrate, then choose the dynamic layers (not when resumed)."""
        model = self._model(runner)
        restored = hasattr(model, 'quant_layers') and all(
            bool(m.act_quantizer.initialized) for _, m in model.quant_layers())
        super().before_train(runner)
        layers = [(n, m) for n, m in model.quant_layers()
                  if isinstance(m.act_quantizer, DDTBActQuantizer)]
        if not layers:
            print_log('DDTBCalibHook: no DDTB layer (quant_cfg.method is not '
                      "'ddtb'); nothing to choose.", logger='current')
            return
        if not restored:
            states = (random.getstate(), np.random.get_state(),
                      torch.get_rng_state())
            try:
                batches = self._batches(runner, model)
                scores = dynamic_scores(model.generator, batches)
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
