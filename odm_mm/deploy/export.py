"""Export a trained ODM/PAMS generator to the integer deployment artifact.

The artifact (container: :mod:`odm_mm.deploy.format`) holds

* every ``QuantConv`` / ``QuantLinear`` weight as integer codes packed at
  ``w_bits`` bits, with its range; its bias in FP32; its activation bounds;
  its enabled offsets as ``offset_bits`` codes with their [min, max];
* every quantized window attention (:mod:`odm_mm.layers.attention`): the
  activation bounds of its four matmul operands (``q``, ``k``, ``v``,
  ``attn``) under ``manifest["quant_attentions"][name]`` with ``num_heads``,
  ``scale`` and ``window_size`` (its ``qkv``/``proj`` are quant layers);
* every other parameter and persistent buffer of the generator (the FP32
  part) unchanged, under its state-dict name;
* ``manifest.json`` naming all tensors and how to rebuild the FP32 network.

Record of a quantized conv (``manifest["quant_layers"][name]``). The codes
and ranges come from the layer's quantizers themselves
(:meth:`~odm_mm.quantizers.Quantizer.codes`, ``integer_form``: every method
is ``t_q = offset + (code - zero_point) * scale``, codes in ``[0, levels -
1]``); ``method`` names the quantizer, whose integer formulas the
independent runtime (:mod:`odm_mm.deploy.runtime`) re-implements::

    kind:   'conv' or 'linear'
    conv:   in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups (zero padding only); a Linear has
    linear: in_features, out_features (channel axis last) instead
    bias:   tensor name or null
    method: the quantization method (``QuantConv.method``)
    weight: {tensor, bits, code_bits, zero_point, levels, range}; range =
            the weight quantizer's ``integer_form`` params, stacked
    act:    {bits, zero_point, levels, <param>: tensor name, ...} for each
            ``integer_form`` param of the activation quantizer
    "odm" (s = (upper - lower) / (2^b - 1)): weight range = [lower, upper]
          (the percentile range), w = lower + code * s; act params lower,
          upper; code = round((clip(x, lower, upper) - lower) / s), x_q =
          lower + code * s; zero_point 0
    "pams" (q = max(2^(b-1) - 1, 1) = zero_point): weight range = [max|w|],
          w = (code - q) max|w| / q (code_bits 2 for 1-bit PAMS); act param
          alpha, code - q = round(clip(x, -a, a) * q / a), x_q = (code - q)
          a / q
    shift, scale (Eq. 7 / 8, only when enabled, else null; shift first):
      {tensor, bits, range}; bits < 32: v = lo + code * (hi - lo)/(2^b - 1)
      over range = [lo, hi] (lo == hi: v = lo); bits == 32: raw float32.

Storage figure (paper Sec. 4.1, "stored parameters weighted by the precision
of each value"): :func:`odm_mm.analysis.complexity.storage_bits`, the one
storage function of the package. The artifact adds to it only the
weight ranges (64 bits per ODM layer, 32 per PAMS layer), offset ranges (64
bits per enabled offset), byte padding of packed tensors, persistent buffers
and the manifest text.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis.complexity import storage_bits
from ..layers.attention import QuantWindowAttention
from ..layers import QuantConv, QuantInputMixin, quantize_offset
from ..layers.linear import QuantLinear
from .format import BLOB, MANIFEST, BlobWriter, write_artifact

__all__ = ['export_artifact', 'ExportResult', 'weight_codes',
           'generator_info']


@dataclass
class ExportResult:
    """What :func:`export_artifact` wrote.

    Attributes:
        out_dir: The artifact folder.
        manifest: The manifest as written.
        artifact_bytes: Size of manifest.json + tensors.bin on disk.
        blob_bytes: Size of tensors.bin.
        storage_bits: The storage figure of the exported generator
            (:func:`odm_mm.analysis.complexity.storage_bits`).
    """

    out_dir: str
    manifest: Dict[str, Any]
    artifact_bytes: int
    blob_bytes: int
    storage_bits: int = 0

    @property
    def storage_bytes(self) -> float:
        """The storage figure in bytes (``storage_bits / 8``)."""
        return self.storage_bits / 8

    @property
    def ratio(self) -> float:
        """``artifact_bytes / storage_bytes``."""
        return self.artifact_bytes / self.storage_bytes


def generator_info(generator: nn.Module,
                   generator_cfg: Optional[Mapping[str, Any]] = None
                   ) -> Dict[str, Any]:
    """Construction info of the FP32 generator for the manifest.

    Args:
        generator: The generator (its class gives ``module`` and ``class``).
        generator_cfg: Its config (``type`` + constructor kwargs), e.g.
            ``cfg.model.generator``. Without it ``kwargs`` is null and the
            runtime needs the FP32 network passed in.

    Raises:
        ValueError: if ``type`` names another class or the kwargs are not
            JSON-serialisable.
    """
    cls = type(generator)
    info = {'module': cls.__module__, 'class': cls.__qualname__,
            'kwargs': None}
    if generator_cfg is None:
        return info
    cfg = _plain(generator_cfg)
    gtype = cfg.pop('type', cls.__name__)
    gname = gtype if isinstance(gtype, str) else gtype.__name__
    if gname.split('.')[-1] != cls.__name__:
        raise ValueError(f'generator_cfg type {gname!r} does not match the '
                         f'generator class {cls.__name__!r}')
    try:
        json.dumps(cfg)
    except TypeError as err:
        raise ValueError(f'generator kwargs are not JSON-serialisable: '
                         f'{err}') from err
    info['kwargs'] = cfg
    return info


def _plain(obj: Any) -> Any:
    """ConfigDict/tuple -> dict/list recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _pair(v: Any) -> list:
    if isinstance(v, (tuple, list)):
        return [int(i) for i in v]
    return [int(v)] * 2


def weight_codes(layer: QuantConv) -> Dict[str, Any]:
    """Integer weight codes reproducing ``layer.weight_quantizer`` exactly
    (the quantizer's own :meth:`~odm_mm.quantizers.Quantizer.codes`)."""
    wq, w = layer.weight_quantizer, layer.weight.detach()
    form = wq.integer_form(w)
    codes = wq.codes(w)
    if not torch.equal(wq.dequantize(codes, w), wq(w)):
        raise RuntimeError('integer weight codes do not reproduce the weight '
                           'quantizer of this layer (quantizer changed?)')
    rng = torch.stack([v.reshape(()) for v in form.params.values()])
    return dict(codes=_np(codes).astype(np.int64), zero=form.zero,
                levels=form.levels, form=form,
                code_bits=max(layer.w_bits, form.code_bits),
                range=_np(rng).astype(np.float32))


def _offset_record(writer: BlobWriter, layer: QuantConv, name: str,
                   kind: str) -> Optional[Dict[str, Any]]:
    if not bool(getattr(layer, f'{kind}_enabled')):
        return None
    s, bits = getattr(layer, kind).detach(), layer.offset_bits
    tname = f'{name}.{kind}'
    if bits >= 32:
        writer.add_raw(tname, _np(s))
        return dict(tensor=tname, bits=32, range=None)
    lo, hi = s.min(), s.max()
    if bool(hi > lo):
        step = (hi - lo) / (2**bits - 1)
        codes = torch.round((s - lo) / step)
        deq = codes * step + lo
    else:
        codes, deq = torch.zeros_like(s), s
    if not torch.equal(deq, quantize_offset(s, bits)):
        raise RuntimeError(f'{tname}: offset codes do not reproduce '
                           'quantize_offset')
    writer.add_packed(tname, _np(codes).astype(np.int64), bits)
    writer.add_raw(f'{tname}_range', _np(torch.stack([lo, hi])))
    return dict(tensor=tname, bits=bits, range=f'{tname}_range')


def _act_record(writer: BlobWriter, name: str, quantizer: nn.Module,
                bits: int) -> Dict[str, Any]:
    form = quantizer.integer_form()
    act = dict(bits=bits, zero_point=form.zero, levels=form.levels)
    for key, value in form.params.items():
        tname = f'{name}.{key}'
        writer.add_raw(tname, _np(value))
        act[key] = tname
    return act


def _attention_record(writer: BlobWriter, name: str,
                      attn: QuantWindowAttention) -> Dict[str, Any]:
    rec = dict(method=attn.q_quant.method, num_heads=attn.num_heads,
               dim=attn.dim, scale=float(attn.scale),
               window_size=list(attn.window_size))
    for key, point in (('q', attn.q_quant), ('k', attn.k_quant),
                       ('v', attn.v_quant), ('attn', attn.attn_quant)):
        if not point.quant_enabled:
            raise ValueError(f'{name}: quantization is disabled on its {key} '
                             'operand (enable_quant() before exporting)')
        rec[key] = _act_record(writer, f'{name}.{key}_quant.act_quantizer',
                               point.act_quantizer, point.a_bits)
    return rec


def _layer_record(writer: BlobWriter, name: str,
                  layer: QuantInputMixin) -> Dict[str, Any]:
    if isinstance(layer, QuantLinear):
        return _linear_record(writer, name, layer)
    if layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
        raise ValueError(f'{name}: only numeric zero padding can be exported '
                         f'(padding={layer.padding!r}, padding_mode='
                         f'{layer.padding_mode!r})')
    if not layer.quant_enabled:
        raise ValueError(f'{name}: quantization is disabled on this layer '
                         '(enable_quant() before exporting)')
    rec = _common_record(writer, name, layer)
    conv = dict(in_channels=layer.in_channels,
                out_channels=layer.out_channels,
                kernel_size=_pair(layer.kernel_size),
                stride=_pair(layer.stride), padding=_pair(layer.padding),
                dilation=_pair(layer.dilation), groups=layer.groups)
    return dict(rec, kind='conv', conv=conv)


def _linear_record(writer: BlobWriter, name: str,
                   layer: QuantLinear) -> Dict[str, Any]:
    if not layer.quant_enabled:
        raise ValueError(f'{name}: quantization is disabled on this layer '
                         '(enable_quant() before exporting)')
    rec = _common_record(writer, name, layer)
    return dict(rec, kind='linear',
                linear=dict(in_features=layer.in_features,
                            out_features=layer.out_features))


def _common_record(writer: BlobWriter, name: str,
                   layer: QuantInputMixin) -> Dict[str, Any]:
    """Weight codes, activation bounds, bias and offsets of a layer."""
    wc = weight_codes(layer)
    writer.add_packed(f'{name}.weight', wc['codes'], wc['code_bits'])
    writer.add_raw(f'{name}.weight_range', wc['range'])
    weight = dict(tensor=f'{name}.weight', bits=layer.w_bits,
                  code_bits=wc['code_bits'], zero_point=wc['zero'],
                  levels=wc['levels'], range=f'{name}.weight_range')
    act = _act_record(writer, f'{name}.act_quantizer', layer.act_quantizer,
                      layer.a_bits)
    bias = None
    if layer.bias is not None:
        bias = f'{name}.bias'
        writer.add_raw(bias, _np(layer.bias))
    return dict(method=layer.method, weight=weight, act=act, bias=bias,
                shift=_offset_record(writer, layer, name, 'shift'),
                scale=_offset_record(writer, layer, name, 'scale'))


@torch.no_grad()
def export_artifact(generator: nn.Module, out_dir: str,
                    generator_cfg: Optional[Mapping[str, Any]] = None
                    ) -> ExportResult:
    """Write the integer deployment artifact of a quantized generator.

    Args:
        generator: Network containing :class:`~odm_mm.layers.QuantConv`
            layers (e.g. ``ODMEditModel.generator``).
        out_dir: Folder to write ``manifest.json`` and ``tensors.bin`` into.
        generator_cfg: The FP32 generator's config (``type`` + kwargs) so
            that a runtime can rebuild it; see :func:`generator_info`.

    Returns:
        An :class:`ExportResult` with sizes and the storage figure.

    Raises:
        ValueError: if the generator has no QuantConv or a layer cannot be
            represented (non-zero padding mode, quantization disabled).
    """
    qlayers = [(n, m) for n, m in generator.named_modules()
               if isinstance(m, (QuantConv, QuantLinear))]
    if not qlayers:
        raise ValueError(f'{type(generator).__name__} has no QuantConv or '
                         'QuantLinear layer to export (swap_convs first)')
    writer = BlobWriter()
    records = {name: _layer_record(writer, name, layer)
               for name, layer in qlayers}
    attns = {name: _attention_record(writer, name, m)
             for name, m in generator.named_modules()
             if isinstance(m, QuantWindowAttention)}
    prefixes = tuple(f'{name}.' for name in records) + tuple(
        f'{name}.{k}_quant.' for name in attns for k in ('q', 'k', 'v',
                                                          'attn'))
    fp32 = []
    for key, value in generator.state_dict().items():
        if not key.startswith(prefixes):
            writer.add_raw(key, _np(value))
            fp32.append(key)
    storage = storage_bits(generator)
    manifest = dict(generator=generator_info(generator, generator_cfg),
                    fp32=fp32, quant_layers=records,
                    quant_attentions=attns,
                    storage=dict(paper_bits=storage,
                                 paper_k=round(storage / 32e3, 3)))
    manifest = write_artifact(out_dir, manifest, writer)
    sizes = [os.path.getsize(os.path.join(out_dir, f))
             for f in (MANIFEST, BLOB)]
    return ExportResult(out_dir=out_dir, manifest=manifest,
                        artifact_bytes=sum(sizes), blob_bytes=sizes[1],
                        storage_bits=storage)
