"""Swap the layers of a network for their quantized counterparts.

One explicit function, :func:`swap_convs`: it walks ``named_modules()`` and
replaces every module whose qualified name matches one of the regular
expressions (``re.fullmatch``):

* ``nn.Conv2d`` -> :class:`~odm_mm.layers.QuantConv` (``from_conv``),
* ``nn.Linear`` -> :class:`~odm_mm.layers.linear.QuantLinear`
  (``from_linear``),
* a Swin window attention -> :class:`~odm_mm.layers.attention.
  QuantWindowAttention` (``from_attention``: its two matmuls take quantized
  operands; its ``qkv``/``proj`` Linears are swapped by their own names),

sharing weights and biases, and returns the names it swapped. No FX
tracing, no patching of ``forward``. Torch-only.

Default patterns quantize the "high-level feature extraction module"
(paper Sec. 4.1), per mmagic generator class name (see :data:`PRESETS`):

* ``EDSRNet``: the convs of the ResBlocks of ``body`` (2 x num_blocks). This
  reproduces the paper's EDSR storage size (411.7K at W2A2, Table 4).
* ``RDNNet``: every conv inside the residual dense blocks (dense layers and
  local feature fusion) and the global feature fusion ``gff``.
* ``MSRResNet``: the convs of the ResBlocks of ``trunk_net``.
* ``SwinIRNet``: every residual Swin transformer block (RSTB) whole: the
  window attentions (both matmuls), their ``qkv`` and ``proj``, the MLPs'
  ``fc1``/``fc2`` and the RSTB's closing conv. ``conv_first``,
  ``conv_after_body``, the upsampler and ``conv_last`` stay FP32 (EDSR's
  head and tail), as do LayerNorm, softmax, the relative-position bias and
  the residual adds.

``mode='full'`` quantizes every Conv2d (Supplement Table S2, fully quantized
networks); skip connections are handled by :mod:`odm_mm.fullquant`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from torch import nn

from .layers.attention import QuantWindowAttention, is_window_attention
from .layers import QuantConv
from .layers.linear import QuantLinear

__all__ = ['PRESETS', 'swap_convs', 'resolve_patterns', 'quant_convs',
           'quant_layers', 'quant_attentions', 'unswap_convs']

_RSTB = r'layers\.\d+\.residual_group\.blocks\.\d+\.'

PRESETS: Dict[str, List[str]] = {
    'EDSRNet': [r'body\.\d+\.conv[12]'],
    'RDNNet': [r'rdbs\.\d+\.layers\.\d+\.conv', r'rdbs\.\d+\.lff',
               r'gff\.\d+'],
    'MSRResNet': [r'trunk_net\.\d+\.conv[12]'],
    'SRCNNNet': [r'conv2'],
    'RRDBNet': [r'body\.\d+\.rdb\d\.conv\d', r'conv_body'],
    'SwinIRNet': [_RSTB + r'attn', _RSTB + r'attn\.(qkv|proj)',
                  _RSTB + r'mlp\.fc[12]', r'layers\.\d+\.conv(\.\d+)?'],
}
FULL = [r'.*']


def resolve_patterns(model: nn.Module,
                     patterns: Union[None, str, Sequence[str]] = None,
                     mode: str = 'body') -> List[str]:
    """Turn ``patterns``/``mode`` into a list of regular expressions.

    Args:
        model: The generator (its class name selects the preset).
        patterns: Explicit regexes (a string is one pattern). Overrides the
            preset when given.
        mode: ``'body'`` (preset for the generator class) or ``'full'``
            (every Conv2d).
    """
    if patterns is not None:
        return [patterns] if isinstance(patterns, str) else list(patterns)
    if mode == 'full':
        return list(FULL)
    if mode != 'body':
        raise ValueError(f"swap mode must be 'body' or 'full', got {mode!r}")
    name = type(model).__name__
    if name not in PRESETS:
        raise ValueError(
            f'No default swap patterns for generator {name!r} (known: '
            f'{sorted(PRESETS)}). Pass quant_cfg.patterns=[regex, ...] '
            'matching the qualified names of the convs to quantize.')
    return list(PRESETS[name])


def swap_convs(model: nn.Module,
               patterns: Union[None, str, Sequence[str]] = None,
               mode: str = 'body',
               exclude: Optional[Iterable[str]] = None,
               **qcfg: Any) -> List[str]:
    """Replace matching convs, Linears and window attentions in place.

    Args:
        model: Network to modify in place.
        patterns: Regexes matched with ``re.fullmatch`` against qualified
            module names; default: :func:`resolve_patterns`.
        mode: ``'body'`` or ``'full'`` (used when ``patterns`` is None;
            ``'full'`` quantizes every Conv2d).
        exclude: Regexes of names never to swap.
        **qcfg: Keyword arguments of :class:`QuantConv` (``w_bits``,
            ``a_bits``, ``method``, ``offset_bits``, ...); the same for
            :class:`QuantLinear`; window attentions take ``method`` and
            ``a_bits``.

    Returns:
        The qualified names of the swapped modules, in module order.

    Raises:
        ValueError: if the model has nothing to quantize, or nothing
            matches.
    """
    regexes = [re.compile(p) for p in resolve_patterns(model, patterns, mode)]
    excl = [re.compile(p) for p in (exclude or [])]
    full = patterns is None and mode == 'full'

    def kind(m: nn.Module) -> Optional[str]:
        if isinstance(m, (QuantConv, QuantLinear, QuantWindowAttention)):
            return None
        if isinstance(m, nn.Conv2d):
            return 'conv'
        if full:  # 'full' is every Conv2d (Table S2)
            return None
        if isinstance(m, nn.Linear):
            return 'linear'
        return 'attention' if is_window_attention(m) else None

    cands = [(n, m, kind(m)) for n, m in model.named_modules()]
    cands = [c for c in cands if c[2] is not None]
    if not cands and not quant_layers(model):
        raise ValueError(f'{type(model).__name__} has no nn.Conv2d, '
                         'nn.Linear or window attention to quantize.')
    chosen = [(n, m, k) for n, m, k in cands
              if any(r.fullmatch(n) for r in regexes)
              and not any(r.fullmatch(n) for r in excl)]
    if not chosen:
        sample = ', '.join(n for n, _, _ in cands[:8])
        raise ValueError(
            f'swap patterns {[r.pattern for r in regexes]} match no layer '
            f'of {type(model).__name__}; its layers are e.g.: {sample}')
    # attentions first: their qkv/proj keep their names below the new module
    for name, mod, k in chosen:
        if k == 'attention':
            _set_submodule(model, name,
                           QuantWindowAttention.from_attention(mod, **qcfg))
    for name, mod, k in chosen:
        if k == 'conv':
            _set_submodule(model, name, QuantConv.from_conv(mod, **qcfg))
        elif k == 'linear':
            _set_submodule(model, name, QuantLinear.from_linear(mod, **qcfg))
    return [n for n, _, _ in chosen]


def unswap_convs(model: nn.Module) -> List[str]:
    """Replace every QuantConv / QuantLinear / QuantWindowAttention by the
    plain module it came from (``to_conv`` / ``to_linear`` /
    ``to_attention``)."""
    names = []
    for name, m in quant_layers(model):
        back = m.to_conv() if isinstance(m, QuantConv) else m.to_linear()
        _set_submodule(model, name, back)
        names.append(name)
    for name, m in quant_attentions(model):
        _set_submodule(model, name, m.to_attention())
        names.append(name)
    return names


def quant_convs(model: nn.Module) -> List[tuple]:
    """``[(name, QuantConv), ...]`` of a model, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, QuantConv)]


def quant_layers(model: nn.Module) -> List[tuple]:
    """``[(name, layer)]`` of every quantized layer with weights
    (QuantConv and QuantLinear), in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (QuantConv, QuantLinear))]


def quant_attentions(model: nn.Module) -> List[tuple]:
    """``[(name, QuantWindowAttention)]`` of a model, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, QuantWindowAttention)]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
