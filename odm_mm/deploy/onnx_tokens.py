"""Integer ONNX form of quantized Linear layers and activation sites.

For transformer restorers (SwinIR, :mod:`odm_mm.layers.attention`):

* a :class:`~odm_mm.layers.linear.QuantLinear` placeholder becomes
  ``codes_from_float -> DequantizeLinear(u, S_x, Z_x)`` and
  ``DequantizeLinear(d^T: int8, S_w[o], 0, axis=1)`` into ``MatMul``, then
  ``Add(bias)`` with the bias shaped to the input's rank (a 1-D bias lets
  onnxruntime fuse ``MatMul + Add`` into a float ``Gemm`` first). onnxruntime
  fuses ``DQ -> MatMul <- DQ`` into ``MatMulIntegerToFloat`` (u8 x s8,
  exact int32 sums, float output). The input grid's nudge ``r`` is folded
  into the bias exactly (``r * sum_i w[o, i]``; a Linear has no padding);
* an activation site (``QAct``: the four operands of a quantized window
  attention, ``q * scale``, ``k``, ``v`` and the softmax output, or a
  placement's site) becomes ``codes_from_float -> DequantizeLinear``: the
  fake-quant values (up to the grid's nudge ``r``, which multiplies the
  other operand and is not folded). onnxruntime moves the
  ``DequantizeLinear`` through the reshapes/transposes of the attention and
  fuses the two matmuls into ``MatMulIntegerToFloat`` on the codes.

Everything else of the attention (relative position bias, shift mask,
softmax, LayerNorm, residual adds) is the traced FP32 graph.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from .onnx_nodes import NodeBuilder, QuantInput, layer_weight_grid

__all__ = ['emit_linear', 'emit_act_site']


def _rank(node) -> int:
    for a in node.attribute:
        if a.name == 'rank':
            return int(a.i)
    return 3


def emit_linear(name: str, layer: nn.Module, node, d_max: int,
                plan: Any) -> NodeBuilder:
    """Nodes of one QuantLinear (see the module docstring).

    Args:
        name: Its qualified name.
        layer: The QuantLinear.
        node: Its placeholder (input 0: the float tokens; attribute
            ``rank``: their rank).
        d_max: Largest int8 weight code.
        plan: The :class:`~odm_mm.deploy.onnx_integer.IntegerPlan` to
            record the layer in.
    """
    q = QuantInput(name, layer)
    q.choose_grid()
    wgrid, full = layer_weight_grid(name, layer, d_max)
    b = NodeBuilder(name)
    u = q.codes_from_float(b, node.input[0], view=(-1, ))
    xd = q.dequantize(b, u)
    out = layer.out_features
    wd = b.node('DequantizeLinear', [
        b.const('w_codes', wgrid.codes.T, wgrid.codes.dtype),
        b.const('w_scale', wgrid.scales),
        b.const('w_zero', np.full(out, wgrid.zero_point), wgrid.codes.dtype)],
        axis=1)
    wq = layer.weight_quantizer(layer.weight.detach())
    bias = np.zeros(out) if layer.bias is None else \
        layer.bias.detach().double().numpy()
    bias = bias + q.grid.residual * wq.double().sum(1).numpy()
    y = b.node('MatMul', [xd, wd])
    shape = [1] * (_rank(node) - 1) + [out]
    b.node('Add', [y, b.const('bias', bias.reshape(shape))],
           out=node.output[0])
    plan.inputs[name] = 'from float'
    plan.grids[name] = q.grid
    plan.weight_residual[name] = float(np.abs(wgrid.residual).max())
    if full:
        plan.full_range.append(name)
    return b


def emit_act_site(name: str, site: nn.Module, node,
                  plan: Any) -> NodeBuilder:
    """``codes_from_float -> DequantizeLinear`` of one activation site."""
    q = QuantInput(name, site)
    q.choose_grid()
    b = NodeBuilder(name)
    u = q.codes_from_float(b, node.input[0])
    q.dequantize(b, u, out=node.output[0])
    plan.inputs[name] = 'from float'
    plan.grids[name] = q.grid
    return b
