"""Integer ONNX form: standard QDQ that engines fuse into integer convs.

Every :class:`~odm_mm.layers.QuantConv` placeholder of a traced generator
(:mod:`odm_mm.deploy.onnx_trace`) becomes the standard QDQ unit

    DequantizeLinear(u: uint8, S_x, Z_x)            (activation codes)
    DequantizeLinear(d: int8, S_w[c], 0, axis=0)    (weight codes)
    DequantizeLinear(b: int32, S_x S_w[c], 0)       (bias)
      -> Conv -> QuantizeLinear(S_y, Z_y: uint8)

which onnxruntime (default session options), TensorRT and NPU toolchains
fuse into one integer convolution (onnxruntime: ``QLinearConv``, NHWC,
u8 x s8 with exact int32 accumulation and a float requantisation). The
low-bit grids are embedded in the 8-bit codes (:mod:`odm_mm.deploy.
onnx_grid`): 2/3/4-bit levels are codes ``u0 + m k``.

Where the activation codes of a layer come from:

* **requantised** (a conv whose output reaches the next quantized conv
  only through ``Relu`` and/or ``DepthToSpace``, e.g. EDSR's ``conv1 ->
  ReLU -> conv2``): the producer's ``QuantizeLinear`` *is* the consumer's
  activation quantizer. Its scale is the consumer's step ``s`` and its bias
  absorbs the consumer's lower level (``round((y - l0) / s)`` needs no
  float op); ``Relu`` is the lower bound of an integer ``Clip`` on the
  codes (code of ``relu = 0``), which also applies the upper clip; the
  consumer's offsets (Eq. 7/8) fold into the producer (``S_sigma > 0``
  scales its per-channel weight scales and bias, ``S_mu S_sigma`` adds to
  the bias, the ReLU bound becomes per channel: integer ``Max``/``Min``).
  Codes are ``u0 + k`` (m = 1).
* **from float** (any other input: the residual stream, the image, a
  concatenation): ``[Add S_mu] [Mul S_sigma] Clip(clip_lo, clip_hi)
  [Sub offset] QuantizeLinear(s, zero + u0)``, exactly the fake-quant
  rounding ``round((clip(x) - offset) / s)``; with ``m > 1`` the level
  ``k`` goes to code ``u0 + m k`` through ``DequantizeLinear(scale m)`` ->
  ``QuantizeLinear(scale 1, zero point u0)``.

Where the output goes: to its consumer's codes (above), else back to float
through ``QuantizeLinear`` -> ``DequantizeLinear`` at 8 bits over the
output's calibrated ``[min, max]`` (with 0 inside): the only rounding the
fake-quant model does not have (an integer conv always requantises its
output; e.g. the second conv of each EDSR block, added to the FP32 skip).
Its effect is measured in docs/deploy.md.

Exactness: integer sums are exact; the bias is rounded at ``S_x S_w``
(``<= S_x S_w / 2``, with the embedded fine scales ~1e-6 of a code); each
grid's nudge ``r`` is folded into the consumer's bias exactly for outputs
whose receptive field has no padding (see :mod:`odm_mm.deploy.onnx_grid`);
the image border keeps ``r`` times the weights of the padded taps, and the
weight grid's nudge ``delta_c`` times the summed input stays everywhere.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..layers import QuantConv
from .onnx_grid import ActGrid, D_MAX_SAFE
from .onnx_nodes import NodeBuilder, QuantInput, layer_weight_grid
from .onnx_tokens import emit_act_site, emit_linear
from .onnx_trace import DOMAIN, Traced

__all__ = ['integer_graph', 'IntegerPlan', 'FUSABLE_OPS', 'NARROW_PAD',
           'output_grid']

#: Ops allowed between a conv and the quantized conv it feeds for the
#: producer to requantise into the consumer's codes (codes commute with
#: a permutation; ReLU becomes the lower clip).
FUSABLE_OPS = ('Relu', 'DepthToSpace')
#: A fused conv with fewer output channels than this (an SR network's tail:
#: 3 RGB outputs) is computed with zero-weight channels up to this count and
#: sliced: onnxruntime 1.32's u8s8 kernels take 278 ms for a 64 -> 3 conv at
#: 1280x720 and 84 ms for 64 -> 16 (2 threads, this repository's CI machine
#: kind); the extra channels are exact zeros and are dropped.
NARROW_PAD = 16


@dataclass
class IntegerPlan:
    """How each quantized conv was expressed (for reports and tests).

    Attributes:
        inputs: name -> ``'requantised'`` or ``'from float'``.
        grids: name -> its input :class:`~odm_mm.deploy.onnx_grid.ActGrid`.
        weight_residual: name -> largest ``|delta_c|`` of its weight grid.
        float_outputs: name -> ``(S_y, Z_y)`` of outputs requantised back to
            float.
        full_range: Layers whose weight codes need the whole int8 range
            (more than 128 levels, e.g. 8-bit weights): exact on CPUs with
            VNNI/AMX dot products and on ARM; x86 kernels without them may
            saturate sums of two products.
        padded: Narrow convs computed with zero channels up to this count
            (:data:`NARROW_PAD`).
    """

    inputs: Dict[str, str] = field(default_factory=dict)
    grids: Dict[str, ActGrid] = field(default_factory=dict)
    weight_residual: Dict[str, float] = field(default_factory=dict)
    float_outputs: Dict[str, Tuple[float, int]] = field(default_factory=dict)
    full_range: List[str] = field(default_factory=list)
    padded: Dict[str, int] = field(default_factory=dict)


def output_grid(lo: float, hi: float) -> Tuple[float, int]:
    """``(S, Z)`` of the uint8 grid over ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    return float(np.float32(scale)), int(np.clip(np.rint(-lo / scale), 0,
                                                 255))


class _Layer:
    """Everything the graph needs of one quantized conv."""

    def __init__(self, name: str, layer: QuantConv, d_max: int) -> None:
        if layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
            raise ValueError(f'{name}: only numeric zero padding is '
                             'exported')
        self.name, self.layer = name, layer
        self.input = QuantInput(name, layer)
        self.wgrid, self.full_range = layer_weight_grid(name, layer, d_max)
        wq = layer.weight_quantizer(layer.weight.detach())
        self.wsum = wq.double().flatten(1).sum(1).numpy()
        self.bias = np.zeros(layer.out_channels) if layer.bias is None else \
            layer.bias.detach().double().numpy()
        self.producer: Optional[int] = None
        self.chain: List[Any] = []
        self.consumer: Optional[int] = None

    def codes_of_zero_relu(self) -> np.ndarray:
        """Per channel, the code the fake-quant layer gives a ReLU's 0
        (after its offsets): the lower clip of requantised codes."""
        q = self.input
        v = np.zeros(self.layer.in_channels)
        if q.shift is not None:
            v = v + q.shift
        if q.scale is not None:
            v = v * q.scale
        f = q.form
        v = np.clip(v, float(f.clip_lo), float(f.clip_hi))
        k = np.rint((v - q.offset) / q.step) + f.zero
        return np.clip(k, 0, f.levels - 1).astype(np.int64)

    def can_be_requantised(self, chain: Sequence[Any]) -> bool:
        """Whether a producer can emit this layer's codes through ``chain``.
        """
        if sum(n.op_type == 'Relu' for n in chain) > 1:
            return False
        q = self.input
        has_offsets = q.shift is not None or q.scale is not None
        if has_offsets and any(n.op_type == 'DepthToSpace' for n in chain):
            return False
        return q.scale is None or bool(np.all(q.scale > 0))


def _producer_chain(node, prod, cons, outputs) -> Tuple[Optional[Any],
                                                         List[Any]]:
    """The placeholder feeding ``node`` through fusable ops, and those ops
    (in graph order); ``(None, [])`` when the input comes from elsewhere or
    is used twice."""
    t, chain = node.input[0], []
    while True:
        p = prod.get(t)
        if p is None or len(cons[t]) != 1 or t in outputs:
            return None, []
        if p.domain == DOMAIN:
            return (p, chain[::-1]) if p.op_type == 'QConv' else (None, [])
        if p.op_type not in FUSABLE_OPS:
            return None, []
        chain.append(p)
        t = p.input[0]


def _index(node) -> int:
    return next(a.i for a in node.attribute if a.name == 'index')


def _conv(b: NodeBuilder, L: _Layer, u: str, w_scale: np.ndarray,
          bias: np.ndarray, out: Optional[str] = None,
          pad_to: int = 0) -> str:
    """The DQ -> Conv unit on codes ``u``; returns the float conv output.

    ``pad_to > out_channels`` appends output channels of zero weights (the
    caller slices them off): see :data:`NARROW_PAD`.
    """
    from onnx import helper
    g, mod = L.input.grid, L.layer
    wg = L.wgrid
    codes, w_scale = wg.codes, np.asarray(w_scale, np.float64)
    extra = max(0, pad_to - mod.out_channels)
    if extra:
        codes = np.concatenate(
            [codes, np.zeros((extra, ) + codes.shape[1:], codes.dtype)])
        w_scale = np.concatenate([w_scale, np.ones(extra)])
        bias = np.concatenate([bias, np.zeros(extra)])
    s_x = np.float32(g.scale)
    s_w = np.asarray(w_scale, np.float32)
    s_b = (s_x * s_w).astype(np.float32)
    b_int = np.rint(bias / s_b.astype(np.float64))
    if np.abs(b_int).max(initial=0) >= 2**31 - 1:
        raise ValueError(f'{L.name}: the bias does not fit int32 codes at '
                         f'scale S_x S_w (min {s_b.min():.3g})')
    chans = mod.out_channels + extra
    xd = L.input.dequantize(b, u)
    wd = b.node('DequantizeLinear', [
        b.const('w_codes', codes, codes.dtype), b.const('w_scale', s_w),
        b.const('w_zero', np.full(chans, wg.zero_point), codes.dtype)],
        axis=0)
    bd = b.node('DequantizeLinear', [
        b.const('b_codes', b_int, np.int32), b.const('b_scale', s_b),
        b.const('b_zero', np.zeros(chans), np.int32)], axis=0)
    y = out or f'{L.name}.conv_out'
    pad = [int(p) for p in mod.padding]
    b.nodes.append(helper.make_node(
        'Conv', [xd, wd, bd], [y], name=f'{L.name}.Conv',
        kernel_shape=list(mod.kernel_size), strides=list(mod.stride),
        pads=pad + pad, dilations=list(mod.dilation), group=mod.groups))
    return y


def _emit(L: _Layer, layers: Dict[int, _Layer], codes_in: Optional[str],
          out_ranges: Dict[str, Tuple[float, float]], plan: IntegerPlan,
          node, requant_outputs: bool) -> Tuple[NodeBuilder, Optional[str]]:
    """Nodes of one layer; returns them and the codes it made for its
    consumer (None if its output goes back to float)."""
    from onnx import helper
    b = NodeBuilder(L.name)
    u = codes_in if codes_in is not None else L.input.codes_from_float(
        b, node.input[0])
    # interior-exact fold of the input grid's nudge
    bias = L.bias + L.input.grid.residual * L.wsum
    w_scale = L.wgrid.scales.astype(np.float64)
    if L.consumer is None and not requant_outputs:
        _conv(b, L, u, w_scale, bias, out=node.output[0])
        return b, None
    if L.consumer is None:
        lo, hi = out_ranges[L.name]
        s_y, z_y = output_grid(lo, hi)
        plan.float_outputs[L.name] = (s_y, z_y)
        cout = L.layer.out_channels
        pad = NARROW_PAD if cout < NARROW_PAD else 0
        y = _conv(b, L, u, w_scale, bias, pad_to=pad)
        sy, zy = b.const('y_scale', s_y), b.const('y_zero', z_y, np.uint8)
        q = b.node('QuantizeLinear', [y, sy, zy])
        if pad:  # drop the zero channels (on the uint8 codes)
            q = b.node('Slice', [q, b.const('keep0', [0], np.int64),
                                 b.const('keep1', [cout], np.int64),
                                 b.const('keep_axis', [1], np.int64)])
            plan.padded[L.name] = pad
        b.node('DequantizeLinear', [q, sy, zy], out=node.output[0])
        return b, None
    C = layers[L.consumer]
    ci = C.input
    g = ci.grid
    sig = np.ones(L.layer.out_channels) if ci.scale is None else ci.scale
    mu = np.zeros(L.layer.out_channels) if ci.shift is None else ci.shift
    # round((sigma y + mu sigma - l0) / s) + u0 = the consumer's code
    bias = sig * bias + mu * sig - ci.level0
    y = _conv(b, L, u, w_scale * sig, bias)
    q = b.node('QuantizeLinear', [y, b.const('y_scale', g.step),
                                  b.const('y_zero', g.u0, np.uint8)])
    for op in C.chain:  # DepthToSpace on codes; ReLU becomes the clip
        if op.op_type != 'Relu':
            q = b.node(op.op_type, [q], **{a.name: helper.get_attribute_value(
                a) for a in op.attribute})
    lower = g.u0 + (C.codes_of_zero_relu() if any(
        n.op_type == 'Relu' for n in C.chain) else np.zeros(
            C.layer.in_channels, np.int64))
    upper = g.max_code
    if np.all(lower == lower[0]):
        q = b.node('Clip', [q, b.const('code_lo', lower[0], np.uint8),
                            b.const('code_hi', upper, np.uint8)])
    else:
        q = b.node('Max', [q, b.const('code_lo', lower.reshape(1, -1, 1, 1),
                                      np.uint8)])
        q = b.node('Min', [q, b.const('code_hi', upper, np.uint8)])
    return b, q


def integer_graph(traced: Traced, out_ranges: Dict[str, Tuple[float, float]],
                  d_max: int = D_MAX_SAFE, requant_outputs: bool = True
                  ) -> Tuple[Any, IntegerPlan]:
    """Replace the placeholders of ``traced.proto`` in place.

    ``QConv`` placeholders become the QDQ conv units above; ``QLinear`` and
    ``QAct`` (activation sites, e.g. attention matmul operands) are emitted
    by :mod:`odm_mm.deploy.onnx_tokens`.

    Args:
        traced: From :func:`~odm_mm.deploy.onnx_trace.trace_generator`.
        out_ranges: name -> calibrated ``[min, max]`` of each quantized
            conv's output (only those that go back to float are used).
        d_max: Largest int8 weight code (see :mod:`~odm_mm.deploy.
            onnx_grid`).
        requant_outputs: Requantise conv outputs that go back to float at
            8 bits (fused integer conv); False keeps those convs as float
            convolutions of the de-quantized codes (exact, not fused: for
            diagnostics and accuracy-first deployments).

    Returns:
        The model proto and the :class:`IntegerPlan`.
    """
    graph = traced.proto.graph
    nodes = list(graph.node)
    prod = {o: n for n in nodes for o in n.output}
    cons = defaultdict(list)
    for n in nodes:
        for i in n.input:
            cons[i].append(n)
    outputs = {o.name for o in graph.output}
    layers = {i: _Layer(name, mod, d_max)
              for i, (name, mod) in traced.modules.items()
              if isinstance(mod, QuantConv)}
    dropped = set()
    plan = IntegerPlan()
    for n in nodes:
        if n.domain != DOMAIN or n.op_type != 'QConv':
            continue
        L = layers[_index(n)]
        p, chain = _producer_chain(n, prod, cons, outputs)
        if p is not None and L.can_be_requantised(chain):
            L.producer, L.chain = _index(p), chain
            layers[L.producer].consumer = _index(n)
            dropped |= {id(c) for c in chain}
            L.input.choose_grid(max_m=1)
            plan.inputs[L.name] = 'requantised'
        else:
            L.input.choose_grid()
            plan.inputs[L.name] = 'from float'
        plan.grids[L.name] = L.input.grid
        plan.weight_residual[L.name] = float(np.abs(L.wgrid.residual).max())
        if L.full_range:
            plan.full_range.append(L.name)
    new_nodes, codes = [], {}
    for n in nodes:
        if id(n) in dropped:
            continue
        if n.domain != DOMAIN:
            new_nodes.append(n)
            continue
        i = _index(n)
        name, module = traced.modules[i]
        if n.op_type == 'QConv':
            L = layers[i]
            b, made = _emit(L, layers, codes.get(i), out_ranges, plan, n,
                            requant_outputs)
            if made is not None:
                codes[L.consumer] = made
        elif n.op_type == 'QLinear':
            b = emit_linear(name, module, n, d_max, plan)
        else:
            b = emit_act_site(name, module, n, plan)
        new_nodes.extend(b.nodes)
        graph.initializer.extend(b.inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return traced.proto, plan
