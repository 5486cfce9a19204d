"""Integer reference inference of quantized Linears and window attentions.

The token counterparts of :class:`~odm_mm.deploy.runtime.IntegerConv2d`,
independent of the training code in the same way (they import neither
:mod:`odm_mm.layers*` nor :mod:`odm_mm.quantizers` nor
:mod:`odm_mm.layers.attention`; the integer formulas are the runtime's
:data:`~odm_mm.deploy.records.FORMS`).

:class:`IntegerLinear`, with ``x_q = a_l + s_a A`` and ``w_q = w_l + s_w C``
over the ``K = in_features`` channel axis (last)::

    y = s_a s_w (A C^T) + s_a w_l sum_k(A) + a_l s_w sum_k(C) + a_l w_l K
        + bias

:class:`IntegerWindowAttention`: both matmuls on integer codes. With
``q = q_l + s_q Q``, ``k = k_l + s_k K`` (head_dim ``d``) and the softmax
output ``p = p_l + s_p P``, ``v = v_l + s_v V`` (``N`` tokens per window)::

    logits = s_q s_k (Q K^T) + s_q k_l sum_d(Q) + q_l s_k sum_d(K)
             + q_l k_l d
    out    = s_p s_v (P V) + s_p v_l sum_N(P) + p_l s_v sum_N(V) + p_l v_l N

The relative-position bias, the shift mask, softmax and the reshapes are the
FP32 module's. Integer products are summed exactly (float64 GEMM on
integer-valued tensors, every partial sum below ``2^53``; or ``int64`` with
``accumulate='int64'``).
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .records import ACCUMULATE, LayerRecord, as_tensor, form_of

__all__ = ['IntegerLinear', 'IntegerWindowAttention']


def _int_matmul(a: Tensor, b: Tensor, accumulate: str) -> Tensor:
    """Exact ``a @ b`` of integer-valued tensors (float64 out)."""
    if accumulate == 'int64':
        return (a.round().long() @ b.round().long()).double()
    return a.double() @ b.double()


class _ActCodes(nn.Module):
    """One activation record: codes ``A`` and ``(s, lower)`` of a tensor."""

    def __init__(self, method: str, rec: Mapping[str, Any],
                 tensors: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.form = form_of(method)
        self.bits, self.zero = rec['bits'], int(rec['zero_point'])
        bounds = [tensors[rec[k]] for k in self.form.act_params]
        self.register_buffer('bounds', as_tensor(np.stack(bounds).reshape(-1)),
                             False)

    def forward(self, x: Tensor) -> Tuple[Tensor, float, float]:  # noqa
        return self.form.act_codes(self.bounds, self.bits, self.zero, x)


class IntegerLinear(LayerRecord, nn.Module):
    """A quantized Linear computed on integer codes (one manifest record).

    Args:
        record: ``manifest["quant_layers"][name]`` of kind ``'linear'``.
        tensors: The artifact's tensors.
        accumulate: ``'float64'`` (exact, fast) or ``'int64'``.
    """

    def __init__(self, record: Mapping[str, Any],
                 tensors: Mapping[str, np.ndarray],
                 accumulate: str = 'float64') -> None:
        super().__init__()
        self.load_record(record, tensors, accumulate)
        geo = record['linear']
        self.in_features = geo['in_features']
        self.out_features = geo['out_features']

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        for kind in self.offsets:
            vec = self.offset_vector(kind, x.dtype)
            x = x + vec if kind == 'shift' else x * vec
        codes, s_a, a_l = self.act_codes(x)
        s_w, w_l = self.weight_affine(x.dtype)
        y = _affine_matmul(codes, s_a, a_l, self.w_codes.double().t(), s_w,
                           w_l, self.accumulate)
        if self.bias is not None:
            y = y + self.bias.double()
        return y.to(x.dtype)

    def extra_repr(self) -> str:  # noqa: D102
        return (f'{self.in_features}, {self.out_features}, '
                f'method={self.method}, w_bits={self.w_bits}, '
                f'a_bits={self.a_bits}, offsets={self.offsets}, '
                f'accumulate={self.accumulate}')


def _affine_matmul(a, s_a: float, l_a: float, b, s_b: float, l_b: float,
                   accumulate: str) -> Tensor:
    """``(l_a + s_a A) @ (l_b + s_b B)`` from integer codes (float64)."""
    k = a.shape[-1]
    out = (s_a * s_b) * _int_matmul(a, b, accumulate)
    if l_a != 0.0 or l_b != 0.0:
        out = out + (s_a * l_b) * a.double().sum(-1, keepdim=True) \
            + (l_a * s_b) * b.double().sum(-2, keepdim=True) \
            + (l_a * l_b) * k
    return out


class IntegerWindowAttention(nn.Module):
    """Swin window attention with both matmuls on integer codes.

    Shares the FP32 module's ``qkv``/``proj`` (replaced by
    :class:`IntegerLinear` by their own records), relative-position bias
    table and index, dropouts and softmax.

    Args:
        record: ``manifest["quant_attentions"][name]``.
        tensors: The artifact's tensors.
        fp32: The FP32 window attention it replaces.
        accumulate: ``'float64'`` or ``'int64'``.
    """

    def __init__(self, record: Mapping[str, Any],
                 tensors: Mapping[str, np.ndarray], fp32: nn.Module,
                 accumulate: str = 'float64') -> None:
        super().__init__()
        if accumulate not in ACCUMULATE:
            raise ValueError(f'accumulate must be one of {ACCUMULATE}')
        self.accumulate = accumulate
        self.num_heads, self.scale = record['num_heads'], record['scale']
        self.window_size = tuple(record['window_size'])
        self.dim = record['dim']
        if (fp32.num_heads, tuple(fp32.window_size), fp32.dim) != (
                self.num_heads, self.window_size, self.dim):
            raise ValueError(
                f'the network has a window attention with {fp32.num_heads} '
                f'heads, window {tuple(fp32.window_size)}, dim {fp32.dim}; '
                f'the artifact {self.num_heads}, {self.window_size}, '
                f'{self.dim}')
        self.qkv, self.proj = fp32.qkv, fp32.proj
        self.relative_position_bias_table = fp32.relative_position_bias_table
        self.register_buffer('relative_position_index',
                             fp32.relative_position_index)
        self.attn_drop, self.proj_drop = fp32.attn_drop, fp32.proj_drop
        self.softmax = fp32.softmax
        for key in ('q', 'k', 'v', 'attn'):
            setattr(self, f'{key}_codes',
                    _ActCodes(record['method'], record[key], tensors))

    def forward(self, x: Tensor, mask=None) -> Tensor:  # noqa: D102
        b_, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        qc, s_q, l_q = self.q_codes(q)
        kc, s_k, l_k = self.k_codes(k)
        vc, s_v, l_v = self.v_codes(v)
        attn = _affine_matmul(qc, s_q, l_q, kc.transpose(-2, -1), s_k, l_k,
                              self.accumulate).to(x.dtype)
        wh, ww = self.window_size
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(wh * ww, wh * ww, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, h, n, n) + \
                mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, h, n, n)
        attn = self.attn_drop(self.softmax(attn))
        pc, s_p, l_p = self.attn_codes(attn)
        out = _affine_matmul(pc, s_p, l_p, vc, s_v, l_v,
                             self.accumulate).to(x.dtype)
        out = out.transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:  # noqa: D102
        return (f'dim={self.dim}, window_size={self.window_size}, '
                f'num_heads={self.num_heads}, accumulate={self.accumulate}')
