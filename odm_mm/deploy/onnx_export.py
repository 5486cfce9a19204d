"""Export a fake-quant ODM/PAMS generator to ONNX with QuantizeLinear/
DequantizeLinear (QDQ) nodes.

Each ``QuantConv`` becomes (ODM, Eq. 1 with lower bound ``a_l``)::

    [Add shift] -> [Mul scale] -> Clip(a_l, a_u) -> Sub(a_l)
      -> QuantizeLinear(s_a, zp=0:uint{k}) -> DequantizeLinear -> Add(a_l)
      -> Conv(., Add(DequantizeLinear(W codes:uint{k}, s_w, 0), w_l), bias)

``QuantizeLinear`` rounds half to even, as ``torch.round``; the explicit
``Clip`` keeps the codes in ``[0, 2^b - 1]`` even when the container type
``uint{k}`` is wider than ``b``. Tested: this is bit-exact to
:func:`odm_mm.quantizers.fake_quant` for every float32 input (the same
float operations in the same order). PAMS (symmetric) becomes
``Clip(-a, a) -> QuantizeLinear(a / q, 0:int{k}) -> DequantizeLinear`` and
weights ``DequantizeLinear(codes:int{k}, max|w| / q)``; torch computes
``x * q / a`` and ``c * m / q`` instead of dividing / multiplying by the
scale ``a / q``, so PAMS agrees to float32 rounding (1 ulp) per element.
Offsets are float initialisers holding the 4-bit-quantized values.

Containers (``k``): ONNX integer types exist for 2, 4 and 8 bits. Codes of
``b`` bits are stored in the smallest of these with ``k >= b``:
1-2 bits -> int2/uint2 (opset 25), 3-4 bits -> int4/uint4 (opset 21),
5-8 bits -> int8/uint8 (opset 17). 3-, 5-, 6- and 7-bit grids are exact
(Clip) but stored wider than their bit-width. ``container_bits=8`` forces
8-bit containers for runtimes without int2/int4 QDQ. The FP32 graph is
traced with torch's TorchScript exporter (``dynamo=False``, opset 17) with
a placeholder node per QuantConv, converted to the target opset by
``onnx.version_converter`` (which adapts ops whose signature changed, e.g.
ReduceMean at 18), and the placeholders are then replaced by the QDQ
subgraphs. Only zero padding (``padding_mode='zeros'``) is exported.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..layers.attention import QuantWindowAttention
from ..layers import QuantConv, quantize_offset
from ..layers.linear import QuantLinear
from .export import weight_codes

__all__ = ['export_onnx', 'OnnxExportResult', 'container_bits_for',
           'OPSET_FOR_CONTAINER', 'ORT_DISABLED_OPTIMIZERS', 'ort_session']

OPSET_FOR_CONTAINER = {2: 25, 4: 21, 8: 17}
ORT_DISABLED_OPTIMIZERS = ('WeightBiasQuantization', 'ClipQuantRewrite')
_DOMAIN = 'odm_mm'
_TRACE_OPSET = 17
_LAYERS: List[QuantConv] = []  # filled while tracing only


def container_bits_for(code_bits: int, minimum: Optional[int] = None) -> int:
    """Smallest ONNX integer width (2, 4, 8) holding ``code_bits`` codes."""
    if not 1 <= code_bits <= 8:
        raise ValueError(f'ONNX QDQ holds 1..8-bit codes, got {code_bits}')
    if minimum is not None and minimum not in OPSET_FOR_CONTAINER:
        raise ValueError(f'container_bits must be one of '
                         f'{sorted(OPSET_FOR_CONTAINER)}, got {minimum}')
    return next(k for k in sorted(OPSET_FOR_CONTAINER)
                if k >= code_bits and k >= (minimum or 0))


@contextlib.contextmanager
def _drop_placeholder_warnings():
    """Hide the C++ 'shape inference of odm_mm::QConv is missing' lines.

    The TorchScript exporter prints them straight to file descriptor 2 for
    every placeholder (they are replaced right after tracing); any other
    line written meanwhile is passed on to ``sys.stderr``.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors='replace').splitlines():
                if f'{_DOMAIN}::QConv' not in line:
                    sys.stderr.write(line + '\n')


def ort_session(path: str, **kwargs: Any):
    """An onnxruntime CPU session that computes the exported model as is.

    Two onnxruntime (1.32) graph optimisations are disabled
    (:data:`ORT_DISABLED_OPTIMIZERS`):

    * ``WeightBiasQuantization`` rewrites the float bias of a
      ``DQ -> Conv <- DQ`` unit into int32 codes of scale ``s_a * s_w``,
      i.e. rounds the FP32 bias (errors up to ``s_a s_w / 2`` per output:
      0.2 at 2 bits). The quantized model keeps its bias in FP32.
    * ``ClipQuantRewrite`` raises ("Unexpected data type for
      QuantizeLinear input y_zero_point") on int2/uint2/int4/uint4 zero
      points.

    Args:
        path: The ``.onnx`` file.
        **kwargs: Passed to ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort
    kwargs.setdefault('disabled_optimizers', list(ORT_DISABLED_OPTIMIZERS))
    kwargs.setdefault('providers', ['CPUExecutionProvider'])
    return ort.InferenceSession(path, **kwargs)


def _out_sizes(layer: QuantConv, sizes: Sequence[int]) -> List[int]:
    """Output shape of ``layer`` for an input of shape ``sizes``."""
    return list(sizes[:1]) + [layer.out_channels] + [
        (sizes[i + 2] + 2 * layer.padding[i] - layer.dilation[i] *
         (layer.kernel_size[i] - 1) - 1) // layer.stride[i] + 1
        for i in (0, 1)]


class _QConvMark(torch.autograd.Function):
    """Runs the QuantConv untraced; exports as a placeholder node that is
    replaced by the QDQ subgraph after tracing.

    Tracing is switched off inside (nested autograd Functions such as the
    STE round would otherwise land in a sub-block that breaks the
    TorchScript passes); the placeholder's output shape is set in
    :meth:`symbolic`.
    """

    @staticmethod
    def forward(ctx, x: Tensor, index: int) -> Tensor:  # noqa: D102
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return _LAYERS[index](x)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, x, index):  # noqa: D102
        out = g.op(f'{_DOMAIN}::QConv', x, index_i=index)
        sizes = x.type().sizes()
        if sizes is not None:
            out.setType(x.type().with_sizes(_out_sizes(_LAYERS[index],
                                                       sizes)))
        return out


class _Mark(nn.Module):

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return _QConvMark.apply(x, self.index)


@dataclass
class OnnxExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ``.onnx`` file.
        opset: Its default-domain opset.
        containers: Per quantized conv, ``{'weight': k, 'act': k}`` bits.
    """

    path: str
    opset: int
    containers: Dict[str, Dict[str, int]] = field(default_factory=dict)


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


def _f32(t: Tensor) -> np.float32:
    return np.float32(t.item())


@torch.no_grad()
def _layer_nodes(name: str, layer: QuantConv, x: str, y: str,
                 cont: Dict[str, int]) -> _Builder:
    """QDQ subgraph computing ``layer(x)`` into output ``y``.

    From the quantizers' :class:`~odm_mm.quantizers.IntegerForm`:
    ``Clip`` to the clip range, then ``QuantizeLinear`` /
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
    x = b.node('Clip', [x, b.const('act_min', _f32(form.clip_lo)),
                        b.const('act_max', _f32(form.clip_hi))])
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
    inputs = [xq, wq]
    if layer.bias is not None:
        inputs.append(b.const('bias', layer.bias.detach().cpu().numpy()))
    pad = list(layer.padding)
    b.nodes.append(helper.make_node(
        'Conv', inputs, [y], name=f'{name}.Conv',
        kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
        pads=pad + pad, dilations=list(layer.dilation), group=layer.groups))
    return b


def export_onnx(generator: nn.Module, path: str,
                input_shape: Optional[Sequence[int]] = None,
                container_bits: Optional[int] = None,
                dynamic: bool = True) -> OnnxExportResult:
    """Export the fake-quant generator to an ONNX QDQ model.

    Args:
        generator: Network with :class:`~odm_mm.layers.QuantConv` layers (a
            deep copy is exported; the network is not modified).
        path: Output ``.onnx`` file.
        input_shape: Example input shape used for tracing (default
            ``(1, C, 16, 16)`` with C the input channels of the first conv).
        container_bits: Force at least this integer width (2, 4 or 8) for
            every QDQ tensor; default: the smallest that holds the codes.
        dynamic: Make batch, height and width dynamic.

    Returns:
        An :class:`OnnxExportResult`.

    Raises:
        ValueError: on a layer ONNX cannot express (non-zero padding mode)
            or whose quantization is switched off.
    """
    import onnx
    from onnx import helper, version_converter

    tokens = [n for n, m in generator.named_modules()
              if isinstance(m, (QuantLinear, QuantWindowAttention))]
    if tokens:
        raise ValueError(
            f'ONNX QDQ export covers QuantConv layers only; this network has '
            f'{len(tokens)} quantized Linear/attention modules (e.g. '
            f'{tokens[0]}). Export it with odm_mm.deploy.export_artifact '
            '(tools/deploy/export.py without --onnx): the integer runtime '
            'covers them.')
    model = copy.deepcopy(generator).cpu().float().eval()
    model.requires_grad_(False)
    qlayers = [(n, m) for n, m in model.named_modules()
               if isinstance(m, QuantConv)]
    if not qlayers:
        raise ValueError('no QuantConv layer to export')
    for name, layer in qlayers:
        if layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
            raise ValueError(f'{name}: only numeric zero padding is exported')
        if not layer.quant_enabled:
            raise ValueError(f'{name}: quantization is disabled on this '
                             'layer (enable_quant() before exporting)')
    names = {}
    for i, (name, layer) in enumerate(qlayers):
        parent, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, child,
                _Mark(i))
        names[i] = (name, layer)
    if input_shape is None:
        first = next(m for m in model.modules()
                     if isinstance(m, (nn.Conv2d, _Mark)))
        chans = first.in_channels if isinstance(first, nn.Conv2d) else \
            qlayers[first.index][1].in_channels
        input_shape = (1, chans, 16, 16)
    buf = io.BytesIO()
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    _LAYERS[:] = [layer for _, layer in qlayers]
    try:
        with warnings.catch_warnings(), _drop_placeholder_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(
                model, (torch.zeros(*input_shape),), buf, dynamo=False,
                opset_version=_TRACE_OPSET, input_names=['input'],
                output_names=['output'],
                dynamic_axes={'input': axes, 'output': axes}
                if dynamic else None)
    finally:
        _LAYERS.clear()
    proto = onnx.load_from_string(buf.getvalue())
    containers = {name: _containers(layer, container_bits)
                  for name, layer in qlayers}
    opset = OPSET_FOR_CONTAINER[min(
        [8] + [k for c in containers.values() for k in c.values()])]
    if opset > _TRACE_OPSET:  # adapts ops whose signature changed
        proto = version_converter.convert_version(proto, opset)
    nodes = []
    for node in proto.graph.node:
        if node.domain != _DOMAIN:
            nodes.append(node)
            continue
        name, layer = names[next(a.i for a in node.attribute
                                 if a.name == 'index')]
        b = _layer_nodes(name, layer, node.input[0], node.output[0],
                         containers[name])
        nodes.extend(b.nodes)
        proto.graph.initializer.extend(b.inits)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid('', opset)])
    proto.ir_version = helper.find_min_ir_version_for(
        list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return OnnxExportResult(path=path, opset=opset, containers=containers)
