"""NumericalGuardHook: repair collapsed quantizer ranges, stop on NaN/Inf.

Glue (mmengine). Low-bit QAT moves learnable quantizer bounds with a large
learning rate (``lr_mult`` 100 in ``configs/odm/_base_/odm.py``); a bound pair
can cross (``alpha_u - alpha_l < eps``, step size <= 0) or a PAMS scale can
reach zero, and a diverging run produces NaN/Inf losses that mmengine would
happily log and checkpoint. After every training iteration this hook:

1. checks the iteration's log variables (``outputs``: ``loss``, ``loss_pix``,
   ``loss_skt``, ``loss_var`` ...) and every parameter of the trained model
   for NaN/Inf. If one is found it raises :class:`FloatingPointError` naming
   the iteration (1-based, as the log prints it), the offending values and
   the last good checkpoint. It runs before ``CheckpointHook``
   (priority ``ABOVE_NORMAL`` vs ``VERY_LOW``), so the broken state is never
   written and ``last_checkpoint`` keeps pointing at the last good file.
   Under DDP the decision is all-reduced, so every rank stops at the same
   iteration instead of waiting in the next collective;
2. repairs inverted/collapsed activation ranges in place
   (:meth:`odm_mm.quantizers.ActQuantizer.repair_`, PAMS ``alpha < eps``:
   :meth:`~odm_mm.quantizers.PAMSActQuantizer.repair_`) and logs a warning
   naming the layer (for each layer at its 1st, 2nd, 4th, 8th ... repair, so
   a range that keeps collapsing cannot flood the log). Parameters are
   identical on every DDP rank, so every rank repairs the same layers.

Before the first iteration it also checks that the (loaded, calibrated)
model holds only finite values, which catches a broken FP32 checkpoint.
"""
from __future__ import annotations

import logging
import math
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmagic.registry import HOOKS

from .layers.act_site import act_sites

__all__ = ['NumericalGuardHook', 'nonfinite_log_vars', 'nonfinite_params']

_MAX_LISTED = 5  # offending names shown in one message


def _as_float(value) -> Optional[float]:
    """A python float from a scalar tensor / number, None for other types."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None if bool(torch.isfinite(value).all()) else math.nan
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def nonfinite_log_vars(outputs) -> List[Tuple[str, float]]:
    """``[(name, value)]`` of the non-finite entries of a log-vars dict.

    Args:
        outputs: What ``model.train_step`` returned (a dict of scalar
            tensors or numbers); anything else yields ``[]``.
    """
    if not isinstance(outputs, dict):
        return []
    bad = []
    for key, value in outputs.items():
        val = _as_float(value)
        if val is not None and not math.isfinite(val):
            bad.append((str(key), val))
    return bad


@torch.no_grad()
def nonfinite_params(model: torch.nn.Module,
                     trainable_only: bool = False) -> List[str]:
    """Names of the parameters of ``model`` that hold NaN or Inf.

    One reduction over all parameters (a single host sync) in the common,
    all-finite case; names are only collected when something is wrong.

    Args:
        model: The model.
        trainable_only: Skip parameters with ``requires_grad=False`` (the
            frozen teacher cannot change during training).
    """
    named = [(n, p) for n, p in model.named_parameters()
             if p.is_floating_point() and (p.requires_grad or
                                           not trainable_only)]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(p).all() for _, p in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok]


def _listing(items: List[str]) -> str:
    more = len(items) - _MAX_LISTED
    return ', '.join(items[:_MAX_LISTED]) + (f' (+{more} more)'
                                              if more > 0 else '')


@HOOKS.register_module()
class NumericalGuardHook(Hook):
    """Stop on non-finite losses/weights, repair collapsed quantizer ranges.

    Args:
        check_loss: Stop when a log variable of the iteration is NaN/Inf.
        check_params: Stop when a parameter of the trained model is NaN/Inf
            (also checked once before the first iteration).
        repair_ranges: Repair ``alpha_u - alpha_l < eps`` (ODM) and
            ``alpha < eps`` (PAMS) after every iteration, with a warning.
    """

    priority = 'ABOVE_NORMAL'  # after OffsetHook, before logger/checkpoint

    def __init__(self, check_loss: bool = True, check_params: bool = True,
                 repair_ranges: bool = True) -> None:
        for key, val in (('check_loss', check_loss),
                         ('check_params', check_params),
                         ('repair_ranges', repair_ranges)):
            if not isinstance(val, bool):
                raise TypeError(f'NumericalGuardHook.{key} must be True or '
                                f'False, got {val!r}')
        self.check_loss = check_loss
        self.check_params = check_params
        self.repair_ranges = repair_ranges
        self.repairs: Dict[str, int] = {}

    # ------------------------------------------------------------- helpers
    @staticmethod
    def _model(runner) -> torch.nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    @staticmethod
    def _last_checkpoint(runner) -> Optional[str]:
        """Last checkpoint of this run, else the ``last_checkpoint`` file."""
        last = runner.message_hub.get_info('last_ckpt')
        if last:
            return str(last)
        marker = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(marker):
            with open(marker) as f:
                return f.read().strip() or None
        return None

    @staticmethod
    def _any_rank(flags: List[bool]) -> List[bool]:
        """Element-wise OR of ``flags`` over the ranks (no-op without DDP)."""
        if get_world_size() <= 1:
            return flags
        t = torch.tensor([float(f) for f in flags])
        all_reduce(t, op='max')
        return [bool(v) for v in t.tolist()]

    def _stop(self, runner, where: str, problem: str) -> None:
        last = self._last_checkpoint(runner)
        resume = (f'The last good checkpoint is {last}: resume from it with '
                  f'`tools/train.py CONFIG --resume {last}`'
                  if last else 'No checkpoint was saved before this point: '
                  'restart training')
        raise FloatingPointError(
            f'NumericalGuardHook: {problem} {where}; training stopped and '
            f'this state was NOT saved. {resume} with a lower learning rate '
            '(optim_wrapper.optimizer.lr) or gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=...)), or check the '
            'FP32 checkpoint and data. See docs/troubleshooting.md.')

    def _check(self, runner, model, where: str, outputs=None,
               trainable_only: bool = True) -> None:
        bad_loss = nonfinite_log_vars(outputs) if self.check_loss else []
        bad_params = nonfinite_params(model, trainable_only) \
            if self.check_params else []
        any_loss, any_params = self._any_rank(
            [bool(bad_loss), bool(bad_params)])
        rank = f' on rank {get_rank()}' if get_world_size() > 1 else ''
        if any_loss:
            values = ', '.join(f'{k}={v}' for k, v in bad_loss)
            self._stop(runner, where, f'non-finite loss ({values}){rank}'
                       if bad_loss else 'non-finite loss on another rank')
        if any_params:
            self._stop(runner, where,
                       f'non-finite parameters ({_listing(bad_params)}){rank}'
                       if bad_params else
                       'non-finite parameters on another rank')

    @staticmethod
    def _range_text(quant) -> str:
        if hasattr(quant, 'alpha'):
            return f'alpha={float(quant.alpha.detach()):.6g}'
        return (f'[{float(quant.lower.detach()):.6g}, '
                f'{float(quant.upper.detach()):.6g}]')

    @torch.no_grad()
    def _repair(self, model, iteration: int) -> None:
        layers = model.quant_layers() if hasattr(model, 'quant_layers') \
            else []
        if hasattr(model, 'generator'):  # activation sites (placements,
            layers = layers + act_sites(model.generator)  # attention)
        # quantizers with a learnable range (alpha or lower/upper); one that
        # recomputes its range at every call has nothing to repair
        quants = [(name, conv.act_quantizer) for name, conv in layers
                  if hasattr(getattr(conv, 'act_quantizer', None), 'repair_')
                  and (hasattr(conv.act_quantizer, 'alpha') or
                       hasattr(conv.act_quantizer, 'upper'))]
        if not quants:
            return
        # one host sync for all layers; repair_ re-checks each flagged one
        widths = torch.stack([
            (q.alpha if hasattr(q, 'alpha') else q.upper - q.lower).detach()
            .float().reshape(()) for _, q in quants]).cpu()
        eps = torch.tensor([float(q.eps) for _, q in quants])
        for (name, quant), bad in zip(quants, (widths < eps).tolist()):
            if not bad:
                continue
            before = self._range_text(quant)
            if not quant.repair_():
                continue
            count = self.repairs.get(name, 0) + 1
            self.repairs[name] = count
            if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th ... repair
                print_log(
                    f'NumericalGuardHook: iteration {iteration}: the '
                    f'activation range of layer {name!r} collapsed or '
                    f'inverted ({before}, eps={quant.eps:g}); repaired to '
                    f'{self._range_text(quant)} (repair #{count} of this '
                    'layer). Frequent repairs mean the range learning rate '
                    'is too high (odm_range_lr_mult).',
                    logger='current', level=logging.WARNING)

    # --------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        """Check the loaded (and calibrated) model before iteration 1."""
        model = self._model(runner)
        self._check(runner, model,
                    f'before training (iteration {runner.iter + 1})',
                    trainable_only=False)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Check loss and weights of this iteration, then repair ranges."""
        model = self._model(runner)
        iteration = runner.iter + 1  # mmengine counts after this hook
        self._check(runner, model, f'at iteration {iteration}', outputs)
        if self.repair_ranges:
            self._repair(model, iteration)
