"""Uniform fake quantizers (paper Eq. 1) and the PAMS baseline quantizer.

Torch-only: nothing here imports mmengine/mmcv/mmagic.

Conventions (documented choices where the paper is silent):

* ``Int(.)`` of Eq. 1 is :func:`torch.round` (round half to even). It is the
  rounding of ONNX ``QuantizeLinear``, so the exported integer model
  reproduces the fake-quant model bit for bit.
* The straight-through estimator is an explicit :class:`RoundSTE`
  ``autograd.Function`` (identity gradient for the rounding only); clip and the
  affine map are differentiated by autograd, so gradients reach
  :math:`\\alpha_l, \\alpha_u` exactly as Eq. 1 implies (LSQ-style residual
  term inside the range, 1 beyond the bound that clips).
* Weight ranges are the j-th / (100-j)-th percentiles of the weight tensor,
  recomputed at every forward pass without gradient (Sec. 3.1 "fixed").
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = [
    'RoundSTE', 'round_ste', 'fake_quant', 'percentile', 'percentile_range',
    'ActQuantizer', 'WeightQuantizer', 'PAMSActQuantizer',
    'PAMSWeightQuantizer', 'check_bits'
]

# torch.topk works on any size; torch.quantile refuses inputs above 2**24
# elements. Larger tensors are subsampled with a fixed stride (deterministic).
_MAX_PERCENTILE_ELEMS = 1 << 24


def check_bits(bits: int, name: str = 'bits') -> int:
    """Validate a bit-width (1..8 for quantized tensors, 32 = float)."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f'{name} must be an int in 1..8 (or 32 for FP32), '
                        f'got {bits!r}')
    if not (1 <= bits <= 8 or bits == 32):
        raise ValueError(f'{name} must be in 1..8 (or 32 for FP32), '
                         f'got {bits}')
    return bits


class RoundSTE(torch.autograd.Function):
    """``round`` in the forward pass, identity in the backward pass (STE)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad


def round_ste(x: Tensor) -> Tensor:
    """Round with a straight-through gradient."""
    return RoundSTE.apply(x)


def fake_quant(x: Tensor, lower: Tensor, upper: Tensor, bits: int) -> Tensor:
    """Eq. 1: ``Int((clip(x, a_l, a_u) - a_l) / s) * s + a_l``.

    Args:
        x: Tensor to quantize.
        lower: :math:`\\alpha_l` (scalar tensor, may require grad).
        upper: :math:`\\alpha_u` (scalar tensor, may require grad).
        bits: Bit-width b; ``s = (a_u - a_l) / (2^b - 1)``.

    Returns:
        The de-quantized tensor, on the grid ``a_l + k s``, k in [0, 2^b-1].
    """
    levels = 2**bits - 1
    step = (upper - lower) / levels
    clipped = _clip(x, lower, upper)
    return round_ste((clipped - lower) / step) * step + lower


def _clip(x: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """clip(x, lower, upper); the gradient goes to x on the closed range
    [lower, upper] and to the bound that clips strictly outside it."""
    lower = torch.as_tensor(lower, dtype=x.dtype, device=x.device)
    upper = torch.as_tensor(upper, dtype=x.dtype, device=x.device)
    return torch.where(x < lower, lower, torch.where(x > upper, upper, x))


def percentile(x: Tensor, q: float) -> Tensor:
    """The q-th percentile (0..100) of all elements of ``x`` (k-th value).

    Uses the "nearest rank" definition ``k = ceil(q/100 * n)`` (clamped to
    [1, n]). Tensors with more than 2**24 elements are subsampled with a
    fixed stride, which keeps the result deterministic.
    """
    flat = x.detach().reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError('percentile of an empty tensor')
    if n > _MAX_PERCENTILE_ELEMS:
        stride = math.ceil(n / _MAX_PERCENTILE_ELEMS)
        flat = flat[::stride]
        n = flat.numel()
    k = min(max(int(math.ceil(q / 100.0 * n)), 1), n)
    flat = flat.float()
    # k-th smallest; topk over the shorter tail is much faster than
    # kthvalue on CUDA for the 1st/99th percentile, and returns the same value
    if k <= n - k + 1:
        return torch.topk(flat, k, largest=False, sorted=True).values[-1]
    return torch.topk(flat, n - k + 1, largest=True, sorted=True).values[-1]


def percentile_range(x: Tensor, j: float = 1.0) -> Tuple[Tensor, Tensor]:
    """``(P_j(x), P_{100-j}(x))`` as used to initialise / fix ranges."""
    return percentile(x, j), percentile(x, 100.0 - j)


def _repair_range(lower: Tensor, upper: Tensor,
                  eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Keep ``upper >= lower + eps`` (a collapsed range would give s = 0).

    Pure tensor ops (no host synchronisation on GPU).
    """
    return lower, torch.maximum(upper, lower + eps)


class ActQuantizer(nn.Module):
    """ODM activation quantizer: Eq. 1 with two learnable bounds.

    The bounds are created with their final shape (scalars) here and filled
    from calibration data by :meth:`init_from_range` (1st/99th percentile of
    the feature averaged over calibration batches, Sec. 3.1).

    Args:
        bits: Activation bit-width (1..8).
        eps: Minimum range width; an inverted/collapsed range is repaired in
            the forward pass (see :meth:`repair_`).
    """

    def __init__(self, bits: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.bits = check_bits(bits, 'a_bits')
        self.eps = eps
        self.lower = nn.Parameter(torch.tensor(-1.0))
        self.upper = nn.Parameter(torch.tensor(1.0))
        self.register_buffer('initialized', torch.tensor(False))

    @torch.no_grad()
    def init_from_range(self, lower: float, upper: float) -> None:
        """Set the bounds from calibration statistics."""
        lo, up = float(lower), float(upper)
        if not up - lo >= self.eps:
            mid = (lo + up) / 2
            lo, up = mid - self.eps, mid + self.eps
        self.lower.data.copy_(torch.tensor(lo))
        self.upper.data.copy_(torch.tensor(up))
        self.initialized.fill_(True)

    @torch.no_grad()
    def repair_(self) -> bool:
        """Fix ``upper - lower < eps`` in place; return True if repaired."""
        if float(self.upper - self.lower) >= self.eps:
            return False
        mid = (self.upper + self.lower) / 2
        self.lower.data.copy_(mid - self.eps)
        self.upper.data.copy_(mid + self.eps)
        return True

    def range_width(self) -> Tensor:
        """``alpha_u - alpha_l`` (with gradient; detach to use as a scale)."""
        return self.upper - self.lower

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return fake_quant(x, self.lower, self.upper, self.bits)

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}'


class WeightQuantizer(nn.Module):
    """ODM weight quantizer: Eq. 1 with a fixed percentile range (Sec. 3.1).

    The range ``[P_j(w), P_{100-j}(w)]`` is recomputed from the current
    weights at each call (no gradient flows into it); the weights receive the
    STE gradient (1 inside the range, 0 where they are clipped).

    Args:
        bits: Weight bit-width (1..8).
        percentile_j: j of the j-th / (100-j)-th percentile (paper: 1).
    """

    def __init__(self, bits: int, percentile_j: float = 1.0) -> None:
        super().__init__()
        self.bits = check_bits(bits, 'w_bits')
        if not 0.0 <= percentile_j < 50.0:
            raise ValueError(f'percentile_j must be in [0, 50), got '
                             f'{percentile_j}')
        self.percentile_j = percentile_j

    def weight_range(self, w: Tensor) -> Tuple[Tensor, Tensor]:
        """The current ``(lower, upper)`` of the weight tensor (no grad)."""
        lo, up = percentile_range(w, self.percentile_j)
        return _repair_range(lo.to(w.dtype), up.to(w.dtype))

    def forward(self, w: Tensor) -> Tensor:  # noqa: D102
        lo, up = self.weight_range(w)
        return fake_quant(w, lo, up, self.bits)

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}, percentile_j={self.percentile_j}'


class PAMSActQuantizer(nn.Module):
    """PAMS activation quantizer: symmetric, one learnable max-scale alpha.

    ``Q(x) = Int(clip(x, -a, a) * q / a) * a / q`` with ``q = 2^(b-1) - 1``
    (Li et al., ECCV 2020). PAMS initialises ``a`` by an EMA of the per-sample
    max |x| during its first epoch; here ``a`` is set once from the same
    statistic averaged over the calibration batches (:meth:`init_from_range`
    receives the mean per-sample max |x| as ``upper``), which keeps every
    method on the same calibration data. 1-bit activations fall back to
    ``q = 1`` (sign-like levels {-a, 0, a}).
    """

    def __init__(self, bits: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.bits = check_bits(bits, 'a_bits')
        self.eps = eps
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer('initialized', torch.tensor(False))

    @property
    def qmax(self) -> int:
        """Largest integer code ``2^(b-1) - 1`` (at least 1)."""
        return max(2**(self.bits - 1) - 1, 1)

    @torch.no_grad()
    def init_from_range(self, lower: float, upper: float) -> None:
        """Set alpha to ``max(|lower|, |upper|)``."""
        self.alpha.data.copy_(
            torch.tensor(max(abs(float(lower)), abs(float(upper)), self.eps)))
        self.initialized.fill_(True)

    @torch.no_grad()
    def repair_(self) -> bool:
        """Keep alpha >= eps; return True if it had to be repaired."""
        if float(self.alpha) >= self.eps:
            return False
        self.alpha.data.fill_(max(abs(float(self.alpha)), self.eps))
        return True

    def range_width(self) -> Tensor:
        """``2 alpha``, the width of the symmetric range ``[-a, a]``."""
        return 2 * self.alpha

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        a = self.alpha
        clipped = _clip(x, -a, a)
        return round_ste(clipped * self.qmax / a) * a / self.qmax

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}'


class PAMSWeightQuantizer(nn.Module):
    """PAMS weight quantizer: symmetric with the max |w| of the layer."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, 'w_bits')

    @property
    def qmax(self) -> int:
        """Largest integer code ``2^(b-1) - 1`` (at least 1)."""
        return max(2**(self.bits - 1) - 1, 1)

    def weight_range(self, w: Tensor) -> Tuple[Tensor, Tensor]:
        """``(-max|w|, max|w|)`` (no grad)."""
        m = w.detach().abs().max().clamp_min(1e-8)
        return -m, m

    def forward(self, w: Tensor) -> Tensor:  # noqa: D102
        _, m = self.weight_range(w)
        clipped = _clip(w, -m, m)
        return round_ste(clipped * self.qmax / m) * m / self.qmax

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}'
