"""CooperativeOptimWrapper: Eq. 5 (cooperative) and Eq. 4 (plain) updates.

Glue (mmengine). Overrides only :meth:`update_params`; everything else
(gradient accumulation, ``clip_grad``, ``state_dict``, param-wise config,
``optim_context``/DDP ``no_sync``) is mmengine's ``OptimWrapper``.

One step with ``loss = LossParts(L_R, L_V)`` (or ``L_M``, the published
version's mismatch regulariser):

1. ``g_V = autograd.grad(L_V, params, retain_graph=True)`` (except for the
   parameters in ``LossParts.exclude``, which learn from L_R alone) -- this does not
   run DDP's gradient hooks, so it is accumulated in the wrapper and
   all-reduced (averaged) across ranks explicitly at the update step;
2. ``backward(L_R)`` as usual (DDP averages it across ranks);
3. at the update step (after ``accumulative_counts`` micro-batches), the gate
   of :func:`odm_mm.gate.merge_gradients` is applied to the *accumulated*
   gradients, then ``clip_grad`` and the optimizer step run.

The conflict ratio (share of elements with ``g_R * g_V < 0``, Fig. 2) is
pushed to mmengine's message hub as ``train/conflict_ratio`` at every update,
with ``train/grad_ratio_v_r`` (``||g_V|| / ||g_R||``) and
``train/gate_weight`` (the weight the gate gave g_V), so the LoggerHook
prints their means over each logging interval; the full
:class:`~odm_mm.gate.GateStats` of the last update is ``last_gate_stats``. A plain tensor
loss makes the wrapper behave exactly like ``OptimWrapper``.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from torch import Tensor

from mmagic.registry import OPTIM_WRAPPERS

from .gate import MODES, GateStats, LossParts, flatten_grads, \
    merge_gradients, unflatten_grads

__all__ = ['CooperativeOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CooperativeOptimWrapper(OptimWrapper):
    """OptimWrapper applying the cooperative gradient gate of Eq. 5.

    Args:
        optimizer: The optimizer (built by mmengine).
        mode: ``'cooperative'`` (Eq. 5), ``'plain'`` (Eq. 4: L_R + L_V),
            ``'similarity'`` (published version: ``g_R + (cos + 1) / 2
            g_M``, one cosine over all parameters) or
            ``'similarity_tensor'`` (one cosine per parameter tensor); see
            :mod:`odm_mm.gate`.
        log_key: Message-hub key (prefixed with ``train/``).
        **kwargs: ``OptimWrapper`` arguments (``accumulative_counts``,
            ``clip_grad``).
    """

    def __init__(self, optimizer, mode: str = 'cooperative',
                 log_key: str = 'conflict_ratio', **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        if mode not in MODES:
            raise ValueError(f'CooperativeOptimWrapper.mode must be one of '
                             f'{MODES}, got {mode!r}')
        self.mode = mode
        self.log_key = log_key
        self._reg_grads: Optional[List[Optional[Tensor]]] = None
        self.last_conflict_ratio: Optional[float] = None
        self.last_gate_stats: Optional[GateStats] = None

    def _params(self) -> List[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g['params']
                if p.requires_grad]

    def update_params(self, loss, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """Backward L_R, accumulate g_V, gate and step when due."""
        if not isinstance(loss, LossParts):
            return super().update_params(loss, step_kwargs, zero_kwargs)
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        recon = self.scale_loss(loss.recon)
        reg = self.scale_loss(loss.reg)
        params = self._params()
        if reg.requires_grad:
            grads = self._reg_grads_of(reg, params, loss.exclude)
            if self._reg_grads is None:
                self._reg_grads = [g.detach().clone() if g is not None
                                   else None for g in grads]
            else:
                self._reg_grads = [
                    a if b is None else (b.detach().clone() if a is None
                                         else a + b)
                    for a, b in zip(self._reg_grads, grads)]
        self.backward(recon)
        if self.should_update():
            self._apply_gate(params)
            self.step(**step_kwargs)
            self.zero_grad(**zero_kwargs)

    @staticmethod
    def _reg_grads_of(reg: Tensor, params: List[Tensor],
                      exclude) -> List[Optional[Tensor]]:
        """The regulariser's gradient per parameter; None for the
        excluded ones (they learn from L_R alone)."""
        skip = {id(p) for p in exclude}
        wanted = [p for p in params if id(p) not in skip]
        grads = iter(torch.autograd.grad(reg, wanted, retain_graph=True,
                                         allow_unused=True)
                     if wanted else ())
        return [None if id(p) in skip else next(grads) for p in params]

    def _apply_gate(self, params: List[Tensor]) -> None:
        reg = self._reg_grads
        self._reg_grads = None
        if reg is None:
            return
        if torch_dist.is_available() and torch_dist.is_initialized() and \
                torch_dist.get_world_size() > 1:
            flat, shapes = flatten_grads(reg)
            torch_dist.all_reduce(flat)
            flat /= torch_dist.get_world_size()
            reg = unflatten_grads(flat, shapes)
        stats = merge_gradients(params, reg, self.mode)
        self.last_gate_stats = stats
        self.last_conflict_ratio = stats.conflict_ratio
        hub = MessageHub.get_current_instance()
        hub.update_scalar(f'train/{self.log_key}', stats.conflict_ratio)
        hub.update_scalar('train/grad_ratio_v_r', stats.grad_ratio)
        hub.update_scalar('train/gate_weight', stats.weight)
