"""Swap the convolutions of a network for :class:`~odm_mm.layers.QuantConv`.

One explicit function, :func:`swap_convs`: it walks ``named_modules()``,
replaces every ``nn.Conv2d`` whose qualified name matches one of the regular
expressions (``re.fullmatch``) with ``QuantConv.from_conv`` (sharing weight and
bias) and returns the names it swapped. No FX tracing, no patching of
``forward``. Torch-only.

Default patterns quantize the "high-level feature extraction module"
(paper Sec. 4.1), per mmagic generator class name (see :data:`PRESETS`):

* ``EDSRNet``: the convs of the ResBlocks of ``body`` (2 x num_blocks). This
  reproduces the paper's EDSR storage size (411.7K at W2A2, Table 4).
* ``RDNNet``: every conv inside the residual dense blocks (dense layers and
  local feature fusion) and the global feature fusion ``gff``.
* ``MSRResNet``: the convs of the ResBlocks of ``trunk_net``.

``mode='full'`` quantizes every Conv2d (Supplement Table S2, fully quantized
networks); skip connections are handled by :mod:`odm_mm.fullquant`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from torch import nn

from .layers import QuantConv

__all__ = ['PRESETS', 'swap_convs', 'resolve_patterns', 'quant_convs',
           'unswap_convs']

PRESETS: Dict[str, List[str]] = {
    'EDSRNet': [r'body\.\d+\.conv[12]'],
    'RDNNet': [r'rdbs\.\d+\.layers\.\d+\.conv', r'rdbs\.\d+\.lff',
               r'gff\.\d+'],
    'MSRResNet': [r'trunk_net\.\d+\.conv[12]'],
    'SRCNNNet': [r'conv2'],
    'RRDBNet': [r'body\.\d+\.rdb\d\.conv\d', r'conv_body'],
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
    """Replace matching ``nn.Conv2d`` modules by ``QuantConv`` in place.

    Args:
        model: Network to modify in place.
        patterns: Regexes matched with ``re.fullmatch`` against qualified
            module names; default: :func:`resolve_patterns`.
        mode: ``'body'`` or ``'full'`` (used when ``patterns`` is None).
        exclude: Regexes of names never to swap.
        **qcfg: Keyword arguments of :class:`QuantConv` (``w_bits``,
            ``a_bits``, ``method``, ``offset_bits``, ...).

    Returns:
        The qualified names of the swapped convs, in module order.

    Raises:
        ValueError: if the model has no Conv2d, or no conv matches.
    """
    regexes = [re.compile(p) for p in resolve_patterns(model, patterns, mode)]
    excl = [re.compile(p) for p in (exclude or [])]
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and not isinstance(m, QuantConv)]
    if not convs and not quant_convs(model):
        raise ValueError(f'{type(model).__name__} has no nn.Conv2d to '
                         'quantize.')
    chosen = [(n, m) for n, m in convs
              if any(r.fullmatch(n) for r in regexes)
              and not any(r.fullmatch(n) for r in excl)]
    if not chosen:
        sample = ', '.join(n for n, _ in convs[:8])
        raise ValueError(
            f'swap patterns {[r.pattern for r in regexes]} match no conv of '
            f'{type(model).__name__}; its convs are e.g.: {sample}')
    for name, conv in chosen:
        _set_submodule(model, name, QuantConv.from_conv(conv, **qcfg))
    return [n for n, _ in chosen]


def unswap_convs(model: nn.Module) -> List[str]:
    """Replace every QuantConv by a plain Conv2d (``to_conv``)."""
    names = [n for n, _ in quant_convs(model)]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_conv())
    return names


def quant_convs(model: nn.Module) -> List[tuple]:
    """``[(name, QuantConv), ...]`` of a model, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, QuantConv)]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
