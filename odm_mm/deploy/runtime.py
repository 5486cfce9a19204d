"""Integer reference inference of an exported ODM/PAMS artifact.

Independent of the training code: this module imports neither
:mod:`odm_mm.layers` nor :mod:`odm_mm.quantizers` nor :mod:`odm_mm.swap`;
it reads the artifact (:mod:`odm_mm.deploy.format`), rebuilds the FP32
generator from the class and kwargs named in the manifest, and replaces each
quantized conv by :class:`IntegerConv2d` (each quantized Linear and window
attention by their counterparts in :mod:`odm_mm.deploy.runtime_tokens`).

:class:`IntegerConv2d` quantizes its input to integer codes ``A`` (offsets
first, then Eq. 1 / PAMS exactly as the manifest specifies), convolves them
with the integer weight codes ``C`` with exact accumulation and only then
applies the scales. With ``x_q = a_l + s_a A`` and ``w_q = w_l + s_w C``::

    y = s_a s_w sum(A C) + s_a w_l sum(A) + a_l s_w sum_valid(C)
        + a_l w_l count_valid + bias

where the sums run over the receptive field and zero padding contributes
nothing: a padded position is a float 0, not ``a_l``, so ``sum_valid(C)``
and ``count_valid`` only count kernel taps that fall on the image
(``conv(mask, C)`` and ``conv(mask, 1)`` with a mask of ones padded by
zeros). PAMS has ``a_l = w_l = 0`` and signed codes.

Exact accumulation: the default backend runs ``conv2d`` in float64 on the
integer-valued code tensors. Every product ``A C`` (``|A|, |C| < 2^8``) and
every partial sum is an integer below ``K 2^16`` (``K`` taps), exactly
representable while below ``2^53``, so float64 addition is exact in any order
(checked: ``K < 2^37``; CPU float64 convolution is im2col + GEMM, no
Winograd/FFT). ``accumulate='int64'`` uses ``unfold`` + int64 ``matmul``
instead (slow; the tests use it as the independent check). The affine terms
are evaluated in float64 and cast to the input dtype; everything outside the
quantized convs is the FP32 network as is.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .format import read_artifact
from .records import ACCUMULATE, LayerRecord, as_tensor, form_of
from .runtime_tokens import IntegerLinear, IntegerWindowAttention

__all__ = ['IntegerConv2d', 'LayerRecord', 'form_of', 'build_generator',
           'load_runtime']

class IntegerConv2d(LayerRecord, nn.Module):
    """A quantized conv computed on integer codes (one manifest record).

    Args:
        record: ``manifest["quant_layers"][name]``.
        tensors: The artifact's tensors (from :func:`read_artifact`).
        accumulate: ``'float64'`` (exact, fast) or ``'int64'``.
    """

    def __init__(self, record: Mapping[str, Any],
                 tensors: Mapping[str, np.ndarray],
                 accumulate: str = 'float64') -> None:
        super().__init__()
        self.load_record(record, tensors, accumulate)
        conv = record['conv']
        self.stride, self.padding = tuple(conv['stride']), tuple(
            conv['padding'])
        self.dilation, self.groups = tuple(conv['dilation']), conv['groups']
        self.in_channels = conv['in_channels']
        self.out_channels = conv['out_channels']

    # ------------------------------------------------------------ helpers
    def int_conv(self, a: Tensor, c: Tensor,
                 groups: Optional[int] = None) -> Tensor:
        """Exact ``sum(a * c)`` over each receptive field (float64 out).

        ``a`` and ``c`` hold integers; the layer's stride, padding and
        dilation apply, ``groups`` defaults to the layer's.
        """
        g = self.groups if groups is None else groups
        if self.accumulate == 'float64':
            return F.conv2d(a.double(), c.double(), None, self.stride,
                            self.padding, self.dilation, g)
        n, _, h, w = a.shape
        kh, kw = c.shape[-2:]
        cols = F.unfold(a.double(), (kh, kw), self.dilation, self.padding,
                        self.stride).round().long()  # (N, I*kh*kw, L)
        cols = cols.view(n, g, -1, cols.shape[-1])
        wmat = c.round().long().reshape(g, c.shape[0] // g, -1)
        out = torch.einsum('gok,ngkl->ngol', wmat, cols)
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) \
            // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) \
            // self.stride[1] + 1
        return out.reshape(n, -1, oh, ow).double()

    def zero_point_terms(self, codes: Tensor) -> Tuple[Tensor, Tensor,
                                                       Tensor]:
        """``sum(A)``, ``sum_valid(C)`` and ``count_valid`` per output.

        Channel sums first (exact integers), so each is one single-channel
        (per group) convolution; the all-ones mask is zero-padded by the
        convolution, so padded taps count neither in ``sum_valid(C)`` nor in
        ``count_valid``.
        """
        n, cin, h, w = codes.shape
        g, rep = self.groups, self.out_channels // self.groups
        c = self.w_codes.double()
        ones = torch.ones((g, 1) + tuple(c.shape[-2:]), dtype=torch.float64,
                          device=codes.device)
        a_sum = codes.double().view(n, g, cin // g, h, w).sum(2)
        sum_a = self.int_conv(a_sum, ones, g).repeat_interleave(rep, 1)
        mask = torch.ones((1, g, h, w), dtype=torch.float64,
                          device=codes.device)
        sum_c = self.int_conv(mask, c.sum(1, keepdim=True), g)
        count = self.int_conv(mask, ones, g).repeat_interleave(rep, 1) * (
            cin // g)
        return sum_a, sum_c, count

    # ------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        for kind in self.offsets:
            vec = self.offset_vector(kind, x.dtype).view(1, -1, 1, 1)
            x = x + vec if kind == 'shift' else x * vec
        codes, s_a, a_l = self.act_codes(x)
        s_w, w_l = self.weight_affine(x.dtype)
        y = (s_a * s_w) * self.int_conv(codes, self.w_codes)
        if a_l != 0.0 or w_l != 0.0:
            sum_a, sum_c, count = self.zero_point_terms(codes)
            y = y + (s_a * w_l) * sum_a + (a_l * s_w) * sum_c \
                + (a_l * w_l) * count
        if self.bias is not None:
            y = y + self.bias.double().view(1, -1, 1, 1)
        return y.to(x.dtype)

    def extra_repr(self) -> str:  # noqa: D102
        return (f'{self.in_channels}, {self.out_channels}, '
                f'method={self.method}, w_bits={self.w_bits}, '
                f'a_bits={self.a_bits}, offsets={self.offsets}, '
                f'accumulate={self.accumulate}')


def build_generator(info: Mapping[str, Any]) -> nn.Module:
    """Construct the FP32 generator named by ``manifest["generator"]``."""
    if info.get('kwargs') is None:
        raise ValueError(
            f'the artifact records no constructor kwargs for '
            f'{info["module"]}.{info["class"]}; pass the FP32 generator '
            'to load_runtime(generator=...)')
    obj = importlib.import_module(info['module'])
    for part in info['class'].split('.'):
        obj = getattr(obj, part)
    return obj(**info['kwargs'])


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _module(model: nn.Module, name: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f'{what} {name!r} is not a module of '
                         f'{type(model).__name__}') from err


def load_runtime(path: Union[str, Tuple[Dict, Dict]],
                 generator: Optional[nn.Module] = None,
                 dtype: torch.dtype = torch.float32,
                 accumulate: str = 'float64') -> nn.Module:
    """Rebuild the generator with integer convs from an artifact.

    Args:
        path: Artifact folder, or ``(manifest, tensors)`` already read.
        generator: FP32 network to fill (default: built from the manifest's
            class and kwargs). It is modified in place.
        dtype: dtype of the float parts (``torch.float64`` for a reference
            with negligible float error).
        accumulate: Backend of the exact integer sums, see
            :class:`IntegerConv2d`.

    Returns:
        The network in eval mode; feed it inputs of ``dtype``.

    Raises:
        ValueError: if a quantized layer is missing or has another geometry,
            or the FP32 tensors do not match the network's state dict.
    """
    manifest, tensors = read_artifact(path) if isinstance(path, str) \
        else path
    model = generator if generator is not None else build_generator(
        manifest['generator'])
    for name, rec in manifest.get('quant_attentions', {}).items():
        _set_submodule(model, name, IntegerWindowAttention(
            rec, tensors, _module(model, name, 'quantized attention'),
            accumulate))
    for name, rec in manifest['quant_layers'].items():
        old = _module(model, name, 'quantized layer')
        if rec.get('kind', 'conv') == 'linear':
            geo = rec['linear']
            if not isinstance(old, nn.Linear) or (
                    old.in_features, old.out_features) != (
                        geo['in_features'], geo['out_features']):
                raise ValueError(f'{name}: the network has {old!r}, the '
                                 f'artifact a Linear with {geo}')
            _set_submodule(model, name, IntegerLinear(rec, tensors,
                                                      accumulate))
            continue
        geo = rec['conv']
        if not isinstance(old, nn.Conv2d) or (
                old.in_channels, old.out_channels, list(old.kernel_size),
                old.groups) != (geo['in_channels'], geo['out_channels'],
                                geo['kernel_size'], geo['groups']):
            raise ValueError(f'{name}: the network has {old!r}, the artifact '
                             f'a conv with {geo}')
        _set_submodule(model, name, IntegerConv2d(rec, tensors, accumulate))
    state = {k: torch.from_numpy(np.array(tensors[k]))
             for k in manifest['fp32']}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f'FP32 tensors do not match the network: missing '
                         f'{missing[:5]}, unexpected {unexpected[:5]}')
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()
