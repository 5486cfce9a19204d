"""Storage ONNX form: the smallest integer containers, float compute.

``export_onnx(..., form='storage')``. Each ``QuantConv`` placeholder of the
trace (:mod:`odm_mm.deploy.onnx_trace`) becomes (ODM, Eq. 1 with lower
bound ``a_l``)::

    [Add shift] -> [Mul scale] -> Max(a_l) -> Min(a_u) -> Sub(a_l)
      -> QuantizeLinear(s_a, zp=0:uint{k}) -> DequantizeLinear -> Add(a_l)
      -> Conv(., Add(DequantizeLinear(W codes:uint{k}, s_w, 0), w_l))
      -> Add(bias)

``QuantizeLinear`` rounds half to even, as ``torch.round``; the explicit
clip keeps the codes in ``[0, 2^b - 1]`` even when the container type
``uint{k}`` is wider than ``b``. These are the fake-quant model's float
operations in the same order, so the values agree to float32 rounding;
PAMS (symmetric) becomes ``Max(-a) -> Min(a) -> QuantizeLinear(a / q,
0:int{k}) -> DequantizeLinear``, weights ``DequantizeLinear(codes:int{k},
max|w| / q)`` (torch computes ``x * q / a``: the two can differ by 1 ulp
before rounding). Offsets are float initialisers holding their
4-bit-quantized values.

Containers (``k``): ONNX integer types exist for 2, 4 and 8 bits. Codes of
``b`` bits are stored in the smallest of these with ``k >= b``:
1-2 bits -> int2/uint2 (opset 25), 3-4 bits -> int4/uint4 (opset 21),
5-8 bits -> int8/uint8 (opset 17); ``container_bits=8`` forces 8-bit
containers. The file is small (weights at their bit-width), but no engine
fuses this graph into integer kernels (the lower bounds are float
``Sub``/``Add`` around the QDQ pairs): it computes float convolutions of
de-quantized values, slower than FP32. It loads in a default
``onnxruntime.InferenceSession`` (>= 1.20 for int4, >= 1.22 for int2: the
clip is ``Max``/``Min`` and the bias a separate ``Add`` because
onnxruntime's ``ClipQuantRewrite`` rejects a ``Clip`` before an int2/int4
``QuantizeLinear`` and ``WeightBiasQuantization`` would round a float bias
of a ``DQ -> Conv`` unit to int32). Use the integer form
(:mod:`odm_mm.deploy.onnx_integer`) to run fast.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..layers import QuantConv, quantize_offset
from .export import weight_codes
from .onnx_trace import DOMAIN, Traced

__all__ = ['storage_graph', 'container_bits_for', 'OPSET_FOR_CONTAINER']

OPSET_FOR_CONTAINER = {2: 25, 4: 21, 8: 17}


def container_bits_for(code_bits: int, minimum: Optional[int] = None) -> int:
    """Smallest ONNX integer width (2, 4, 8) holding ``code_bits`` codes."""
    if not 1 <= code_bits <= 8:
        raise ValueError(f'ONNX QDQ holds 1..8-bit codes, got {code_bits}')
    if minimum is not None and minimum not in OPSET_FOR_CONTAINER:
        raise ValueError(f'container_bits must be one of '
                         f'{sorted(OPSET_FOR_CONTAINER)}, got {minimum}')
    return next(k for k in sorted(OPSET_FOR_CONTAINER)
                if k >= code_bits and k >= (minimum or 0))


class _Builder:
    """Collects the nodes and initialisers replacing one placeholder."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits = prefix, [], []

    def const(self, name: str, value: Any, int_dtype: Any = None) -> str:
        """A float32 initialiser, or integer codes of ``int_dtype``."""
        from onnx import numpy_helper
        full = f'{self.prefix}.{name}'
        # ml_dtypes int2/int4 arrays are stored packed (raw_data)
        arr = np.asarray(value, np.float32) if int_dtype is None else \
            np.asarray(value).astype(np.int64).astype(int_dtype)
        self.inits.append(numpy_helper.from_array(arr, full))
        return full

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        from onnx import helper
        out = f'{self.prefix}.{op}_{len(self.nodes)}'
        self.nodes.append(helper.make_node(op, list(inputs), [out],
                                           name=out, **attrs))
        return out


def _int_type(bits: int, signed: bool) -> Any:
    """NumPy/ml_dtypes dtype of a ``bits``-wide ONNX integer tensor."""
    import ml_dtypes  # installed with onnx
    table = {(2, False): ml_dtypes.uint2, (2, True): ml_dtypes.int2,
             (4, False): ml_dtypes.uint4, (4, True): ml_dtypes.int4,
             (8, False): np.uint8, (8, True): np.int8}
    return table[(bits, signed)]


@torch.no_grad()
def _containers(layer: QuantConv, minimum: Optional[int]) -> Dict[str, int]:
    """Integer widths of the weight and activation QDQ tensors."""
    code_bits = weight_codes(layer)['code_bits']
    act_bits = max(layer.a_bits, layer.act_quantizer.integer_form().code_bits)
    return dict(weight=container_bits_for(code_bits, minimum),
                act=container_bits_for(act_bits, minimum))


def _f32(t: torch.Tensor) -> np.float32:
    return np.float32(t.item())


@torch.no_grad()
def _layer_nodes(name: str, layer: QuantConv, x: str, y: str,
                 cont: Dict[str, int]) -> _Builder:
    """QDQ subgraph computing ``layer(x)`` into output ``y``.

    From the quantizers' :class:`~odm_mm.quantizers.IntegerForm`:
    ``Max``/``Min`` to the clip range, then ``QuantizeLinear`` /
    ``DequantizeLinear`` with zero point 0 on ``x - offset`` (unsigned codes,
    asymmetric forms such as Eq. 1) or on ``x`` (signed codes, symmetric
    forms such as PAMS); weights are their integer codes (minus the zero
    point for symmetric forms) through ``DequantizeLinear`` (+ offset).
    """
    from onnx import helper
    b = _Builder(name)
    for kind, op in (('shift', 'Add'), ('scale', 'Mul')):
        if bool(getattr(layer, f'{kind}_enabled')):
            vec = quantize_offset(getattr(layer, kind), layer.offset_bits)
            x = b.node(op, [x, b.const(kind, vec.detach().cpu().numpy()
                                       .reshape(1, -1, 1, 1))])
    wc = weight_codes(layer)
    kw, ka = cont['weight'], cont['act']
    form = layer.act_quantizer.integer_form()
    s_a = b.const('act_scale', _f32(form.scale))
    zp_a = b.const('act_zero', np.int64(0), _int_type(ka, form.signed))
    x = b.node('Max', [x, b.const('act_min', _f32(form.clip_lo))])
    x = b.node('Min', [x, b.const('act_max', _f32(form.clip_hi))])
    if form.signed:
        q = b.node('QuantizeLinear', [x, s_a, zp_a])
        xq = b.node('DequantizeLinear', [q, s_a, zp_a])
    else:
        a_l = b.const('act_lower', _f32(form.offset))
        q = b.node('QuantizeLinear', [b.node('Sub', [x, a_l]), s_a, zp_a])
        xq = b.node('Add', [b.node('DequantizeLinear', [q, s_a, zp_a]), a_l])
    wform = wc['form']
    codes = wc['codes'] - wc['zero'] if wform.signed else wc['codes']
    w_z = b.const('weight_zero', np.int64(0), _int_type(kw, wform.signed))
    wq = b.node('DequantizeLinear', [
        b.const('weight_codes', codes, _int_type(kw, wform.signed)),
        b.const('weight_scale', _f32(wform.scale)), w_z])
    if not wform.signed:
        wq = b.node('Add', [wq, b.const('weight_lower', _f32(wform.offset))])
    pad = list(layer.padding)
    conv_out = y if layer.bias is None else f'{name}.conv_out'
    b.nodes.append(helper.make_node(
        'Conv', [xq, wq], [conv_out], name=f'{name}.Conv',
        kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
        pads=pad + pad, dilations=list(layer.dilation), group=layer.groups))
    if layer.bias is not None:
        bias = layer.bias.detach().cpu().numpy().reshape(1, -1, 1, 1)
        b.nodes.append(helper.make_node(
            'Add', [conv_out, b.const('bias', bias)], [y],
            name=f'{name}.bias_add'))
    return b


def storage_graph(traced: Traced, container_bits: Optional[int] = None
                  ) -> Tuple[Any, int, Dict[str, Dict[str, int]]]:
    """Replace the QConv placeholders of ``traced.proto`` by QDQ subgraphs.

    Args:
        traced: From :func:`~odm_mm.deploy.onnx_trace.trace_generator`.
        container_bits: Force at least this width (2, 4 or 8) for every
            QDQ tensor; default: the smallest that holds the codes.

    Returns:
        ``(proto, opset, containers)`` with ``containers[name] = {'weight':
        k, 'act': k}``.
    """
    from onnx import helper, version_converter
    proto = traced.proto
    containers = {name: _containers(layer, container_bits)
                  for name, layer in traced.modules.values()}
    opset = OPSET_FOR_CONTAINER[min(
        [8] + [k for c in containers.values() for k in c.values()])]
    if opset > proto.opset_import[0].version:  # adapts changed ops
        proto = version_converter.convert_version(proto, opset)
    nodes = []
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        name, layer = traced.modules[next(a.i for a in node.attribute
                                          if a.name == 'index')]
        b = _layer_nodes(name, layer, node.input[0], node.output[0],
                         containers[name])
        nodes.extend(b.nodes)
        proto.graph.initializer.extend(b.inits)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid('', opset)])
    return proto, opset, containers


