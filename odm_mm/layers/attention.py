"""Quantized window attention: both attention matmuls take quantized operands.

Torch-only. Swin/SwinIR window attention (mmagic ``WindowAttention``, and
the identical modules of BasicSR and the original SwinIR code) computes two
activation-activation matmuls inline::

    A = softmax((q * scale) @ k^T + B_rel [+ mask])      # matmul 1
    y = proj((A @ v) reshaped to tokens)                  # matmul 2

:class:`QuantWindowAttention` is the explicit quantized counterpart that
:func:`odm_mm.swap.swap_convs` installs in place of such a module. It holds
the very same ``qkv``/``proj`` layers (swapped to :class:`~odm_mm.
layers.linear.QuantLinear` by the same patterns), relative-position bias
table and index, so the state-dict keys of the FP32 network are unchanged,
and adds four activation quantization points (:class:`QuantAct`):

========  ==================================  ===================
point     operand                             channel axis
========  ==================================  ===================
``q``     ``q * scale`` of matmul 1           heads x head_dim
``k``     ``k`` of matmul 1                   heads x head_dim
``v``     ``v`` of matmul 2                   heads x head_dim
``attn``  ``softmax(.)`` of matmul 2          heads
========  ==================================  ===================

Each point quantizes the tensor exactly as it enters its matmul, with the
method's activation quantizer at ``a_bits`` (the same class as every conv
and Linear input; ``init_from_stats`` by the same calibration); LayerNorm,
softmax itself, the relative-position bias, the shift mask and the residual
adds stay FP32. ``q`` is quantized after the ``head_dim ** -0.5`` scaling
(the operand the matmul multiplies; 2DQuant and QuantSR also quantize the
scaled query). For per-channel methods the point sees ``(B, C, L, 1)``
maps: ``q``/``k``/``v`` as ``(B_, heads * head_dim, N, 1)`` (tokens are the
spatial axis) and the attention probabilities as ``(B_, heads, N * N, 1)``.
The placement against 2DQuant and QuantSR is compared point by point in
docs/swinir.md.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from .act_site import ActSite
from .linear import check_token_method
from ..quantizers import quantizer_classes

__all__ = ['QuantAct', 'QuantWindowAttention', 'ATTENTION_TYPES',
           'is_window_attention', 'quant_acts']

#: Class names of window attentions :func:`odm_mm.swap.swap_convs` swaps.
ATTENTION_TYPES = ('WindowAttention', )
_ATTRS = ('dim', 'window_size', 'num_heads', 'scale', 'qkv', 'proj',
          'relative_position_bias_table', 'relative_position_index')


def is_window_attention(module: nn.Module) -> bool:
    """A Swin window attention :class:`QuantWindowAttention` can replace."""
    return (type(module).__name__ in ATTENTION_TYPES
            and all(hasattr(module, a) for a in _ATTRS))


class QuantAct(ActSite):
    """One matmul operand's quantization point: an
    :class:`~odm_mm.layers.act_site.ActSite` with the method's activation quantizer.

    Calibration, the guards, the DDP broadcast and checkpoint loading treat
    it like every site; it takes no part in the offset selection, L_V or
    L_M (both papers define those on the inputs of layers with weights).

    Args:
        method: A name of :data:`~odm_mm.quantizers.QUANTIZERS`.
        a_bits: Bit-width.
        channels: Channels of the ``(B, C, L, 1)`` maps it is given.

    Raises:
        ValueError: if the method cannot quantize token features.
    """

    def __init__(self, method: str, a_bits: int, channels: int) -> None:
        act_cls, _ = quantizer_classes(method)
        check_token_method(method, act_cls, 'the attention matmuls')
        super().__init__(act_cls(a_bits, in_channels=channels))
        self.method = method

    def extra_repr(self) -> str:  # noqa: D102
        return f'method={self.method}, a_bits={self.a_bits}'


def quant_acts(model: nn.Module) -> list:
    """``[(name, QuantAct)]`` of a model, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, QuantAct)]


def _heads_map(t: Tensor) -> Tensor:
    """``(B_, h, N, d)`` -> ``(B_, h * d, N, 1)``."""
    b, h, n, d = t.shape
    return t.permute(0, 1, 3, 2).reshape(b, h * d, n, 1)


def _heads_unmap(m: Tensor, like: Tensor) -> Tensor:
    b, h, n, d = like.shape
    return m.reshape(b, h, d, n).permute(0, 1, 3, 2)


class QuantWindowAttention(nn.Module):
    """Window attention with quantized matmul operands (module docstring).

    Build it with :meth:`from_attention`; :meth:`to_attention` gives the
    source class back, sharing every Parameter and buffer.

    Args:
        dim, window_size, num_heads, scale: of the source attention.
        method, a_bits: Quantizer of the four operands.
    """

    def __init__(self, dim: int, window_size: tuple, num_heads: int,
                 scale: float, *, method: str = 'odm',
                 a_bits: int = 4) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.window_size = tuple(window_size)
        self.scale = scale
        self.q_quant = QuantAct(method, a_bits, dim)
        self.k_quant = QuantAct(method, a_bits, dim)
        self.v_quant = QuantAct(method, a_bits, dim)
        self.attn_quant = QuantAct(method, a_bits, num_heads)
        self.source_cls: Optional[type] = None

    @classmethod
    def from_attention(cls, attn: nn.Module, method: str = 'odm',
                       a_bits: int = 4, **_ignored: Any
                       ) -> 'QuantWindowAttention':
        """Wrap a Swin ``WindowAttention``, sharing its layers and tables.

        Keyword arguments of the conv/Linear swap other than ``method`` and
        ``a_bits`` (weight options) do not apply to the matmuls.
        """
        if not is_window_attention(attn):
            raise TypeError(
                f'from_attention needs a Swin window attention (class '
                f'{ATTENTION_TYPES} with {_ATTRS}), got '
                f'{type(attn).__name__}')
        q = cls(attn.dim, attn.window_size, attn.num_heads, attn.scale,
                method=method, a_bits=a_bits)
        q.qkv, q.proj = attn.qkv, attn.proj
        q.relative_position_bias_table = attn.relative_position_bias_table
        q.register_buffer('relative_position_index',
                          attn.relative_position_index)
        q.attn_drop = getattr(attn, 'attn_drop', nn.Identity())
        q.proj_drop = getattr(attn, 'proj_drop', nn.Identity())
        q.softmax = getattr(attn, 'softmax', nn.Softmax(dim=-1))
        q.source_cls = type(attn)
        q.to(attn.relative_position_bias_table.device)
        q.train(attn.training)
        return q

    def to_attention(self) -> nn.Module:
        """The source class again, sharing this module's layers and tables
        (a QuantLinear ``qkv``/``proj`` stays one: unswap it separately)."""
        if self.source_cls is None:
            raise ValueError('to_attention: not built by from_attention, the '
                             'source class is unknown')
        attn = self.source_cls.__new__(self.source_cls)
        nn.Module.__init__(attn)
        attn.dim, attn.num_heads = self.dim, self.num_heads
        attn.window_size, attn.scale = self.window_size, self.scale
        attn.relative_position_bias_table = self.relative_position_bias_table
        attn.register_buffer('relative_position_index',
                             self.relative_position_index)
        attn.qkv, attn.proj = self.qkv, self.proj
        attn.attn_drop, attn.proj_drop = self.attn_drop, self.proj_drop
        attn.softmax = self.softmax
        attn.train(self.training)
        return attn

    def quant_points(self):
        """``[(suffix, QuantAct)]`` of the four operands."""
        return [('q_quant', self.q_quant), ('k_quant', self.k_quant),
                ('v_quant', self.v_quant), ('attn_quant', self.attn_quant)]

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Args: x ``(num_windows * B, N, C)``; mask ``(num_windows, N, N)``
        of 0/-100 or None (as Swin's WindowAttention)."""
        b_, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        q = _heads_unmap(self.q_quant(_heads_map(q)), q)
        k = _heads_unmap(self.k_quant(_heads_map(k)), k)
        v = _heads_unmap(self.v_quant(_heads_map(v)), v)
        attn = q @ k.transpose(-2, -1)
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
        attn = self.attn_quant(attn.reshape(b_, h, n * n, 1)).reshape(
            b_, h, n, n)
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:  # noqa: D102
        return (f'dim={self.dim}, window_size={self.window_size}, '
                f'num_heads={self.num_heads}')

