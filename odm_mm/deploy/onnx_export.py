"""Export a fake-quant ODM/PAMS generator to ONNX.

Two forms of the same network (``export_onnx(..., form=...)``):

* ``'integer'`` (default): standard QDQ units that onnxruntime (default
  session options), TensorRT and NPU toolchains fuse into integer
  convolutions (onnxruntime: ``QLinearConv``, u8 x s8); the 2-/3-/4-bit
  grids are embedded exactly in 8-bit codes. Needs calibration inputs for
  the ranges of conv outputs that return to float (default: photographs
  shipped with scikit-image, :mod:`odm_mm.deploy.calib`). See
  :mod:`odm_mm.deploy.onnx_integer`.
* ``'storage'``: the smallest integer containers (int2/int4/int8 weight
  codes: the file is the storage figure's size), float compute, slower than
  FP32. See :mod:`odm_mm.deploy.onnx_storage`.

Both load in ``onnxruntime.InferenceSession(path)`` with default options
(:func:`ort_session` is that, on the CPU provider). Only zero-padded convs
are exported; the integer form also exports quantized Linear layers and
activation sites such as the window-attention matmul operands of SwinIR
(:mod:`odm_mm.deploy.onnx_tokens`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Sequence

from torch import nn

from ..layers import QuantConv
from ..layers.act_site import ActSite
from ..layers.linear import QuantLinear
from .calib import default_calibration_inputs, observe_ranges
from .onnx_grid import D_MAX_FULL, D_MAX_SAFE
from .onnx_integer import IntegerPlan, integer_graph
from .onnx_storage import (OPSET_FOR_CONTAINER, container_bits_for,
                           storage_graph)
from .onnx_trace import trace_generator

__all__ = ['export_onnx', 'OnnxExportResult', 'container_bits_for',
           'OPSET_FOR_CONTAINER', 'ort_session', 'optimized_ops', 'FORMS',
           'INTEGER_OPSET']

#: The ONNX forms of :func:`export_onnx`.
FORMS = ('integer', 'storage')
#: Opset of the integer form (per-axis QDQ since 13; widely supported).
INTEGER_OPSET = 17


@dataclass
class OnnxExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ``.onnx`` file.
        form: ``'integer'`` or ``'storage'``.
        opset: Its default-domain opset.
        containers: Storage form: per quantized conv ``{'weight': k,
            'act': k}`` bits (integer form: 8 everywhere).
        plan: Integer form: how each layer was expressed
            (:class:`~odm_mm.deploy.onnx_integer.IntegerPlan`).
        runtimes: Which runtimes can run the file (one line).
    """

    path: str
    form: str
    opset: int
    containers: Dict[str, Dict[str, int]] = field(default_factory=dict)
    plan: Optional[IntegerPlan] = None
    runtimes: str = ''

    @property
    def file_bytes(self) -> int:
        """Size of the file on disk."""
        return os.path.getsize(self.path)


def ort_session(path: str, threads: Optional[int] = None, **kwargs: Any):
    """``onnxruntime.InferenceSession(path)`` on the CPU provider.

    Default session options: both forms need no disabled optimisers.

    Args:
        path: The ``.onnx`` file.
        threads: ``intra_op_num_threads`` (default: onnxruntime's).
        **kwargs: Passed to ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort
    if threads is not None:
        opts = kwargs.setdefault('sess_options', ort.SessionOptions())
        opts.intra_op_num_threads = int(threads)
    kwargs.setdefault('providers', ['CPUExecutionProvider'])
    return ort.InferenceSession(path, **kwargs)


def optimized_ops(path: str) -> 'collections.Counter':
    """Op types of onnxruntime's optimized graph of ``path`` (default
    session options, CPU provider): how the file really runs, e.g.
    ``optimized_ops(p)['QLinearConv']`` integer convolutions."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(tmp, 'optimized.onnx')
        opts.log_severity_level = 3  # the 'hardware specific' note
        ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        graph = onnx.load(opts.optimized_model_filepath).graph
        return collections.Counter(n.op_type for n in graph.node)


def _runtimes(form: str, opset: int) -> str:
    if form == 'integer':
        return ('standard QDQ (opset 17, uint8 activations, int8 weights): '
                'onnxruntime >= 1.13 (QLinearConv), TensorRT, OpenVINO and '
                'QDQ NPU toolchains')
    need = {25: 'onnxruntime >= 1.22 (int2/uint2, ONNX opset 25)',
            21: 'onnxruntime >= 1.20 (int4/uint4, ONNX opset 21)',
            17: 'any onnxruntime with QDQ (opset 17)'}[opset]
    return (f'{need}; float compute (no integer kernels), for storage; '
            "use form='integer' to run fast")


def _check_layers(generator: nn.Module, form: str) -> None:
    tokens = [n for n, m in generator.named_modules()
              if isinstance(m, (QuantLinear, ActSite))]
    if tokens and form == 'storage':
        raise ValueError(
            f"the storage ONNX form covers QuantConv layers only; this "
            f"network has {len(tokens)} quantized Linear layers / "
            f"activation sites (e.g. {tokens[0]}): export it with "
            "form='integer'")


def export_onnx(generator: nn.Module, path: str,
                input_shape: Optional[Sequence[int]] = None,
                form: str = 'integer',
                calib: Optional[Iterable] = None,
                container_bits: Optional[int] = None,
                dynamic: bool = True,
                reduce_range: bool = False,
                requant_outputs: bool = True) -> OnnxExportResult:
    """Export the fake-quant generator to ONNX.

    Args:
        generator: Network with :class:`~odm_mm.layers.QuantConv` layers (a
            deep copy is exported; the network is not modified).
        path: Output ``.onnx`` file.
        input_shape: Example input shape used for tracing (default
            ``(1, C, 16, 16)`` with C the input channels of the first conv).
        form: ``'integer'`` (fast, default) or ``'storage'`` (smallest).
        calib: Integer form: calibration inputs (a ``(N, C, H, W)`` tensor
            or an iterable of them, RGB in [0, 1]) for the ranges of conv
            outputs that return to float; default
            :func:`~odm_mm.deploy.calib.default_calibration_inputs`.
        container_bits: Storage form: force at least this integer width
            (2, 4 or 8); default the smallest that holds the codes.
        dynamic: Make batch, height and width dynamic.
        reduce_range: Integer form: int8 weight codes within [-64, 63]
            instead of [-128, 127] (onnxruntime's ``reduce_range``): exact
            on x86 CPUs without VNNI, whose u8 x s8 kernels (``vpmaddubsw``)
            saturate a sum of two products of full-range codes; costs
            accuracy, because the weight grid's nudge (the per-channel
            residual of embedding ODM's float weight bounds in integer codes,
            multiplied by the summed input) doubles: on the EDSR teacher at
            W4A4 the Set5 PSNR difference to the fake-quant model is -0.024
            dB with it and +0.001 dB without (docs/deploy.md). Default False,
            as onnxruntime's own quantizer: exact on CPUs with VNNI / AMX /
            ARM dot products.
        requant_outputs: Integer form: requantise conv outputs that return
            to float (e.g. EDSR's second block conv, added to the FP32
            skip) at 8 bits so that they too run as integer convs (default);
            False keeps those convs float (exact, slower).

    Returns:
        An :class:`OnnxExportResult`.

    Raises:
        ValueError: on a layer the form cannot express (non-zero padding
            mode, quantization switched off, a method without integer
            form such as DAQ or DDTB's dynamic layers), naming it.
    """
    import onnx
    from onnx import helper
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if form == 'integer' and container_bits not in (None, 8):
        raise ValueError('container_bits is an option of the storage form; '
                         'the integer form uses 8-bit codes')
    _check_layers(generator, form)
    kinds = (QuantConv, ) if form == 'storage' else (QuantConv, QuantLinear,
                                                       ActSite)
    traced = trace_generator(generator, input_shape, dynamic, kinds)
    if form == 'storage':
        proto, opset, containers = storage_graph(traced, container_bits)
        plan = None
    else:
        names = [n for n, m in traced.modules.values()
                 if isinstance(m, QuantConv)]
        inputs = default_calibration_inputs() if calib is None else calib
        ranges = observe_ranges(traced.model, names, inputs)
        proto, plan = integer_graph(
            traced, ranges, D_MAX_SAFE if reduce_range else D_MAX_FULL,
            requant_outputs)
        opset = INTEGER_OPSET
        containers = {n: dict(weight=8, act=8) for n in names}
        del proto.opset_import[:]
        proto.opset_import.extend([helper.make_opsetid('', opset)])
    del proto.graph.value_info[:]
    proto.ir_version = helper.find_min_ir_version_for(
        list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return OnnxExportResult(path=path, form=form, opset=opset,
                            containers=containers, plan=plan,
                            runtimes=_runtimes(form, opset))
