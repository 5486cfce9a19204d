"""DAQ baseline: channel-wise distribution-aware quantization (Hong et al.,
WACV 2022), registered as method ``'daq'`` (and ``'daq_clip'``, a strict
b-bit variant, see step 3).

Torch-only. Follows the official code (github.com/Cheeun/DAQ-pytorch,
``src/model/quantize.py``: ``Quantization`` and ``Conv2d_Q``); the choices
and the [0, 1]-pixel conversion are listed in ``docs/baselines.md``.

Activation quantizer (:class:`DAQActQuantizer`), for every image n and input
channel c of the feature ``x`` (shape ``(N, C, H, W)``):

1. run-time statistics over the H x W pixels: ``mu_nc`` and ``sigma_nc``
   (unbiased std); after a ReLU (the "non-negative" branch of the official
   code, taken when ``x.min() == 0``, decided at every call as official)
   over the positive pixels instead, ``mu = sum(x) / (P + 1)``,
   ``sigma^2 = sum(x^2) / (P + 1) - mu^2`` with P the positive count;
2. the channel sigmas of each image are themselves quantized to
   ``sigma_bits`` (official ``--quantize_quantization``, 4 for EDSR):
   mid-rise grid around their mean over channels with step
   ``g(sigma_bits) * std_c(sigma)``;
3. the feature is quantized with step ``s = g(b) * sigma_hat_nc``
   (``g``: :data:`GAUSSIAN_STEPS`, optimal uniform steps of a unit Gaussian):
   signed branch, a mid-rise grid of ``2^b`` levels
   ``mu + (k - 1/2) s``, ``k = 1 - 2^(b-1) .. 2^(b-1)``, i.e. the clip
   range ``mu +- (2^(b-1) - 1/2) g(b) sigma``; non-negative branch, the
   levels ``j s``, ``j >= 0``, *without* an upper clip (as the official
   code; ``clip_nonneg=True`` keeps ``2^b`` levels);
4. de-normalisation is the grid itself (the output is in feature units).

No learnable parameter: nothing to store (storage as PAMS/ODM without
bounds); the statistics cost BitOPs (:meth:`runtime_bitops_terms`). The
gradient is the identity (official ``quantized.detach() + x - x.detach()``),
implemented as an explicit straight-through :class:`PassThroughSTE`.

Weight quantizer (:class:`DAQWeightQuantizer`, official ``Conv2d_Q``): the
same mid-rise grid around 0 with ``s = g(b) * std(W)`` over the whole
tensor, identity gradient.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .base import (ActQuantizerBase, IntegerForm, Quantizer,
                         register_quantizer)

__all__ = ['GAUSSIAN_STEPS', 'PassThroughSTE', 'pass_through',
           'daq_step_multiplier', 'quantize_sigma', 'DAQActQuantizer',
           'DAQClipActQuantizer', 'DAQWeightQuantizer']

#: Optimal uniform quantization step of a unit Gaussian with 2^k levels
#: (Max, 1960), indexed by k; the official code uses ``GAUSSIAN_STEPS[b-1]``
#: for b bits (k = 0: its 1-bit constant 2.0).
GAUSSIAN_STEPS: Dict[int, float] = {
    0: 2.0, 1: 1.596, 2: 0.996, 3: 0.586, 4: 0.335, 5: 0.188, 6: 0.104,
    7: 0.057, 8: 0.031}

_NO_FORM = ('DAQ normalises each input channel with run-time statistics '
            '(per-image channel mean and standard deviation); it has no '
            'static integer form to export (the clip range and step change '
            'with every input).')


class PassThroughSTE(torch.autograd.Function):
    """Returns ``q`` in the forward pass; the gradient goes to ``x``
    unchanged (identity STE, no clipping mask)."""

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor) -> Tensor:  # noqa: D102
        return q.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:  # noqa: D102
        return grad, None


def pass_through(x: Tensor, q: Tensor) -> Tensor:
    """``q`` with the identity gradient to ``x`` (official
    ``q.detach() + x - x.detach()`` without its float rounding)."""
    return PassThroughSTE.apply(x, q.detach())


def daq_step_multiplier(bits: int) -> float:
    """Step of a b-bit DAQ grid in units of sigma: ``GAUSSIAN_STEPS[b-1]``."""
    if bits - 1 not in GAUSSIAN_STEPS:
        raise ValueError(f'DAQ has Gaussian steps for 1..{len(GAUSSIAN_STEPS)}'
                         f' bits, got {bits}')
    return GAUSSIAN_STEPS[bits - 1]


def _midrise_index(t: Tensor, step: Tensor, half: float,
                   clip: bool = True) -> Tuple[Tensor, Tensor]:
    """``k = round(t / s + 1/2)`` (clamped to ``[1 - half, half]``) and the
    validity mask ``s > 0``; invalid entries use s = 1 (result discarded)."""
    valid = step > 0
    safe = torch.where(valid, step, torch.ones_like(step))
    k = torch.round(t / safe + 0.5)
    if clip:
        k = k.clamp(1 - half, half)
    return k, valid


def quantize_sigma(sigma: Tensor, bits: int) -> Tensor:
    """Step 2: the channel sigmas ``(N, C, 1, 1)`` of each image on a mid-rise
    grid of ``2^bits`` levels around their channel mean, step
    ``GAUSSIAN_STEPS[bits-1] * std_c(sigma)``; one channel is kept as is."""
    if bits >= 32 or sigma.shape[1] < 2:
        return sigma
    mean = sigma.mean(1, keepdim=True)
    step = daq_step_multiplier(bits) * sigma.std(1, keepdim=True)
    k, valid = _midrise_index(sigma - mean, step, 2.0**bits / 2)
    safe = torch.where(valid, step, torch.ones_like(step))
    y = torch.where(valid, (k - 0.5) * safe, torch.zeros_like(sigma))
    return y + mean


class DAQActQuantizer(ActQuantizerBase):
    """DAQ activation quantizer (module docstring, steps 1-4).

    Args:
        bits: Activation bit-width (1..8).
        eps: Unused (no learnable range); kept for the common signature.
        sigma_bits: Bit-width of the channel sigmas (official
            ``--quantize_quantization``; 4 in its EDSR-baseline runs; 32 =
            float, 1..9 otherwise).
        clip_nonneg: Clip the non-negative branch to ``2^b`` levels (the
            official code does not; see ``docs/baselines.md``).

    Attributes:
        nonneg: Buffer, the branch of the last call (True: the input's
            minimum was 0, the post-ReLU branch). The branch itself is
            decided at every call as the official code does
            (:meth:`is_nonneg`, ``x.min() == 0`` over the whole tensor), so
            a model tested straight from an FP32 checkpoint, uncalibrated,
            runs the official quantizer; the buffer only tells the cost
            count (:meth:`runtime_bitops_terms`) which branch the layer
            takes. :meth:`note_input` updates it also when quantization is
            switched off (the complexity probe, calibration).
    """

    range_values = 0
    has_integer_form = False

    def __init__(self, bits: int, eps: float = 1e-4, sigma_bits: int = 4,
                 clip_nonneg: bool = False,
                 in_channels: Optional[int] = None) -> None:
        super().__init__(bits, eps, in_channels)
        self.step_mult = daq_step_multiplier(bits)
        if sigma_bits != 32:
            daq_step_multiplier(sigma_bits)
        self.sigma_bits = sigma_bits
        self.clip_nonneg = clip_nonneg
        self.register_buffer('nonneg', torch.tensor(False))
        self._nonneg = False  # python mirror of the buffer
        self._last_width: Optional[Tensor] = None

    # ----------------------------------------------------------- branch
    @staticmethod
    def is_nonneg(x: Tensor) -> bool:
        """The official rule, at every call: ``x.min() == 0`` over the whole
        tensor (post-ReLU inputs; an all-positive or a signed input takes
        the signed branch). One device synchronisation per call."""
        return bool(x.detach().min() == 0)

    @torch.no_grad()
    def note_input(self, x: Tensor) -> None:
        """Record the branch ``x`` takes (:attr:`nonneg`), without
        quantizing; ``QuantConv`` calls it with quantization switched
        off."""
        self.set_nonneg(self.is_nonneg(x))

    @torch.no_grad()
    def init_from_range(self, lower: float, upper: float) -> None:
        """Nothing to calibrate (run-time statistics; the branch is decided
        per call): marks the quantizer initialised."""
        self.initialized.fill_(True)

    @torch.no_grad()
    def set_nonneg(self, flag: bool) -> None:
        """Record the branch of the last call (the cost count reads it)."""
        if flag != self._nonneg:
            self.nonneg.fill_(bool(flag))
        self._nonneg = bool(flag)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._nonneg = bool(self.nonneg)

    def repair_(self) -> bool:
        """Nothing to repair: the range is recomputed at every call."""
        return False

    def range_width(self) -> Tensor:
        """Mean width ``(2^b - 1) s`` of the grids of the last call (NaN
        before the first one); diagnostics only."""
        if self._last_width is None:
            return torch.tensor(math.nan)
        return self._last_width

    # --------------------------------------------------------------- maths
    def statistics(self, x: Tensor, nonneg: Optional[bool] = None
                   ) -> Tuple[Tensor, Tensor]:
        """Step 1: ``(mu, sigma)`` of shape ``(N, C, 1, 1)`` (``nonneg``:
        the branch, default :meth:`is_nonneg` of ``x``)."""
        x = x.detach()
        if nonneg is None:
            nonneg = self.is_nonneg(x)
        if nonneg:
            count = (x > 0).sum((2, 3), keepdim=True).to(x.dtype) + 1
            mu = x.sum((2, 3), keepdim=True) / count
            var = x.pow(2).sum((2, 3), keepdim=True) / count - mu.pow(2)
            return mu, var.clamp_min(0).sqrt()
        corr = 1 if x.shape[2] * x.shape[3] > 1 else 0
        return (x.mean((2, 3), keepdim=True),
                x.std((2, 3), correction=corr, keepdim=True))

    def _grid(self, x: Tensor, nonneg: bool
              ) -> Tuple[Tensor, Tensor, Tensor, float]:
        """``(mu, step, thr, half)`` of step 3 for the input ``x``."""
        mu, sigma = self.statistics(x, nonneg)
        sigma = quantize_sigma(sigma, self.sigma_bits)
        step = self.step_mult * sigma
        half = 2.0**self.bits / 2
        thr = (half - 0.5) * step
        return mu, step, thr, half

    def _code_index(self, x: Tensor, mu: Tensor, step: Tensor, thr: Tensor,
                    half: float, nonneg: bool) -> Tuple[Tensor, Tensor]:
        if nonneg:
            return _midrise_index(x - thr, step, half, self.clip_nonneg)
        return _midrise_index(x - mu, step, half)

    def _from_index(self, k: Tensor, valid: Tensor, mu: Tensor, step: Tensor,
                    thr: Tensor, nonneg: bool) -> Tensor:
        safe = torch.where(valid, step, torch.ones_like(step))
        y = torch.where(valid, (k - 0.5) * safe, torch.zeros_like(k))
        if nonneg:  # levels j s from 0 (a zero step gives 0)
            return y + torch.where(valid, thr, torch.zeros_like(thr))
        return y + mu

    def quantize(self, x: Tensor) -> Tensor:
        """Steps 1-4 without gradient (the fake-quantized values)."""
        x = x.detach()
        nonneg = self.is_nonneg(x)
        self.set_nonneg(nonneg)
        mu, step, thr, half = self._grid(x, nonneg)
        k, valid = self._code_index(x, mu, step, thr, half, nonneg)
        self._last_width = ((2 * half - 1) * step).mean()
        return self._from_index(k, valid, mu, step, thr, nonneg)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return pass_through(x, self.quantize(x))

    # ------------------------------------------------------------- integers
    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """None: raises ``ValueError`` (run-time statistics)."""
        raise ValueError(_NO_FORM)

    def codes(self, t: Tensor) -> Tensor:
        """Run-time codes of ``t``: ``k - (1 - 2^(b-1))``, in
        ``[0, 2^b - 1]`` (non-negative branch: ``>= 0``, unbounded unless
        ``clip_nonneg``)."""
        t = t.detach()
        nonneg = self.is_nonneg(t)
        mu, step, thr, half = self._grid(t, nonneg)
        k, _ = self._code_index(t, mu, step, thr, half, nonneg)
        return k - (1 - half)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:
        """Values of ``codes``; needs ``t`` (its statistics set the grid)."""
        if t is None:
            raise ValueError(_NO_FORM + ' dequantize needs the input tensor.')
        t = t.detach()
        nonneg = self.is_nonneg(t)
        mu, step, thr, half = self._grid(t, nonneg)
        return self._from_index(codes + (1 - half), step > 0, mu, step, thr,
                                nonneg)

    # ---------------------------------------------------------------- cost
    def runtime_bitops_terms(self, input_shape: Tuple[int, ...]
                             ) -> List[Tuple[int, int, int]]:
        """32-bit operations per element of the input (docs/complexity.md),
        for the branch of the last call (:attr:`nonneg`): signed branch 8
        (mean: 1 add; two-pass std: subtract, square, add; normalise:
        subtract mean, divide by the step; de-normalise: multiply by the
        step, add the mean); non-negative branch 6 (positive count,
        sum, sum of squares: 4; divide and multiply by the step: 2).
        Per-channel work (C values per image) is not counted."""
        n = math.prod(int(s) for s in input_shape)
        return [(n * (6 if self._nonneg else 8), 32, 32)]

    def extra_repr(self) -> str:  # noqa: D102
        return (f'bits={self.bits}, sigma_bits={self.sigma_bits}, '
                f'nonneg={self._nonneg}, clip_nonneg={self.clip_nonneg}')


class DAQWeightQuantizer(Quantizer):
    """DAQ weight quantizer (official ``Conv2d_Q``): mid-rise grid of
    ``2^b`` levels ``(k - 1/2) s``, ``s = GAUSSIAN_STEPS[b-1] * std(W)``
    (unbiased, whole tensor), identity gradient.

    Args:
        bits: Weight bit-width (1..8).
        percentile_j: Not used; accepted so that every weight quantizer is
            built the same way.
    """

    range_values = 1

    def __init__(self, bits: int, percentile_j: Optional[float] = None
                 ) -> None:
        super().__init__(bits, 'w_bits')
        self.step_mult = daq_step_multiplier(bits)

    @property
    def half(self) -> float:
        """``2^(b-1)``: codes are ``k - (1 - half)``."""
        return 2.0**self.bits / 2

    def weight_std(self, w: Tensor) -> Tensor:
        """std of all weights (unbiased), no gradient."""
        return w.detach().std()

    def _step(self, w: Tensor) -> Tensor:
        return self.step_mult * self.weight_std(w)

    def _values(self, k: Tensor, step: Tensor) -> Tensor:
        valid = step > 0
        safe = torch.where(valid, step, torch.ones_like(step))
        return torch.where(valid, (k - 0.5) * safe, torch.zeros_like(k))

    def forward(self, w: Tensor) -> Tensor:  # noqa: D102
        step = self._step(w)
        k, _ = _midrise_index(w.detach(), step, self.half)
        return pass_through(w, self._values(k, step))

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        k, _ = _midrise_index(t.detach(), self._step(t), self.half)
        return k - (1 - self.half)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        return self._values(codes + (1 - self.half), self._step(t))

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """``w_q = -(2^(b-1) - 1/2) s + code * s``, codes in [0, 2^b - 1];
        stored: the weight std."""
        std = self.weight_std(t)
        step = self.step_mult * std
        thr = (self.half - 0.5) * step
        return IntegerForm(scale=step, offset=-thr, zero=0,
                           levels=2**self.bits, clip_lo=-thr, clip_hi=thr,
                           params=dict(std=std))


class DAQClipActQuantizer(DAQActQuantizer):
    """DAQ with ``clip_nonneg=True``: post-ReLU inputs keep ``2^b`` levels
    ``j s``, ``j = 0 .. 2^b - 1`` (a strict b-bit variant; method
    ``'daq_clip'``, not in the official code)."""

    def __init__(self, bits: int, eps: float = 1e-4, sigma_bits: int = 4,
                 in_channels: Optional[int] = None) -> None:
        super().__init__(bits, eps, sigma_bits, clip_nonneg=True,
                         in_channels=in_channels)


register_quantizer('daq', DAQActQuantizer, DAQWeightQuantizer)
register_quantizer('daq_clip', DAQClipActQuantizer, DAQWeightQuantizer)
