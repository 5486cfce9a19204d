"""Low-bit grids embedded exactly in 8-bit ONNX codes (integer QDQ form).

A quantizer's :class:`~odm_mm.quantizers.IntegerForm` has ``L`` levels
``v(k) = l0 + k s`` (``k`` in ``[0, L - 1]``, ``l0 = offset - zero * s``:
``a_l`` for ODM's Eq. 1, ``-alpha`` for PAMS). Standard integer engines
(onnxruntime's ``QLinearConv``, TensorRT, NPU toolchains) compute
``(u - Z) * S`` with an 8-bit code ``u`` and an *integer* zero point ``Z``.
Such a grid holds ``v(k)`` exactly when ``l0 / S`` is an integer, which a
learned float bound almost never is.

Embedding: ``S = s / m`` for an integer ``m >= 1`` and ``u = u0 + m k``, so
that every level of the low-bit grid is a code (2 bits: up to ``m = 85``,
codes 0, 85, 170, 255). ``Z`` is then the integer nearest to
``u0 - l0 / S``: the grid is *nudged* by the residual ``r = v(k) - (u - Z)
S`` (the same for every level, ``|r| <= S / 2``; TensorFlow's FakeQuant
nudges its ``[min, max]`` so that 0 is a code in the same way).
:func:`act_grid` picks ``m`` (and ``u0``, ``Z``) minimising ``|r|``; a grid
whose ``l0 / s`` is an integer (PAMS, the deploy profile's 8-bit layers)
has ``r = 0`` at ``m = 1``. How the exporter removes ``r``: a constant
added to a conv's input adds ``r * sum(w)`` to every output that sees no
padding, so it is folded exactly into the bias there; only the outputs of
the image border (where padded taps, which hold a true 0, do not carry
``r``) keep ``r`` times the weights of their padded taps
(:mod:`odm_mm.deploy.onnx_integer`).

Weights (:func:`weight_grid`): int8 codes with zero point 0 and one scale
per output channel (what onnxruntime's fast symmetric kernels want),
``d = round(l0_w m_c / s_w) + j m_c`` for weight code ``j``, ``m_c`` chosen
per channel within ``-d_max - 1 <= d <= d_max``; the residual ``delta_c`` (the weight
grid's nudge) multiplies the input summed over the receptive field and is
not folded (measured in docs/deploy.md). ``d_max = 63`` by default (7-bit
weight codes): x86 CPUs without VNNI multiply u8 x s8 pairs into a
saturating int16 (``vpmaddubsw``), which 255 * 64 * 2 <= 2^15 never
exceeds; ``d_max = 127`` uses the full int8 range on VNNI/ARM machines.

Torch-only (numpy for the arithmetic, in float64 on the float32 values the
model uses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ['ActGrid', 'WeightGrid', 'act_grid', 'weight_grid',
           'weight_grid_u8', 'U8_MAX',
           'D_MAX_SAFE', 'D_MAX_FULL']

U8_MAX = 255
#: int8 weight code bound safe on every x86 CPU (see module docstring).
D_MAX_SAFE = 63
#: The full int8 range (VNNI / AMX / ARM dot-product kernels).
D_MAX_FULL = 127


@dataclass(frozen=True)
class ActGrid:
    """An activation grid ``v(k) = l0 + k s`` held in uint8 codes.

    Attributes:
        step: ``s``, the quantizer's step.
        level0: ``l0``, the real value of level 0.
        levels: ``L``.
        m: Codes per step (``S = s / m``).
        u0: Code of level 0; level ``k`` is code ``u0 + m k``.
        zero_point: ``Z`` (uint8); ``(u - Z) * S`` is the represented value.
        residual: ``r = v(k) - (u0 + m k - Z) S`` for every ``k``.
    """

    step: float
    level0: float
    levels: int
    m: int
    u0: int
    zero_point: int
    residual: float

    @property
    def scale(self) -> float:
        """``S = s / m`` (float32 as stored in the ONNX graph)."""
        return float(np.float32(self.step / self.m))

    @property
    def max_code(self) -> int:
        """Code of the top level, ``u0 + m (L - 1)``."""
        return self.u0 + self.m * (self.levels - 1)

    def code(self, k: np.ndarray) -> np.ndarray:
        """uint8 code of level(s) ``k``."""
        return (self.u0 + self.m * np.asarray(k)).astype(np.uint8)


def _placement(level0: float, step: float, levels: int,
               m: int) -> Optional[tuple]:
    """``(u0, Z, r)`` of ``m`` codes per step, or None if it does not fit."""
    e = level0 * m / step  # l0 / S
    ze = int(np.rint(e))
    u0 = max(0, ze)
    zero = u0 - ze
    if u0 + m * (levels - 1) > U8_MAX or not 0 <= zero <= U8_MAX:
        return None
    return u0, zero, level0 - (u0 - zero) * (step / m)


def act_grid(step: float, level0: float, levels: int,
             max_m: Optional[int] = None) -> ActGrid:
    """The uint8 embedding of an activation grid with the smallest nudge.

    Args:
        step: ``s`` (> 0).
        level0: ``l0``.
        levels: ``L`` (2..256).
        max_m: Largest ``m`` allowed (1 for codes that an integer conv's
            output requantisation produces: it rounds at ``s``).

    Returns:
        The :class:`ActGrid`; ties in ``|r|`` go to the smaller ``m``.

    Raises:
        ValueError: if no ``m`` fits (the grid spans more than 255 codes
            together with 0, e.g. ``l0`` is more than 255 steps from 0).
    """
    step, level0 = float(step), float(level0)
    if not step > 0 or not 2 <= levels <= U8_MAX + 1:
        raise ValueError(f'bad activation grid: step {step}, {levels} '
                         'levels')
    top = U8_MAX // (levels - 1)
    top = min(top, max_m) if max_m else top
    best = None
    for m in range(1, top + 1):
        place = _placement(level0, step, levels, m)
        if place is not None and (best is None or
                                  abs(place[2]) < abs(best[1][2]) - 1e-15):
            best = (m, place)
    if best is None:
        raise ValueError(
            f'the activation grid [{level0:.6g}, '
            f'{level0 + step * (levels - 1):.6g}] ({levels} levels) and 0 '
            'do not fit in 256 uint8 codes at its step: an integer zero '
            'point cannot represent it')
    m, (u0, zero, r) = best
    return ActGrid(step=step, level0=level0, levels=levels, m=m, u0=u0,
                   zero_point=zero, residual=r)


@dataclass(frozen=True)
class WeightGrid:
    """8-bit weight codes with one scale per output channel.

    Attributes:
        codes: int8 (zero point 0) or uint8 array of the weight's shape.
        scales: float32 ``(C_out,)``; ``(codes - zero_point) * scales`` is
            the represented weight.
        m: int ``(C_out,)`` codes per weight step.
        residual: float64 ``(C_out,)``: represented minus exact weight
            (the same for every weight of a channel).
        zero_point: 0 for int8 codes; the common zero point of uint8 codes
            (used when the grid does not fit int8 around 0, e.g. an
            asymmetric 8-bit grid).
    """

    codes: np.ndarray
    scales: np.ndarray
    m: np.ndarray
    residual: np.ndarray
    zero_point: int = 0


def weight_grid(codes: np.ndarray, step: float, level0: float,
                d_max: int = D_MAX_SAFE) -> WeightGrid:
    """Embed weight codes ``j`` (``w = l0 + j s``) in int8, per channel.

    Args:
        codes: Integer codes ``j >= 0`` of shape ``(C_out, ...)``.
        step: ``s_w``.
        level0: ``l0_w``.
        d_max: Codes ``d`` lie in ``[-d_max - 1, d_max]`` (63: safe on
            every x86 CPU; 127: the full int8 range).

    Raises:
        ValueError: if a channel's codes do not fit even at ``m = 1``.
    """
    return _int8_grid(codes, step, level0, d_max)


def weight_grid_u8(codes: np.ndarray, step: float,
                   level0: float) -> WeightGrid:
    """uint8 codes ``j`` with the common zero point ``round(-l0 / s)``
    (``m = 1``; residual up to ``s / 2``): for grids of more than 128
    levels that int8 cannot hold around 0 (an asymmetric 8-bit grid).

    Raises:
        ValueError: if 0 is more than 255 steps outside the grid.
    """
    codes = np.asarray(codes, dtype=np.int64)
    zero = int(np.rint(-float(level0) / float(step)))
    if not 0 <= zero <= U8_MAX or codes.max() > U8_MAX:
        raise ValueError(f'weight grid {level0:.6g} + j * {step:.6g} with '
                         'zero outside 256 uint8 codes')
    out = codes.shape[0]
    r = -zero * float(step) - float(level0)
    return WeightGrid(codes=codes.astype(np.uint8),
                      scales=np.full(out, step, np.float32),
                      m=np.ones(out, np.int64), residual=np.full(out, r),
                      zero_point=zero)


def _int8_grid(codes: np.ndarray, step: float, level0: float,
               d_max: int) -> WeightGrid:
    codes = np.asarray(codes, dtype=np.int64)
    step, level0 = float(step), float(level0)
    out = codes.shape[0]
    flat = codes.reshape(out, -1)
    d = np.empty_like(flat)
    scales = np.empty(out, np.float32)
    ms = np.empty(out, np.int64)
    res = np.empty(out, np.float64)
    for c in range(out):
        lo, hi = int(flat[c].min()), int(flat[c].max())
        best = None
        for m in range(1, 2 * d_max + 2):
            base = int(np.rint(level0 * m / step))
            if base + lo * m < -d_max - 1 or base + hi * m > d_max:
                if m * (hi - lo) > 2 * d_max + 1:
                    break
                continue
            r = base * step / m - level0
            if best is None or abs(r) < abs(best[2]) - 1e-15:
                best = (m, base, r)
        if best is None:
            raise ValueError(
                f'output channel {c}: weight codes {lo}..{hi} on the grid '
                f'{level0:.6g} + j * {step:.6g} do not fit in int8 codes '
                f'{-d_max - 1}..{d_max}')
        m, base, r = best
        d[c] = base + flat[c] * m
        scales[c], ms[c], res[c] = step / m, m, r
    return WeightGrid(codes=d.reshape(codes.shape).astype(np.int8),
                      scales=scales, m=ms, residual=res)
