"""The deploy profile: every remaining float conv at 8 bits, for engines.

ODM (like PAMS, DAQ and DDTB) quantizes the residual body of an SR network
and keeps the head, the upsampler and the tail in FP32 (the paper's
setting, Sec. 4.1). On an integer engine those float convs dominate: at x4
the two upsampler convs of EDSR-baseline are 37% of the MACs, and the float
graph around them (layout reorders, ``DepthToSpace`` on float tensors) makes
a body-only integer model at best ~1.5x faster than FP32 on a CPU
(docs/deploy.md). :func:`deploy_profile` returns a copy of a trained
quantized generator whose remaining ``nn.Conv2d`` layers are also quantized,
W8A8, calibrated post-training on a few images:

* weights: PAMS's symmetric grid (``max|w| / 127`` per tensor), i.e. int8
  codes with zero point 0, exact in the integer ONNX form;
* activations: PAMS's symmetric grid ``[-alpha, alpha]`` at 8 bits, with
  ``alpha`` the largest ``|x|`` of the layer's input over the calibration
  images (measured in the network with the body quantized; PAMS's own rule,
  the mean per-image max, clipped bright images by 0.7 dB on Set5 'baby');
  a symmetric grid has ``l0 / s`` integer, so it is exact in uint8 codes
  (no nudge, :mod:`odm_mm.deploy.onnx_grid`).

The body's trained quantizers are not touched. The profile changes the
model's outputs (it adds 8-bit rounding where the trained model had FP32):
its PSNR cost is measured by ``tools/deploy/bench.py`` and reported in
docs/deploy.md. Torch-only.
"""
from __future__ import annotations

import copy
import re
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn

from ..layers import QuantConv
from ..swap import swap_convs
from .calib import as_batches, default_calibration_inputs, observe_ranges

__all__ = ['deploy_profile', 'float_convs', 'PROFILE_METHOD',
           'PROFILE_BITS']

#: Quantizer of the profile's extra layers (symmetric: exact int8 codes).
PROFILE_METHOD = 'pams'
#: Their weight and activation bit-width.
PROFILE_BITS = 8


def float_convs(generator: nn.Module) -> List[str]:
    """Qualified names of the ``nn.Conv2d`` layers that are not quantized.
    """
    return [n for n, m in generator.named_modules()
            if isinstance(m, nn.Conv2d) and not isinstance(m, QuantConv)]


@torch.no_grad()
def deploy_profile(generator: nn.Module, calib: Optional[Iterable] = None,
                   bits: int = PROFILE_BITS,
                   names: Optional[Sequence[str]] = None) -> nn.Module:
    """A copy of ``generator`` with its float convs quantized at ``bits``.

    Args:
        generator: A quantized generator (its QuantConv layers trained or
            calibrated); not modified.
        calib: Calibration inputs (a ``(N, C, H, W)`` tensor or an iterable
            of them, RGB in [0, 1]); default
            :func:`~odm_mm.deploy.calib.default_calibration_inputs`.
        bits: Weight and activation bit-width of the added layers (2-8).
        names: Which float convs to quantize (default: all of them,
            :func:`float_convs`).

    Returns:
        The profile model (eval mode).

    Raises:
        ValueError: if there is no float conv left to quantize, or a name is
            not one.
    """
    model = copy.deepcopy(generator).eval()
    todo = float_convs(model)
    if names is not None:
        unknown = [n for n in names if n not in todo]
        if unknown:
            raise ValueError(f'deploy_profile: {unknown[:3]} are not float '
                             f'convs of {type(model).__name__} (those are '
                             f'{todo[:6]})')
        todo = list(names)
    if not todo:
        raise ValueError(f'deploy_profile: {type(model).__name__} has no '
                         'float conv left to quantize')
    swap_convs(model, patterns=[re.escape(n) for n in todo],
               method=PROFILE_METHOD, w_bits=bits, a_bits=bits)
    inputs = as_batches(default_calibration_inputs() if calib is None
                        else calib)
    for name in todo:  # measured with quantization off, as calibration
        model.get_submodule(name).quant_enabled = False
    ranges = observe_ranges(model, todo, inputs, which='input')
    for name in todo:
        conv = model.get_submodule(name)
        alpha = max(abs(ranges[name][0]), abs(ranges[name][1]), 1e-8)
        conv.act_quantizer.init_from_range(-alpha, alpha)
        conv.weight_quantizer.init_from_weight(conv.weight)
        conv.quant_enabled = True
    return model.eval()
