"""Parameter count, storage size, MACs and BitOPs of SR generators.

Torch-only. Conventions (they reproduce the paper's Tables 4, 5 and S3; the
derivation and the residual mismatches are in ``docs/complexity.md``):

* **Storage** = sum over stored values of their precision. Quantized conv
  weights at ``w_bits``; biases, unquantized layers and every other
  ``nn.Parameter`` (BN affine, PReLU, quantizer bounds ``lower``/``upper`` or
  PAMS ``alpha``) at 32 bits; enabled offsets (``shift``/``scale`` with their
  ``*_enabled`` flag set) at ``offset_bits``; disabled offsets are the
  identity and are not stored. Buffers (BN running statistics, flags) are not
  counted. Reported in "K" = bits / 32 / 1000 (thousands of 32-bit values).
  ``count_weight_ranges=True`` adds the weight quantization range each
  quantized layer implies at deployment (2 values for ODM's percentile range,
  1 for PAMS's max|w|, 1 for DAQ's std, 2 for DDTB's percentile range, and a
  quantizer's ``extra_range_values()``, e.g. the 2 max|w| of a DDTB gate):
  the one convention under which docs/complexity.md compares the methods;
  off by default (the benchmark's figures).
* **MACs** of a convolution = output elements x (C_in / groups x k_h x k_w);
  of a Linear = tokens x in_features x out_features; of a Swin window
  attention = its two matmuls, ``q k^T`` and ``A v``, ``2 x tokens x N x C``
  (``N`` = tokens per window, ``C`` = embedding; per window, as computed).
  Bias additions, activations, additions, LayerNorm, softmax, the
  relative-position bias and pixel shuffles are free.
* **BitOPs** = 2 x MACs x b_w x b_a (one multiply and one add per MAC, each
  weighted by the bit-widths of its two operands; 32 x 32 for float layers).
  For the attention matmuls both operands are activations: ``b_q x b_k`` for
  ``q k^T`` and ``b_A x b_v`` for ``A v`` (:class:`~odm_mm.layers.attention.
  QuantAct` bit-widths, 32 where not quantized). Token counts (Linears and
  attentions) scale with the LR pixel count from the probe to the target
  (exact when the target LR size is a multiple of the window; otherwise
  SwinIR's reflection padding to the next multiple is not counted, < 3% at
  1920 x 1080 x4).
  Each enabled offset is one add (shift) or one multiply (scale) per element
  of the layer's input feature, between a ``offset_bits`` value and a 32-bit
  activation: ``C_in x H x W x offset_bits x 32``.
* Counts are for one forward pass producing an ``hr_size`` output (default
  1920 x 1080, LR input = HR / scale) or for an explicit ``lr_shape``. They are
  obtained by running the model once on a small probe input with forward
  hooks and mapping every layer's input size to the target resolution
  (exact for the convolutions, whose output size is recomputed from their
  geometry).

Quantizer hooks (every :class:`~odm_mm.quantizers.Quantizer`; no method
names here): a quantized conv's parameters that belong to one of its
quantizers are stored at ``quantizer.param_storage_bits(name)`` bits per
value (default 32; 0 = not stored, e.g. DDTB's gate on a static layer), and
the activation quantizer's ``runtime_bitops_terms((C_in, H, W))`` --
``(ops, bits_a, bits_b)`` per image at the layer's input resolution, e.g.
DAQ's run-time statistics -- is added to the conv's BitOPs (reported as
``quantizer_bitops``).

Placement sites (:class:`odm_mm.layers.act_site.ActSite`: an activation
quantizer outside a conv, e.g. DDTB's quantized skip paths) are counted like
a quantized conv's activation quantizer: their parameters at
``param_storage_bits``, their ``runtime_bitops_terms`` at their input's
resolution. A conv whose input sums ``k`` quantized tensors (its activation
quantizer's ``input_terms``, e.g. EDSR's conv1 under DDTB's official
placement) costs ``k`` integer convs.

Extension point: a module (outside quantized convs) that defines
``bitops_terms(inputs, output) -> Iterable[(ops, bits_a, bits_b)]`` is
counted with those terms (ops at the probe resolution, scaled to the target
pixel count); a module with an integer attribute ``bits`` and no such method
(e.g. a skip-connection quantizer) counts one addition per output element
between two ``bits``-bit operands.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..layers.attention import QuantAct, QuantWindowAttention, is_window_attention
from .report import FP_BITS, ComplexityReport, LayerComplexity

__all__ = ['LayerComplexity', 'ComplexityReport', 'count_complexity',
           'storage_bits', 'is_quant_conv', 'is_quant_layer', 'FP_BITS',
           'PAPER_HR_SIZE', 'KIND_FAMILY']

#: Which family each row kind belongs to (the per-kind split of a report).
KIND_FAMILY = {'conv': 'conv', 'qconv': 'conv', 'linear': 'linear',
               'qlinear': 'linear', 'matmul': 'matmul', 'qact': 'matmul'}
_QUANT_KINDS = ('qconv', 'qlinear')
_SITE_KINDS = ('site', 'qact')

PAPER_HR_SIZE = (1080, 1920)  # (H, W) of the paper's 1920 x 1080 output
_Size = Union[int, Tuple[int, int]]


def is_quant_conv(m: nn.Module) -> bool:
    """A conv with ``w_bits``/``a_bits`` (e.g. :class:`QuantConv`)."""
    return (isinstance(m, nn.modules.conv._ConvNd)
            and getattr(m, 'w_bits', None) is not None
            and getattr(m, 'a_bits', None) is not None)


def is_quant_layer(m: nn.Module) -> bool:
    """A conv or Linear with ``w_bits``/``a_bits`` (QuantConv,
    QuantLinear)."""
    return is_quant_conv(m) or (isinstance(m, nn.Linear)
                                and getattr(m, 'w_bits', None) is not None
                                and getattr(m, 'a_bits', None) is not None)


def _quant_active(m: nn.Module) -> bool:
    return is_quant_layer(m) and bool(getattr(m, 'quant_enabled', True))


def _operand_bits(point: Optional[nn.Module]) -> int:
    """Bit-width of an attention matmul operand (32 if not quantized)."""
    if point is None or not getattr(point, 'quant_enabled', True):
        return FP_BITS
    return int(point.a_bits)


def _enabled_offsets(m: nn.Module) -> List[Tensor]:
    out = []
    for pname in ('shift', 'scale'):
        flag = getattr(m, f'{pname}_enabled', None)
        p = getattr(m, pname, None)
        if isinstance(p, Tensor) and flag is not None and bool(flag):
            out.append(p)
    return out


def _is_site(m: nn.Module) -> bool:
    """An activation quantizer outside a conv (a placement's site,
    :class:`odm_mm.layers.act_site.ActSite`): has ``act_quantizer``, no conv."""
    return (hasattr(m, 'act_quantizer') and hasattr(m, 'quant_enabled')
            and not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


def _is_skip(m: nn.Module) -> bool:
    if hasattr(m, 'bitops_terms'):
        return True
    bits = getattr(m, 'bits', None)
    return (isinstance(bits, int) and not isinstance(bits, bool)
            and not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


def _inside(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == '' or name.startswith(p + '.') for p in prefixes)


def _quantizer_bits(m: nn.Module, pname: str) -> Optional[int]:
    """Bits per value of parameter ``pname`` of the quantized conv ``m``
    that belongs to one of its quantizers (None: not a quantizer's)."""
    head, _, rest = pname.partition('.')
    child = getattr(m, head, None) if rest else None
    if child is None or not hasattr(child, 'param_storage_bits'):
        return None
    return int(child.param_storage_bits(rest))


def _storage_rows(model: nn.Module,
                  count_weight_ranges: bool) -> Dict[str, LayerComplexity]:
    """One row per conv/linear/skip module or parameter-owning module."""
    rows: Dict[str, LayerComplexity] = {}
    seen: set = set()
    quant_names: List[str] = []
    for name, m in model.named_modules():
        if _inside(name, quant_names):
            continue  # collapsed into its quantized conv's row
        if is_quant_layer(m):
            quant_names.append(name)
            kind = 'qconv' if is_quant_conv(m) else 'qlinear'
        elif isinstance(m, QuantAct):  # an attention matmul operand
            quant_names.append(name)
            kind = 'qact'
        elif _is_site(m):
            quant_names.append(name)
            kind = 'site'
        elif is_window_attention(m) or isinstance(m, QuantWindowAttention):
            kind = 'matmul'
        elif isinstance(m, nn.modules.conv._ConvNd):
            kind = 'conv'
        elif isinstance(m, nn.Linear):
            kind = 'linear'
        elif _is_skip(m):
            kind = 'skip'
        else:
            kind = 'params'
        row = LayerComplexity(name=name, type=type(m).__name__, kind=kind)
        quant = kind in _QUANT_KINDS
        params = (m.named_parameters() if quant or kind in _SITE_KINDS else
                  m.named_parameters(recurse=False))
        active = _quant_active(m) or (kind in _SITE_KINDS
                                      and m.quant_enabled)
        offsets = {id(p) for p in _enabled_offsets(m)} if quant else set()
        for pname, p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if quant and pname in ('shift', 'scale'):
                if id(p) not in offsets:
                    continue  # disabled offset: identity, not stored
                bits = getattr(m, 'offset_bits', FP_BITS) if active \
                    else FP_BITS
                row.offset_vectors += 1
                row.offset_storage_bits += p.numel() * bits
            elif quant and pname == 'weight' and active:
                bits = m.w_bits
            elif (quant or kind in _SITE_KINDS) and \
                    _quantizer_bits(m, pname) is not None:
                bits = _quantizer_bits(m, pname)
                if bits == 0:
                    continue  # not stored (e.g. an unused gate)
                bits = bits if active or kind in _SITE_KINDS else FP_BITS
            else:
                bits = FP_BITS
            row.params += p.numel()
            row.storage_bits += p.numel() * bits
        if kind == 'qact' and active:
            row.a_bits = m.a_bits
        if quant and active:
            row.w_bits, row.a_bits = m.w_bits, m.a_bits
            if count_weight_ranges:
                n = m.weight_quantizer.range_values
                row.params += n
                row.storage_bits += n * FP_BITS
        if count_weight_ranges and (kind in _SITE_KINDS or (
                quant and active)):
            extra = getattr(m.act_quantizer, 'extra_range_values', None)
            n = int(extra()) if callable(extra) else 0
            row.params += n
            row.storage_bits += n * FP_BITS
        if kind != 'params' or row.params:
            rows[name] = row
    return rows


def storage_bits(model: nn.Module, count_weight_ranges: bool = False) -> int:
    """Storage size of ``model`` in bits (conventions: module docstring)."""
    return sum(r.storage_bits
               for r in _storage_rows(model, count_weight_ranges).values())


def _first_tensor(x: Any) -> Optional[Tensor]:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _pair(size: _Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


class _Probe:
    """Forward hooks recording input/output shapes of the counted modules."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.calls: Dict[str, List[Tuple[Any, ...]]] = {n: [] for n in names}
        self.model = model
        self.names = names

    def run(self, x: Tensor) -> Tensor:
        handles, saved = [], []
        modules = dict(self.model.named_modules())
        for name in self.names:
            handles.append(modules[name].register_forward_hook(
                self._hook(name)))
        for m in self.model.modules():
            # plain float layer / site: same shapes, no stats
            if is_quant_layer(m) or _is_site(m):
                saved.append((m, getattr(m, 'quant_enabled', True),
                              getattr(m, 'observer', None)))
                m.quant_enabled = False
                if hasattr(m, 'observer'):
                    m.observer = None
        training = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                out = _first_tensor(self.model(x))
        finally:
            for h in handles:
                h.remove()
            for m, enabled, observer in saved:
                m.quant_enabled = enabled
                if hasattr(m, 'observer'):
                    m.observer = observer
            for m, mode in training:
                m.training = mode
        if out is None:
            raise ValueError('count_complexity: the model returned no tensor')
        return out

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Tuple[Any, ...],
                 output: Any) -> None:
            x = _first_tensor(inputs)
            y = _first_tensor(output)
            terms = None
            if hasattr(module, 'bitops_terms'):
                terms = [tuple(int(v) for v in t)
                         for t in module.bitops_terms(inputs, output)]
            self.calls[name].append(
                (tuple(x.shape) if x is not None else None,
                 tuple(y.shape) if y is not None else None, terms))
        return hook


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _count_ops(row: LayerComplexity, m: nn.Module, calls: List[Tuple],
               ratio: Tuple[Fraction, Fraction]) -> None:
    """Fill ``macs``/``bitops`` of ``row`` from the probe calls."""
    active = _quant_active(m)
    wb, ab = (m.w_bits, m.a_bits) if active else (FP_BITS, FP_BITS)
    if row.kind in ('matmul', 'qact'):
        _count_attention(row, m, calls, ratio)
        return
    for in_shape, out_shape, terms in calls:
        row.calls += 1
        if in_shape is None or out_shape is None:
            continue
        spatial_in = [round(s * r) for s, r in zip(in_shape[2:], ratio)]
        if isinstance(m, nn.modules.conv._ConvNd) and len(in_shape) == 4:
            if m.transposed:
                out_sp = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1
                          for i, k, s, p, d, op in zip(
                              spatial_in, m.kernel_size, m.stride,
                              m.padding, m.dilation, m.output_padding)]
            elif isinstance(m.padding, str):  # 'same' / 'valid'
                out_sp = [round(s * r) for s, r in zip(out_shape[2:], ratio)]
            else:
                out_sp = [_conv_out(i, k, s, p, d) for i, k, s, p, d in zip(
                    spatial_in, m.kernel_size, m.stride, m.padding,
                    m.dilation)]
            c_in, c_out = in_shape[1], out_shape[1]
            k = m.kernel_size[0] * m.kernel_size[1]
            pix_out, pix_in = out_sp[0] * out_sp[1], \
                spatial_in[0] * spatial_in[1]
            if m.transposed:
                macs = c_in * pix_in * (c_out // m.groups) * k
            else:
                macs = c_out * pix_out * (c_in // m.groups) * k
            row.out_shape = (c_out, *out_sp)
            row.macs += macs
            quant = getattr(m, 'act_quantizer', None)
            # an input summing k quantized tensors: k integer convs
            terms = int(getattr(quant, 'input_terms', 1)) if active else 1
            row.bitops += 2 * macs * wb * ab * terms
            if row.kind == 'qconv' and active:
                _add_runtime(row, quant, (c_in, *spatial_in))
            n_off = len(_enabled_offsets(m)) if row.kind == 'qconv' else 0
            if n_off:
                ob = getattr(m, 'offset_bits', FP_BITS) if active else FP_BITS
                off = n_off * c_in * pix_in * ob * FP_BITS
                row.offset_bitops += off
                row.bitops += off
            continue
        if row.kind == 'site':  # the quantizer's run-time work
            row.a_bits = m.act_quantizer.bits
            spatial = [round(s * r) for s, r in zip(in_shape[2:], ratio)]
            row.out_shape = (in_shape[1], *spatial)
            if getattr(m, 'quant_enabled', True):
                _add_runtime(row, m.act_quantizer, (in_shape[1], *spatial))
            continue
        # non-conv: scale element counts by the pixel ratio of the output
        pix = ratio[0] * ratio[1] if len(out_shape) >= 4 else Fraction(1)
        row.out_shape = tuple(out_shape[1:2]) + tuple(
            round(s * r) for s, r in zip(out_shape[2:], ratio))
        if isinstance(m, nn.Linear):
            n_out = 1
            for s in out_shape[:-1]:
                n_out *= s
            # tokens (B, N, C) scale with the pixels; a (B, C) head does not
            tok = ratio[0] * ratio[1] if len(out_shape) >= 3 else pix
            tokens = round(n_out * tok)
            macs = tokens * m.in_features * m.out_features
            row.macs += macs
            row.bitops += 2 * macs * wb * ab
            quant = getattr(m, 'act_quantizer', None)
            if row.kind == 'qlinear' and active:
                _add_runtime(row, quant, (m.in_features, tokens, 1))
            n_off = len(_enabled_offsets(m)) if row.kind == 'qlinear' else 0
            if n_off:
                ob = getattr(m, 'offset_bits', FP_BITS) if active else FP_BITS
                off = n_off * m.in_features * tokens * ob * FP_BITS
                row.offset_bitops += off
                row.bitops += off
        elif terms is not None:
            row.bitops += sum(round(o * pix) * ba * bb for o, ba, bb in terms)
        elif row.kind == 'skip':
            n = 1
            for s in out_shape:
                n *= s
            row.bitops += round(n * pix) * m.bits * m.bits


def _add_runtime(row: LayerComplexity, quant: Any,
                 shape: Tuple[int, ...]) -> None:
    """Add an activation quantizer's run-time work at ``shape`` (its
    ``runtime_bitops_terms``, e.g. DAQ's statistics) to ``row``."""
    if not hasattr(quant, 'runtime_bitops_terms'):
        return
    extra = sum(int(o) * int(ba) * int(bb)
                for o, ba, bb in quant.runtime_bitops_terms(shape))
    row.quantizer_bitops += extra
    row.bitops += extra


def _count_attention(row: LayerComplexity, m: nn.Module, calls: List[Tuple],
                     ratio: Tuple[Fraction, Fraction]) -> None:
    """Window-attention matmuls (``'matmul'`` rows) and the run-time work
    of their operand quantizers (``'qact'`` rows: DAQ's statistics; the
    rounding itself is free as for conv inputs)."""
    tok = ratio[0] * ratio[1]
    for in_shape, out_shape, _ in calls:
        row.calls += 1
        if in_shape is None:
            continue
        if row.kind == 'qact':  # (B, C, L, 1) map
            if m.quant_enabled:
                _add_runtime(row, m.act_quantizer,
                             (in_shape[1], round(in_shape[2] * tok), 1))
            continue
        b_, n, c = in_shape  # (windows * B, N, C)
        tokens = round(b_ * n * tok)
        half = tokens * n * c  # MACs of q k^T, and of A v
        if isinstance(m, QuantWindowAttention):
            b_qk = _operand_bits(m.q_quant) * _operand_bits(m.k_quant)
            b_av = _operand_bits(m.attn_quant) * _operand_bits(m.v_quant)
        else:
            b_qk = b_av = FP_BITS * FP_BITS
        row.macs += 2 * half
        row.bitops += 2 * half * b_qk + 2 * half * b_av
        row.a_bits = int(round((b_qk * b_av) ** 0.25))
        row.w_bits = row.a_bits
        row.out_shape = (round(b_ * tok), n, c)


def count_complexity(model: nn.Module,
                     lr_shape: Optional[Sequence[int]] = None,
                     hr_size: Optional[_Size] = None,
                     scale: Optional[int] = None,
                     probe_size: Optional[_Size] = 8,
                     count_weight_ranges: bool = False) -> ComplexityReport:
    """Parameters, storage, MACs and BitOPs of ``model`` (one image).

    Args:
        model: A generator (FP32 or with quantized convs). It is run once on
            a probe input in eval mode without gradients; its training mode,
            quantization switches and observers are restored afterwards.
        lr_shape: ``(C, H, W)`` of the LR input. Overrides ``hr_size``.
        hr_size: ``(H, W)`` (or an int) of the output to generate; default
            the paper's 1920 x 1080, i.e. ``(1080, 1920)``. The LR input is
            ``hr_size / scale``.
        scale: Upscaling factor; default: measured on the probe.
        probe_size: ``(h, w)`` (or an int) of the probe LR input; ``None``
            runs the model at the target LR size (exact but slow).
        count_weight_ranges: Also store each quantized layer's weight range
            (see module docstring).

    Returns:
        A :class:`ComplexityReport`.

    Raises:
        ValueError: if the HR size is not divisible by the scale.
    """
    first = next((m for m in model.modules()
                  if isinstance(m, nn.modules.conv._ConvNd)), None)
    if lr_shape is not None:
        c_in = int(lr_shape[0])
    else:
        c_in = getattr(model, 'in_channels', None) or (
            first.in_channels if first is not None else 3)
    param = next(model.parameters(), None)
    kw = dict(dtype=param.dtype, device=param.device) if param is not None \
        else {}
    rows = _storage_rows(model, count_weight_ranges)
    op_names = [n for n, r in rows.items() if r.kind != 'params']
    probe = _Probe(model, op_names)
    target = tuple(int(v) for v in lr_shape[1:]) if lr_shape is not None \
        else None
    ph, pw = _pair(probe_size) if probe_size is not None else (
        target if target is not None else (16, 16))
    if probe_size is None and target is None:
        # need the scale first: a tiny probe, then the exact run
        out = _Probe(model, []).run(torch.rand(1, c_in, 16, 16, **kw))
        scale = scale or round(out.shape[-1] / 16)
        hh, hw = _pair(hr_size or PAPER_HR_SIZE)
        ph, pw = hh // scale, hw // scale
    out = probe.run(torch.rand(1, c_in, ph, pw, **kw))
    if target is None:
        scale = scale or round(out.shape[-1] / pw)
        hh, hw = _pair(hr_size or PAPER_HR_SIZE)
        if hh % scale or hw % scale:
            raise ValueError(f'HR size {(hh, hw)} is not divisible by the '
                             f'scale {scale}')
        target = (hh // scale, hw // scale)
    ratio = (Fraction(target[0], ph), Fraction(target[1], pw))
    modules = dict(model.named_modules())
    for name in op_names:
        _count_ops(rows[name], modules[name], probe.calls[name], ratio)
    out_shape = tuple(out.shape[1:2]) + tuple(
        round(s * r) for s, r in zip(out.shape[2:], ratio))
    return ComplexityReport(model=type(model).__name__,
                            lr_shape=(c_in, *target), out_shape=out_shape,
                            layers=list(rows.values()))
