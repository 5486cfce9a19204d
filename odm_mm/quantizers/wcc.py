"""Layer-wise weight clipping correction (WCC) of ODM's published version
(ECCV 2024, arXiv 2307.13337 v2), registered as method ``'odm_wcc'``.

Torch-only. The method pairs ODM's activation quantizer (Eq. 1, two
learnable bounds, unchanged from the seed) with :class:`WCCWeightQuantizer`:

.. math::

    u_w^t = \\gamma_w \\, f(W^t), \\qquad
    Q(W) = \\text{Eq. 1 over } [-u_w^t, u_w^t]

``f(W^t)`` is a statistic of the current weights, recomputed at every
forward pass without gradient (as the seed's percentile range), and
``gamma_w`` one learnable scalar per layer. A learned ``u_w`` would be
fitted to the previous step's weights while quantizing this step's; the
factor separates the per-step statistic from the per-layer correction.

Documented choices (the published text as available, see
docs/odm_eccv2024.md):

* ``f(W) = P_{100-j}(|W|)`` (j = 1: the 99th percentile of the weight
  magnitudes) -- "the 99th percentile instead of max, so outliers do not
  stretch the grid", over a symmetric range, so over ``|W|``.
* The grid is Eq. 1 over ``[-u, u]``: ``2^b`` levels (W2: ``{-u, -u/3, u/3,
  u}``), the seed's quantizer with symmetric bounds, so the integer form,
  export and runtime are those of Eq. 1 (``code * 2u/(2^b-1) - u``).
* ``gamma`` gets the gradient autograd gives through Eq. 1 (the LSQ-style
  bound gradient of :func:`~odm_mm.quantizers.fake_quant`, with the STE for
  the rounding); the weights get the STE gradient (1 inside the range).
  ``gamma`` learns from the reconstruction loss alone
  (:meth:`reg_free_parameters`: the model drops L_M's gradient for it) and
  sits in the range-lr group of the optimizer (``custom_keys``
  ``'weight_quantizer'``).
* ``gamma_init='one'`` (the published initialisation) or ``'mse'``: at
  calibration, the value in :data:`MSE_GRID` minimising
  ``||Q(W) - W||^2`` of the FP32 weight (an option, not in the text).
* Storage: the deployed layer stores ``u`` (``range_values = 1``); the
  complexity count also stores ``gamma`` itself (32 bits per layer, the
  published "+0.06K" on EDSR with the second activation bound). No extra
  BitOPs: ``gamma`` folds into the stored range.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import (ActQuantizer, IntegerForm, Quantizer, eq1_codes,
                         eq1_dequantize, eq1_integer_form, fake_quant,
                         percentile, register_quantizer)

__all__ = ['WCCWeightQuantizer', 'GAMMA_INITS', 'MSE_GRID', 'mse_gamma']

GAMMA_INITS = ('one', 'mse')
#: Candidate clipping factors of ``gamma_init='mse'``.
MSE_GRID = tuple(round(0.30 + 0.01 * i, 2) for i in range(91))  # 0.30..1.20


@torch.no_grad()
def mse_gamma(w: Tensor, f: Tensor, bits: int,
              grid: Tuple[float, ...] = MSE_GRID) -> float:
    """The factor of ``grid`` whose range ``[-g f, g f]`` quantizes ``w``
    with the smallest squared error (the first one on ties)."""
    best, best_err = grid[0], float('inf')
    for g in grid:
        u = f * g
        err = float((fake_quant(w, -u, u, bits) - w).double().pow(2).sum())
        if err < best_err:
            best, best_err = g, err
    return float(best)


class WCCWeightQuantizer(Quantizer):
    """Eq. 1 over ``[-gamma f(W), gamma f(W)]`` with a learnable
    layer-wise clipping factor ``gamma`` (published ODM, "weight clipping
    correction"; module docstring).

    Args:
        bits: Weight bit-width (1..8).
        percentile_j: ``f(W) = P_{100-j}(|W|)`` (published: the 99th
            percentile, j = 1).
        gamma_init: ``'one'`` (published) or ``'mse'`` (set at
            calibration by :meth:`init_from_weight`).
        eps: Smallest range half-width (a non-positive ``gamma`` is held
            at it).
    """

    range_values = 1
    #: The range has a learnable part (read by the benchmark's tables).
    learnable_range = True

    def __init__(self, bits: int, percentile_j: float = 1.0,
                 gamma_init: str = 'one', eps: float = 1e-8) -> None:
        super().__init__(bits, 'w_bits')
        if not 0.0 <= percentile_j < 50.0:
            raise ValueError(f'percentile_j must be in [0, 50), got '
                             f'{percentile_j}')
        if gamma_init not in GAMMA_INITS:
            raise ValueError(f'gamma_init must be one of {GAMMA_INITS}, got '
                             f'{gamma_init!r}')
        self.percentile_j = percentile_j
        self.gamma_init = gamma_init
        self.eps = eps
        self.gamma = nn.Parameter(torch.tensor(1.0))

    def statistic(self, w: Tensor) -> Tensor:
        """``f(W) = P_{100-j}(|W|)`` of the current weights (no grad)."""
        return percentile(w.detach().abs(), 100.0 - self.percentile_j).to(
            w.dtype)

    def half_width(self, w: Tensor) -> Tensor:
        """``u = gamma f(W)`` (gradient into ``gamma``), at least ``eps``."""
        return (self.gamma.to(w.dtype) * self.statistic(w)).clamp_min(
            self.eps)

    @torch.no_grad()
    def init_from_weight(self, w: Tensor) -> None:
        """``gamma_init='mse'``: the MSE-optimal factor of the FP32 weight;
        ``'one'``: 1."""
        g = 1.0 if self.gamma_init == 'one' else mse_gamma(
            w.detach(), self.statistic(w), self.bits)
        self.gamma.data.fill_(g)

    def reg_free_parameters(self) -> List[nn.Parameter]:
        """``gamma`` learns from ``L_R`` alone (published text)."""
        return [self.gamma]

    def summary(self) -> Dict[str, float]:
        """``{'gamma': value}``."""
        return {'gamma': float(self.gamma.detach())}

    def forward(self, w: Tensor) -> Tensor:  # noqa: D102
        u = self.half_width(w)
        return fake_quant(w, -u, u, self.bits)

    def _range(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        u = self.half_width(t.detach()).detach()
        return -u, u

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """Eq. 1 over ``[-u, u]``; a deployed model stores ``u``."""
        lo, hi = self._range(t)
        return eq1_integer_form(lo, hi, self.bits, dict(half_width=hi))

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        t = t.detach()
        return eq1_codes(t, *self._range(t), self.bits)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        return eq1_dequantize(codes, *self._range(t), self.bits)

    def extra_repr(self) -> str:  # noqa: D102
        return (f'bits={self.bits}, percentile_j={self.percentile_j}, '
                f'gamma_init={self.gamma_init}')


register_quantizer('odm_wcc', ActQuantizer, WCCWeightQuantizer)
