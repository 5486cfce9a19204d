"""Mismatch regularisation of ODM's published version (ECCV 2024, arXiv
2307.13337 v2): ``L_M = lambda_M sum_i M(X_i)``.

Torch-only. The registered (mmagic) name of the loss is
``MismatchRegLoss`` (see :mod:`odm_mm.registry`).

``M(X) = ||X - q(X; l_a, u_a)||_2``: the distance between a layer's input
feature and its quantized value under the layer's *current, fixed*
activation range ("regularizing the distance between the feature and a
fixed quantization range", abstract of v2). It replaces the seed's variance
regulariser L_V (Eq. 2-3); the cooperative gate that decides when its
gradient is applied lives in :mod:`odm_mm.gate`.

What receives L_M's gradient (the text fixes the range; the rest is our
reading, selectable with ``target``):

* ``'ste'`` (default): ``q`` is the quantizer as training uses it, with
  the straight-through estimator for the rounding and its bounds held fixed
  (detached). ``d(X - q(X))/dX`` is then 0 inside ``[l_a, u_a]`` and 1
  outside, so the value counts rounding and clipping error, while the
  gradient pulls only the clipped elements towards the range: the features
  are moved into the fixed range, the range is not moved onto the features.
* ``'detach'``: ``q(X)`` is a constant, so every element is pulled to its
  nearest grid point (the reading of an earlier independent probe, which
  measured no gain with it).

In both the bounds of the layer's own quantizer get no L_M gradient; the
gradient reaches whatever produced ``X`` (weights, biases and the bounds
and offsets of earlier layers). Parameters a quantizer reports in
``reg_free_parameters()`` (the weight clipping factor) are excluded by the
model (:class:`odm_mm.gate.LossParts`).

Pixel scale: at mmagic's [0, 1] pixels features are 1/255 of their
[0, 255] values and so is ``M`` (a norm), as the L1 loss is; the paper's
objective divided by 255 keeps ``lambda_M`` unchanged, as for lambda_V
(docs/odm_design.md): 1e-5 (EDSR, SRResNet), 1e-6 (RDN). ``M`` is a norm
over the whole (B, C, H, W) tensor, not a mean: its size grows with the
square root of batch x patch area, so a recipe with a different batch or
patch size than the paper's (batch 8) moves L_M's weight relative to the
(mean) L1 loss.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .losses import weighted_layer_sum

__all__ = ['TARGETS', 'mismatch', 'mismatch_regularization',
           'MismatchRegLoss', 'PAPER_LAMBDA_M']

TARGETS = ('ste', 'detach')
#: lambda_M of the published version (unchanged at [0, 1] pixels).
PAPER_LAMBDA_M = {'EDSRNet': 1e-5, 'MSRResNet': 1e-5, 'RDNNet': 1e-6}


def mismatch(x: Tensor, x_q: Tensor, quantizer: nn.Module,
             target: str = 'ste') -> Tensor:
    """``M(x) = ||x - q(x)||_2`` over the fixed range (module docstring).

    Args:
        x: The feature the layer quantizes.
        x_q: ``quantizer(x)`` as the layer computed it (only its value is
            used).
        quantizer: The layer's activation quantizer; its
            ``integer_form()`` gives the fixed clip range.
        target: ``'ste'`` or ``'detach'``.

    Raises:
        ValueError: for an unknown target, or a quantizer whose range
            depends on the input (no static range to regularise towards).
    """
    if target not in TARGETS:
        raise ValueError(f'mismatch target must be one of {TARGETS}, got '
                         f'{target!r}')
    if target == 'detach':
        diff = x - x_q.detach()
    else:
        if not getattr(quantizer, 'has_integer_form', True):
            raise ValueError(
                f'the mismatch regulariser needs a fixed activation range; '
                f'{type(quantizer).__name__} adapts its range to every '
                "input (use target='detach' or a static quantizer)")
        form = quantizer.integer_form()
        lo = form.clip_lo.to(x.dtype)
        hi = form.clip_hi.to(x.dtype)
        clipped = torch.minimum(torch.maximum(x, lo), hi)
        # x - q(x) with the STE: clipping error with gradient, rounding
        # error as a constant
        diff = (x - clipped) + (clipped - x_q).detach()
    return torch.linalg.vector_norm(diff.flatten())


def mismatch_regularization(terms: Sequence[Tensor],
                            weight: float = 1.0) -> Tensor:
    """``weight * sum_i M(X_i)`` of the recorded per-layer terms."""
    return weighted_layer_sum(
        terms, weight, 'mismatch_regularization: no mismatch recorded; are '
        'there quantized layers with a mismatch_target and is the model in '
        'training mode?')


class MismatchRegLoss(nn.Module):
    """L_M of the published ODM: ``lambda_M * sum_i M(X_i)`` over the
    quantized layers (module docstring).

    Args:
        loss_weight: lambda_M (published: 1e-5 EDSR/SRResNet, 1e-6 RDN; the
            same value at [0, 1] pixels).
        target: What the gradient reaches: ``'ste'`` (default) or
            ``'detach'`` (see :func:`mismatch`); applied to the quantized
            layers by the model that owns them.
    """

    def __init__(self, loss_weight: float = 1e-5,
                 target: str = 'ste') -> None:
        super().__init__()
        if not loss_weight >= 0:
            raise ValueError(f'MismatchRegLoss.loss_weight must be >= 0, '
                             f'got {loss_weight}')
        if target not in TARGETS:
            raise ValueError(f'MismatchRegLoss.target must be one of '
                             f'{TARGETS}, got {target!r}')
        self.loss_weight = float(loss_weight)
        self.target = target

    def forward(self, terms: Sequence[Tensor]) -> Tensor:
        """L_M of the recorded per-layer ``M(X_i)``."""
        return mismatch_regularization(terms, self.loss_weight)
