"""Uniform fake quantizers (paper Eq. 1) and the PAMS baseline quantizer.

Torch-only: nothing here imports mmengine/mmcv/mmagic.

The quantizer interface. Every quantizer of a
:class:`~odm_mm.layers.QuantConv` is a :class:`Quantizer` and owns its
behaviour, so callers never branch on a method name:

* ``forward`` (fake quantization with its STE);
* ``codes(t)`` / ``dequantize(codes, t)``: its integer form, with
  ``dequantize(codes(t), t) == forward(t)`` bit for bit on any CPU (the
  same element-wise float ops, each rounded once, on the same range; a
  range computed from ``t`` is recomputed by the same kernel), and
  ``integer_form(t)`` (:class:`IntegerForm`: ``t_q = offset + (code - zero)
  * scale``, the clip range, the named float parameters a runtime stores);
* ``range_values``: how many float values store its range (storage figure);
* ``aux_loss()``: an optional extra training loss (DDTB's first stage);
* optional learnable weight state: ``init_from_weight(w)`` (calibration),
  ``reg_free_parameters()`` (learned from the reconstruction loss alone)
  and ``summary()`` (scalars the recorder logs), e.g. the clipping
  factor of :mod:`odm_mm.quantizers.wcc`;
* optional cost hooks for methods with extra state or run-time work (DAQ,
  DDTB): ``param_storage_bits(name)`` (bits per value of each of its
  parameters in a deployed model, 0 = not stored; default 32) and
  ``runtime_bitops_terms(input_shape)`` (``(ops, bits_a, bits_b)`` of the
  work it does per image besides rounding, e.g. run-time statistics;
  default none) and ``extra_range_values()`` (weight ranges of its own
  sub-quantizers, e.g. DDTB's gate), asked by
  :mod:`odm_mm.analysis.complexity`;
* ``has_integer_form``: False where the range depends on the input at run
  time (``integer_form`` then raises one ValueError saying why, so export
  refuses the model with that message);
* activation quantizers (:class:`ActQuantizerBase`) also
  ``init_from_stats`` (calibration statistics), ``range_width``,
  ``repair_`` and ``pull_`` (optional periodic re-calibration).

A method is a pair ``(activation class, weight class)`` in
:data:`QUANTIZERS` (``'odm'``, ``'pams'``; ``'odm_wcc'``, ``'daq'``,
``'ddtb'`` register themselves from their files); :func:`register_quantizer` adds
one (docs/quantizers.md shows a toy example).

Conventions (documented choices where the paper is silent):

* ``Int(.)`` of Eq. 1 is :func:`torch.round` (round half to even). It is the
  rounding of ONNX ``QuantizeLinear``, so the exported model rounds like
  the fake-quant model: given the same float32 input, its codes are the
  fake-quant levels (embedded in 8-bit codes in the integer ONNX form,
  docs/deploy.md); its float outputs agree up to the float kernels'
  rounding and, in the integer form, its 8-bit requantised outputs.
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
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

__all__ = [
    'RoundSTE', 'round_ste', 'fake_quant', 'percentile', 'percentile_range',
    'IntegerForm', 'Quantizer', 'ActQuantizerBase', 'ActQuantizer',
    'WeightQuantizer', 'PAMSActQuantizer', 'PAMSWeightQuantizer',
    'check_bits', 'QUANTIZERS', 'register_quantizer', 'quantizer_classes',
    'weight_options', 'act_options',
    'eq1_integer_form', 'eq1_codes', 'eq1_dequantize'
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


@dataclass
class IntegerForm:
    """The integer form of a quantizer at its current range.

    ``t_q = offset + (code - zero) * scale`` with integer ``code`` in
    ``[0, levels - 1]`` for an input clipped to ``[clip_lo, clip_hi]``.
    ``params`` are the named float tensors a deployed model stores to
    rebuild the range (their count is ``range_values``).
    """
    scale: Tensor
    offset: Tensor
    zero: int
    levels: int
    clip_lo: Tensor
    clip_hi: Tensor
    params: Dict[str, Tensor]

    @property
    def code_bits(self) -> int:
        """Bits needed to store a code (``ceil(log2(levels))``)."""
        return max(1, math.ceil(math.log2(self.levels)))

    @property
    def signed(self) -> bool:
        """True when ``code - zero`` is symmetric around 0 (zero > 0)."""
        return self.zero > 0


class Quantizer(nn.Module):
    """Base of every activation and weight quantizer (see module docstring).

    Args:
        bits: Bit-width (1..8).
        name: What the bit-width is called in error messages.
    """

    #: Float values that store the range in a deployed model.
    range_values: int = 2
    #: False where the range depends on the input at run time (DAQ, DDTB's
    #: dynamic layers): :meth:`integer_form` raises a ValueError saying why.
    has_integer_form: bool = True

    def __init__(self, bits: int, name: str = 'bits') -> None:
        super().__init__()
        self.bits = check_bits(bits, name)

    def param_storage_bits(self, name: str) -> int:
        """Bits per value that a deployed model stores for this quantizer's
        parameter ``name`` (relative to the quantizer, e.g. ``'lower'``);
        0 = not stored (unused). Default: 32 (float)."""
        return 32

    def extra_range_values(self) -> int:
        """Float range values of weight quantizers this quantizer owns
        and uses (e.g. the max|w| of a DDTB gate's two matrices), stored
        with the weight ranges (``count_weight_ranges``). Default 0."""
        return 0

    def runtime_bitops_terms(self, input_shape: Tuple[int, ...]
                             ) -> List[Tuple[int, int, int]]:
        """Work this quantizer does at run time besides the rounding every
        quantizer does, for one image whose quantized tensor has shape
        ``input_shape`` ``(C, H, W)``: ``[(ops, bits_a, bits_b), ...]``
        (counted as ``ops x bits_a x bits_b`` BitOPs). Default: none (a
        static range is folded into the integer conv)."""
        return []

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """The :class:`IntegerForm` (weights: of the tensor ``t``)."""
        raise NotImplementedError

    def init_from_weight(self, w: Tensor) -> None:
        """Calibrate a weight quantizer's learnable state on its layer's
        FP32 weight (called once by the calibration, before training).
        Default: nothing to calibrate."""

    def reg_free_parameters(self) -> List[nn.Parameter]:
        """Parameters that learn from the reconstruction loss alone: a
        regulariser's gradient (L_V, L_M) is not applied to them. Default:
        none."""
        return []

    def summary(self) -> Dict[str, float]:
        """Learned scalars worth logging (e.g. a clipping factor);
        default none."""
        return {}

    def aux_loss(self) -> Optional[Tensor]:
        """An extra training loss of this quantizer from its last forward
        call (e.g. DDTB's first-stage gate loss), consumed by the model
        (``loss_quant_aux``: the mean over the quantizers that return one);
        default None."""
        return None

    def codes(self, t: Tensor) -> Tensor:
        """Integer codes in ``[0, levels - 1]`` (float dtype) of ``t``."""
        raise NotImplementedError

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:
        """Values of ``codes``, computed exactly as :meth:`forward` does."""
        raise NotImplementedError

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}'


class ActQuantizerBase(Quantizer):
    """Base of activation quantizers: learnable range, calibrated once.

    Args:
        bits: Activation bit-width (1..8).
        eps: Minimum range width (a collapsed range is repaired).
        in_channels: Channels of the quantized feature (QuantConv passes
            its ``in_channels``; methods with per-channel parts use it).
    """

    def __init__(self, bits: int, eps: float = 1e-4,
                 in_channels: Optional[int] = None) -> None:
        super().__init__(bits, 'a_bits')
        self.eps = eps
        self.in_channels = in_channels
        self.register_buffer('initialized', torch.tensor(False))

    def init_from_range(self, lower: float, upper: float) -> None:
        """Set the range from ``(lower, upper)`` of the feature."""
        raise NotImplementedError

    def init_from_stats(self, stats: Any) -> None:
        """Set the range from calibration statistics (``LayerStats``:
        ``lower``/``upper`` percentiles, ``absmax``); default: the
        percentiles."""
        self.init_from_range(stats.lower, stats.upper)

    def range_width(self) -> Tensor:
        """Width of the clip range (with gradient; detach to use as a
        scale)."""
        raise NotImplementedError

    def repair_(self) -> bool:
        """Fix a collapsed range in place; True if it had to."""
        raise NotImplementedError

    @torch.no_grad()
    def pull_(self, stats: Any, momentum: float) -> bool:
        """Move the range towards fresh statistics (periodic
        re-calibration, ``OffsetHook(recalib_interval)``). Default: not
        supported, nothing changes; returns whether it moved."""
        return False

    def note_input(self, x: Tensor) -> None:
        """Called with the input instead of :meth:`forward` while
        quantization is switched off (calibration, the complexity probe):
        lets a quantizer record what its cost depends on (DAQ: its branch).
        Default: nothing."""

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        return self._codes(t.detach())

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        return self._dequantize(codes)


class ActQuantizer(ActQuantizerBase):
    """ODM activation quantizer: Eq. 1 with two learnable bounds.

    The bounds are created with their final shape (scalars) here and filled
    from calibration data by :meth:`init_from_range` (1st/99th percentile of
    the feature averaged over calibration batches, Sec. 3.1).

    Args:
        bits: Activation bit-width (1..8).
        eps: Minimum range width; an inverted/collapsed range is repaired in
            the forward pass (see :meth:`repair_`).
    """

    def __init__(self, bits: int, eps: float = 1e-4,
                 in_channels: Optional[int] = None) -> None:
        super().__init__(bits, eps, in_channels)
        self.lower = nn.Parameter(torch.tensor(-1.0))
        self.upper = nn.Parameter(torch.tensor(1.0))

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

    @torch.no_grad()
    def pull_(self, stats: Any, momentum: float) -> bool:
        """``bound <- (1 - m) bound + m P_j`` for both bounds."""
        m = momentum
        self.lower.data.copy_((1 - m) * self.lower + m * stats.lower)
        self.upper.data.copy_((1 - m) * self.upper + m * stats.upper)
        return True

    def range_width(self) -> Tensor:
        """``alpha_u - alpha_l`` (with gradient; detach to use as a scale)."""
        return self.upper - self.lower

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return fake_quant(x, self.lower, self.upper, self.bits)

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """Eq. 1: ``x_q = alpha_l + code * s``, codes in [0, 2^b - 1]."""
        lo, hi = self.lower.detach(), self.upper.detach()
        return eq1_integer_form(lo, hi, self.bits, dict(lower=lo, upper=hi))

    def _codes(self, x: Tensor) -> Tensor:
        return eq1_codes(x, self.lower.detach(), self.upper.detach(),
                          self.bits)

    def _dequantize(self, codes: Tensor) -> Tensor:
        return eq1_dequantize(codes, self.lower.detach(),
                               self.upper.detach(), self.bits)


class WeightQuantizer(Quantizer):
    """ODM weight quantizer: Eq. 1 with a fixed percentile range (Sec. 3.1).

    The range ``[P_j(w), P_{100-j}(w)]`` is recomputed from the current
    weights at each call (no gradient flows into it); the weights receive the
    STE gradient (1 inside the range, 0 where they are clipped).

    Args:
        bits: Weight bit-width (1..8).
        percentile_j: j of the j-th / (100-j)-th percentile (paper: 1).
    """

    def __init__(self, bits: int, percentile_j: float = 1.0) -> None:
        super().__init__(bits, 'w_bits')
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

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """Eq. 1 over the percentile range of the weight tensor ``t``."""
        lo, hi = self.weight_range(t.detach())
        return eq1_integer_form(lo, hi, self.bits, dict(lower=lo, upper=hi))

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        t = t.detach()
        return eq1_codes(t, *self.weight_range(t), self.bits)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        return eq1_dequantize(codes, *self.weight_range(t.detach()),
                               self.bits)

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}, percentile_j={self.percentile_j}'


class PAMSActQuantizer(ActQuantizerBase):
    """PAMS activation quantizer: symmetric, one learnable max-scale alpha.

    ``Q(x) = Int(clip(x, -a, a) * q / a) * a / q`` with ``q = 2^(b-1) - 1``
    (Li et al., ECCV 2020). PAMS initialises ``a`` by an EMA of the per-sample
    max |x| during its first epoch; here ``a`` is set once from the same
    statistic averaged over the calibration batches (:meth:`init_from_range`
    receives the mean per-sample max |x| as ``upper``), which keeps every
    method on the same calibration data. 1-bit activations fall back to
    ``q = 1`` (sign-like levels {-a, 0, a}).
    """

    range_values = 1

    def __init__(self, bits: int, eps: float = 1e-4,
                 in_channels: Optional[int] = None) -> None:
        super().__init__(bits, eps, in_channels)
        self.alpha = nn.Parameter(torch.tensor(1.0))

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

    def init_from_stats(self, stats: Any) -> None:
        """``alpha`` = the mean per-sample max abs of the features."""
        self.init_from_range(-stats.absmax, stats.absmax)

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

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """``x_q = (code - q) * alpha / q``, codes in [0, 2q]."""
        a = self.alpha.detach()
        return _sym_form(a, self.qmax, dict(alpha=a))

    def _codes(self, x: Tensor) -> Tensor:
        return _sym_codes(x, self.alpha.detach(), self.qmax)

    def _dequantize(self, codes: Tensor) -> Tensor:
        return _sym_dequantize(codes, self.alpha.detach(), self.qmax)


class PAMSWeightQuantizer(Quantizer):
    """PAMS weight quantizer: symmetric with the max |w| of the layer.

    Args:
        bits: Weight bit-width (1..8).
        percentile_j: Not used (the range is max |w|); accepted so that
            every weight quantizer is built the same way.
    """

    range_values = 1

    def __init__(self, bits: int, percentile_j: Optional[float] = None
                 ) -> None:
        super().__init__(bits, 'w_bits')

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

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """``w_q = (code - q) * max|w| / q``, codes in [0, 2q]."""
        _, m = self.weight_range(t)
        return _sym_form(m, self.qmax, dict(absmax=m))

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        _, m = self.weight_range(t)
        return _sym_codes(t.detach(), m, self.qmax)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        _, m = self.weight_range(t)
        return _sym_dequantize(codes, m, self.qmax)


# ------------------------------------------- integer forms (shared maths)
# Eq. 1 over [lo, hi] (public: a new method built on Eq. 1 reuses them) and
# the symmetric PAMS grid.
def eq1_integer_form(lo: Tensor, hi: Tensor, bits: int,
              params: Dict[str, Tensor]) -> IntegerForm:
    step = (hi - lo) / (2**bits - 1)
    return IntegerForm(scale=step, offset=lo, zero=0, levels=2**bits,
                       clip_lo=lo, clip_hi=hi, params=params)


def eq1_codes(t: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    step = (hi - lo) / (2**bits - 1)
    return torch.round((torch.minimum(torch.maximum(t, lo), hi) - lo) / step)


def eq1_dequantize(codes: Tensor, lo: Tensor, hi: Tensor,
                    bits: int) -> Tensor:
    return codes * ((hi - lo) / (2**bits - 1)) + lo


def _sym_form(a: Tensor, q: int, params: Dict[str, Tensor]) -> IntegerForm:
    return IntegerForm(scale=a / q, offset=torch.zeros_like(a), zero=q,
                       levels=2 * q + 1, clip_lo=-a, clip_hi=a,
                       params=params)


def _sym_codes(t: Tensor, a: Tensor, q: int) -> Tensor:
    return torch.round(torch.minimum(torch.maximum(t, -a), a) * q / a) + q


def _sym_dequantize(codes: Tensor, a: Tensor, q: int) -> Tensor:
    return (codes - q) * a / q


# --------------------------------------------------------- the method table
#: ``method name -> (activation quantizer class, weight quantizer class)``.
QUANTIZERS: Dict[str, Tuple[Type[ActQuantizerBase], Type[Quantizer]]] = {
    'odm': (ActQuantizer, WeightQuantizer),
    'pams': (PAMSActQuantizer, PAMSWeightQuantizer),
}


def register_quantizer(name: str, act_cls: Type[ActQuantizerBase],
                       weight_cls: Type[Quantizer]) -> None:
    """Add a quantization method (``QuantConv(method=name)``).

    Args:
        name: The method name (``quant_cfg.method``).
        act_cls: Activation quantizer, built as
            ``act_cls(a_bits, in_channels=C)``.
        weight_cls: Weight quantizer, built as
            ``weight_cls(w_bits, percentile_j=...)``.
    """
    if not (isinstance(act_cls, type) and issubclass(act_cls,
                                                     ActQuantizerBase)):
        raise TypeError(f'{name}: the activation quantizer must subclass '
                        'ActQuantizerBase')
    if not (isinstance(weight_cls, type) and issubclass(weight_cls,
                                                        Quantizer)):
        raise TypeError(f'{name}: the weight quantizer must subclass '
                        'Quantizer')
    QUANTIZERS[name] = (act_cls, weight_cls)


def weight_options(name: str) -> List[str]:
    """The options (``weight_cfg`` keys) the weight quantizer of method
    ``name`` takes besides ``bits`` and ``percentile_j``."""
    import inspect
    params = inspect.signature(quantizer_classes(name)[1]).parameters
    return sorted(set(params) - {'bits', 'percentile_j'})


def act_options(name: str) -> List[str]:
    """The options (``act_cfg`` keys) the activation quantizer of method
    ``name`` takes besides ``bits``, ``eps`` and ``in_channels`` (e.g.
    DAQ's ``sigma_bits``)."""
    import inspect
    params = inspect.signature(quantizer_classes(name)[0]).parameters
    return sorted(set(params) - {'bits', 'eps', 'in_channels'})


def quantizer_classes(name: str
                      ) -> Tuple[Type[ActQuantizerBase], Type[Quantizer]]:
    """The ``(activation, weight)`` classes of a method, or one clear
    ValueError naming the registered methods."""
    if name not in QUANTIZERS:
        raise ValueError(f'method must be one of {sorted(QUANTIZERS)}, got '
                         f'{name!r}')
    return QUANTIZERS[name]
