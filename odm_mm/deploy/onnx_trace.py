"""Trace a fake-quant generator to ONNX with one placeholder per quantized
module.

Both ONNX forms (:mod:`odm_mm.deploy.onnx_integer`, the default, and
:mod:`odm_mm.deploy.onnx_storage`) start here: the FP32 part of the
generator is traced with torch's TorchScript exporter (``dynamo=False``,
opset 17; the dynamo exporter would need ``onnxscript``), each
:class:`~odm_mm.layers.QuantConv` is replaced for the trace by a
placeholder node ``odm_mm::QConv(index)`` (each
:class:`~odm_mm.layers.linear.QuantLinear` by ``odm_mm::QLinear``, each
activation site, e.g. a quantized window attention's matmul operand, by
``odm_mm::QAct``; the attention's own arithmetic is traced as it is), and
the form then replaces the placeholders by standard ONNX nodes. The placeholders run the
real module while tracing, so shapes downstream are right; tracing is
switched off inside them (nested autograd Functions such as the STE round
would otherwise land in a sub-block that breaks the TorchScript passes).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..layers import QuantConv
from ..layers.act_site import ActSite
from ..layers.linear import QuantLinear

__all__ = ['DOMAIN', 'Traced', 'trace_generator', 'PLACEHOLDER_OPS']

DOMAIN = 'odm_mm'
TRACE_OPSET = 17
#: Placeholder op type of each quantized module class.
PLACEHOLDER_OPS = {QuantConv: 'QConv', QuantLinear: 'QLinear',
                   ActSite: 'QAct'}
_MODULES: List[nn.Module] = []  # filled while tracing only


@contextlib.contextmanager
def _drop_placeholder_warnings():
    """Hide the C++ 'shape inference of odm_mm::Q... is missing' lines.

    The TorchScript exporter prints them straight to file descriptor 2 for
    every placeholder; any other line written meanwhile is passed on to
    ``sys.stderr``.
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
                if f'{DOMAIN}::Q' not in line:
                    sys.stderr.write(line + '\n')


def _out_sizes(module: nn.Module, sizes: Sequence[int]) -> List[int]:
    """Output shape of a placeholder's module for an input of ``sizes``."""
    if isinstance(module, QuantLinear):
        return list(sizes[:-1]) + [module.out_features]
    if isinstance(module, ActSite):
        return list(sizes)
    return list(sizes[:1]) + [module.out_channels] + [
        (sizes[i + 2] + 2 * module.padding[i] - module.dilation[i] *
         (module.kernel_size[i] - 1) - 1) // module.stride[i] + 1
        for i in (0, 1)]


class _Mark(torch.autograd.Function):
    """Runs the quantized module untraced; exports as a placeholder."""

    @staticmethod
    def forward(ctx, x: Tensor, index: int) -> Tensor:  # noqa: D102
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return _MODULES[index](x)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, x, index):  # noqa: D102
        module = _MODULES[index]
        op = next(v for k, v in PLACEHOLDER_OPS.items()
                  if isinstance(module, k))
        sizes = x.type().sizes()
        rank = len(sizes) if sizes is not None else 0
        out = g.op(f'{DOMAIN}::{op}', x, index_i=index, rank_i=rank)
        if sizes is not None:
            out.setType(x.type().with_sizes(_out_sizes(module, sizes)))
        return out


class _Placeholder(nn.Module):

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return _Mark.apply(x, self.index)


@dataclass
class Traced:
    """The traced graph and the modules behind its placeholders.

    Attributes:
        proto: The ``onnx.ModelProto`` (opset 17) with placeholder nodes.
        modules: ``index -> (qualified name, module)`` of the deep copy
            that was traced (float32, eval mode).
        model: That deep copy with the quantized modules in place.
    """

    proto: Any
    modules: Dict[int, Tuple[str, nn.Module]]
    model: nn.Module


def _first_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f'{type(model).__name__} has no Conv2d: pass '
                     'input_shape')


def trace_generator(generator: nn.Module,
                    input_shape: Optional[Sequence[int]] = None,
                    dynamic: bool = True,
                    kinds: Sequence[type] = (QuantConv, )) -> Traced:
    """Trace a deep copy of ``generator`` with placeholders.

    Args:
        generator: The fake-quant network (not modified).
        input_shape: Example input shape (default ``(1, C, 16, 16)``).
        dynamic: Make batch, height and width dynamic.
        kinds: Quantized module classes that become placeholders.

    Raises:
        ValueError: if there is no module of ``kinds`` to export.
    """
    import onnx
    model = copy.deepcopy(generator).cpu().float().eval()
    model.requires_grad_(False)
    if input_shape is None:
        input_shape = (1, _first_in_channels(model), 16, 16)
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, tuple(kinds))]
    if not found:
        raise ValueError(f'{type(generator).__name__} has no quantized '
                         'layer to export (swap_convs first)')
    modules = dict(enumerate(found))
    for i, (name, _) in modules.items():
        parent, _, child = name.rpartition('.')
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, _Placeholder(i))
    buf = io.BytesIO()
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    _MODULES[:] = [m for _, m in found]
    try:
        with warnings.catch_warnings(), _drop_placeholder_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(
                model, (torch.zeros(*input_shape), ), buf, dynamo=False,
                opset_version=TRACE_OPSET, input_names=['input'],
                output_names=['output'],
                dynamic_axes={'input': axes, 'output': axes}
                if dynamic else None)
    finally:
        _MODULES.clear()
    for i, (name, module) in modules.items():  # put the modules back
        parent, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, child,
                module)
    return Traced(proto=onnx.load_from_string(buf.getvalue()),
                  modules=modules, model=model)
