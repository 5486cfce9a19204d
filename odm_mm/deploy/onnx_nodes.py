"""Building blocks of the integer ONNX form: node builder and quantized
inputs.

:class:`NodeBuilder` collects the nodes and initialisers replacing one
placeholder. :class:`QuantInput` is a quantized input as the integer form
sees it: the activation quantizer's :class:`~odm_mm.quantizers.
IntegerForm`, the Eq. 7/8 offsets the fake-quant layer applies before it,
and (once chosen) the uint8 :class:`~odm_mm.deploy.onnx_grid.ActGrid`;
:meth:`QuantInput.codes_from_float` emits the exact fake-quant rounding
``round((clip(x*) - offset) / s)`` on a float tensor. Used by the convs
(:mod:`odm_mm.deploy.onnx_integer`), the Linear layers and the activation
sites such as attention operands (:mod:`odm_mm.deploy.onnx_tokens`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..layers import quantize_offset
from .export import weight_codes
from .onnx_grid import (ActGrid, D_MAX_FULL, WeightGrid, act_grid,
                        weight_grid, weight_grid_u8)

__all__ = ['NodeBuilder', 'QuantInput', 'layer_weight_grid']


class NodeBuilder:
    """Collects the nodes and initialisers of one layer.

    Args:
        prefix: Name prefix of every node, tensor and initialiser (the
            layer's qualified name).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits = prefix, [], []

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        """An initialiser ``<prefix>.<name>`` of ``value`` as ``dtype``."""
        from onnx import numpy_helper
        full = f'{self.prefix}.{name}'
        self.inits.append(numpy_helper.from_array(
            np.asarray(value).astype(dtype), full))
        return full

    def node(self, op: str, inputs: Sequence[str], out: Optional[str] = None,
             **attrs: Any) -> str:
        """Append ``op(inputs)``; returns its (only) output name."""
        from onnx import helper
        out = out or f'{self.prefix}.{op}_{len(self.nodes)}'
        self.nodes.append(helper.make_node(op, list(inputs), [out],
                                           name=f'{out}.node', **attrs))
        return out


def _offsets(module: nn.Module) -> Tuple[Optional[np.ndarray],
                                         Optional[np.ndarray]]:
    """The Eq. 7/8 vectors the fake-quant layer applies (None if off)."""
    out = []
    for kind in ('shift', 'scale'):
        if bool(getattr(module, f'{kind}_enabled', False)):
            vec = quantize_offset(getattr(module, kind), module.offset_bits)
            out.append(vec.detach().double().cpu().numpy())
        else:
            out.append(None)
    return out[0], out[1]


class QuantInput:
    """One quantized input: form, offsets and uint8 grid.

    Args:
        name: Qualified name of the layer (for messages).
        module: A QuantConv / QuantLinear (offsets, ``act_quantizer``) or an
            activation site (``act_quantizer`` only).

    Raises:
        ValueError: if the method has no integer form (run-time ranges:
            DAQ, DDTB's dynamic layers), naming the layer.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        if not getattr(module, 'quant_enabled', True):
            raise ValueError(f'{name}: quantization is disabled on this '
                             'layer (enable_quant() before exporting)')
        self.name = name
        try:
            self.form = module.act_quantizer.integer_form()
        except ValueError as err:
            raise ValueError(f'{name}: its activation quantizer has no '
                             f'integer form to export ({err})') from err
        f = self.form
        self.step = float(f.scale)
        self.offset = float(f.offset)
        self.level0 = self.offset - f.zero * self.step
        self.shift, self.scale = _offsets(module)
        self.grid: Optional[ActGrid] = None

    def choose_grid(self, max_m: Optional[int] = None) -> ActGrid:
        """Pick (and keep) the uint8 grid, see :func:`act_grid`."""
        self.grid = act_grid(self.step, self.level0, self.form.levels, max_m)
        return self.grid

    def codes_from_float(self, b: NodeBuilder, x: str,
                         view: Sequence[int] = (1, -1, 1, 1)) -> str:
        """Float tensor ``x`` -> uint8 codes of the grid.

        ``[Add shift] [Mul scale] Clip [Sub offset] QuantizeLinear(s, zero
        + u0)``; with ``m > 1`` the level ``k`` then goes to code ``u0 + m
        k`` through ``DequantizeLinear(scale m)`` -> ``QuantizeLinear(1,
        u0)``. ``view`` is the offsets' broadcast shape.
        """
        f, g = self.form, self.grid
        if self.shift is not None:
            x = b.node('Add', [x, b.const('shift', self.shift.reshape(view))])
        if self.scale is not None:
            x = b.node('Mul', [x, b.const('scale', self.scale.reshape(view))])
        x = b.node('Clip', [x, b.const('clip_lo', float(f.clip_lo)),
                            b.const('clip_hi', float(f.clip_hi))])
        if self.offset != 0.0:
            x = b.node('Sub', [x, b.const('offset', self.offset)])
        step = b.const('step', self.step)
        if g.m == 1:
            return b.node('QuantizeLinear', [x, step, b.const(
                'code_zero', f.zero + g.u0, np.uint8)])
        k = b.node('QuantizeLinear', [x, step, b.const('k_zero', f.zero,
                                                       np.uint8)])
        zero = b.const('zero8', 0, np.uint8)
        km = b.node('DequantizeLinear', [k, b.const('m', float(g.m)), zero])
        return b.node('QuantizeLinear', [km, b.const('one', 1.0),
                                         b.const('u0', g.u0, np.uint8)])

    def dequantize(self, b: NodeBuilder, u: str,
                   out: Optional[str] = None) -> str:
        """``DequantizeLinear(u, S, Z)``: the represented float values."""
        g = self.grid
        return b.node('DequantizeLinear', [
            u, b.const('x_scale', np.float32(g.scale)),
            b.const('x_zero', g.zero_point, np.uint8)], out=out)


def layer_weight_grid(name: str, layer: nn.Module,
                      d_max: int) -> Tuple[WeightGrid, bool]:
    """The 8-bit weight grid of a QuantConv / QuantLinear and whether it
    needed the full 8-bit range (see :class:`IntegerPlan`)."""
    try:
        wc = weight_codes(layer)
    except ValueError as err:
        raise ValueError(f'{name}: its weight quantizer has no integer form '
                         f'to export ({err})') from err
    wf = wc['form']
    grid = (wc['codes'], float(wf.scale),
            float(wf.offset) - wf.zero * float(wf.scale))
    try:
        return weight_grid(*grid, d_max), False
    except ValueError:
        pass  # e.g. 8-bit weights: 256 levels need the whole 8-bit range
    try:
        return weight_grid(*grid, D_MAX_FULL), True
    except ValueError:
        return weight_grid_u8(*grid), True
