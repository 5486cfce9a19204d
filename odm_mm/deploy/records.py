"""What every integer layer of the reference runtime reads from its record.

The integer formulas of each quantization method (:data:`FORMS`, written
here again on purpose: the runtime is the independent check of the exporter
and of :mod:`odm_mm.quantizers`) and :class:`LayerRecord`, the mixin through
which :class:`~odm_mm.deploy.runtime.IntegerConv2d` and
:class:`~odm_mm.deploy.runtime_tokens.IntegerLinear` load their manifest
records. Like the rest of the runtime it imports no training module.
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ['ACCUMULATE', 'FORMS', 'LayerRecord', 'form_of', 'as_tensor']

#: Backends of the exact integer sums (see :class:`IntegerConv2d`).
ACCUMULATE = ('float64', 'int64')


class _Eq1Form:
    """``'odm'`` (paper Eq. 1): ``x_q = lower + code * s``, ``s = (upper -
    lower) / (2^b - 1)``, codes in [0, 2^b - 1]; weights likewise over their
    stored ``[lower, upper]``."""

    act_params = ('lower', 'upper')

    @staticmethod
    def act_codes(bounds: Tensor, bits: int, zero: int,
                  x: Tensor) -> Tuple[Tensor, float, float]:
        lo, hi = bounds.to(x.dtype)
        step = (hi - lo) / (2**bits - 1)
        codes = torch.round(
            (torch.minimum(torch.maximum(x, lo), hi) - lo) / step)
        return codes, float(step), float(lo)

    @staticmethod
    def weight_affine(rng: Tensor, bits: int,
                      zero: int) -> Tuple[float, float]:
        return float((rng[1] - rng[0]) / (2**bits - 1)), float(rng[0])


class _SymmetricForm:
    """``'pams'``: ``x_q = c * alpha / q`` with signed ``c`` in [-q, q], ``q``
    the record's zero point (stored codes are ``c + q``); weights ``c *
    max|w| / q``."""

    act_params = ('alpha',)

    @staticmethod
    def act_codes(bounds: Tensor, bits: int, zero: int,
                  x: Tensor) -> Tuple[Tensor, float, float]:
        alpha = bounds[0].to(x.dtype)
        codes = torch.round(
            torch.minimum(torch.maximum(x, -alpha), alpha) * zero / alpha)
        return codes, float(alpha / zero), 0.0

    @staticmethod
    def weight_affine(rng: Tensor, bits: int,
                      zero: int) -> Tuple[float, float]:
        return float(rng[0] / zero), 0.0


class _Eq1SymmetricWeightForm(_Eq1Form):
    """``'odm_wcc'`` (published ODM): activations as ``'odm'``; weights
    Eq. 1 over ``[-u, u]`` with the stored half-width ``u`` (the clipping
    factor is folded into it): ``w_q = -u + code * 2u / (2^b - 1)``."""

    @staticmethod
    def weight_affine(rng: Tensor, bits: int,
                      zero: int) -> Tuple[float, float]:
        u = rng[0]
        return float((u - (-u)) / (2**bits - 1)), float(-u)


#: The integer formulas of each quantization method, written here again on
#: purpose: the runtime is the independent check of the exporter and of
#: :mod:`odm_mm.quantizers` (a new method adds its form here).
FORMS = {'odm': _Eq1Form, 'pams': _SymmetricForm,
         'odm_wcc': _Eq1SymmetricWeightForm}


def form_of(method: str):
    """The integer formulas of ``method``, or one error naming those this
    runtime implements."""
    if method not in FORMS:
        raise ValueError(
            f'the artifact uses quantization method {method!r}, which this '
            f'runtime does not implement ({sorted(FORMS)})')
    return FORMS[method]


def as_tensor(a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


class LayerRecord:
    """What an integer layer with weights reads from its manifest record
    (conv or Linear): method and form, weight codes and range, activation
    bounds, bias and the Eq. 7/8 offsets (shift first)."""

    def load_record(self, record: Mapping[str, Any],
                    tensors: Mapping[str, np.ndarray],
                    accumulate: str) -> None:
        """Register the record's tensors as buffers."""
        if accumulate not in ACCUMULATE:
            raise ValueError(f'accumulate must be one of {ACCUMULATE}')
        self.accumulate = accumulate
        self.method = record['method']
        self.form = form_of(self.method)
        wrec, arec = record['weight'], record['act']
        self.w_bits, self.a_bits = wrec['bits'], arec['bits']
        codes = tensors[wrec['tensor']] - int(wrec['zero_point'])
        taps = int(np.prod(codes.shape[1:]))
        if taps >= 2**37:
            raise ValueError(f'{taps} taps per output exceed exact float64 '
                             'accumulation (2^37)')
        self.register_buffer('w_codes', as_tensor(codes, torch.int64), False)
        self.register_buffer('w_range', as_tensor(tensors[wrec['range']]), False)
        self.w_zero = int(wrec['zero_point'])
        self.a_zero = int(arec['zero_point'])
        bounds = [tensors[arec[k]] for k in self.form.act_params]
        self.register_buffer('a_bounds', as_tensor(np.stack(bounds).reshape(-1)),
                             False)
        bias = tensors[record['bias']] if record['bias'] else None
        self.register_buffer('bias', None if bias is None else as_tensor(bias),
                             False)
        self.offsets = []
        for kind in ('shift', 'scale'):  # Eq. 7 first, then Eq. 8
            rec = record.get(kind)
            if rec is None:
                continue
            self.offsets.append(kind)
            if rec['bits'] >= 32:
                self.register_buffer(f'{kind}_values',
                                     as_tensor(tensors[rec['tensor']]), False)
                continue
            self.register_buffer(f'{kind}_codes',
                                 as_tensor(tensors[rec['tensor']], torch.int64),
                                 False)
            self.register_buffer(f'{kind}_range', as_tensor(tensors[rec['range']]),
                                 False)
            setattr(self, f'{kind}_levels', 2**rec['bits'] - 1)

    def offset_vector(self, kind: str, dtype: torch.dtype) -> Tensor:
        """The de-quantized offset vector, computed as the training code."""
        if hasattr(self, f'{kind}_values'):
            return getattr(self, f'{kind}_values').to(dtype)
        lo, hi = getattr(self, f'{kind}_range').to(dtype)
        codes = getattr(self, f'{kind}_codes').to(dtype)
        if not bool(hi > lo):
            return torch.full_like(codes, float(lo))
        step = (hi - lo) / getattr(self, f'{kind}_levels')
        return codes * step + lo

    def act_codes(self, x: Tensor) -> Tuple[Tensor, float, float]:
        """Integer activation codes ``A`` and ``(s_a, a_l)`` in x's dtype."""
        return self.form.act_codes(self.a_bounds, self.a_bits, self.a_zero,
                                   x)

    def weight_affine(self, dtype: torch.dtype) -> Tuple[float, float]:
        """``(s_w, w_l)`` of the weight grid in ``dtype`` arithmetic."""
        return self.form.weight_affine(self.w_range.to(dtype), self.w_bits,
                                       self.w_zero)
