"""After-training diagnostics of finished benchmark runs.

For each W2A2 run's last checkpoint, on the Set5 LR images (fixed inputs,
one at a time; x4: bird, butterfly, head, woman):

* ``sum_sigma``: sum over quantized layers of sigma(x_i), the quantity L_V
  (Eq. 3) penalises, measured on the tensor each quantizer receives;
* ``nsr_act``: mean activation quantization noise-to-signal (MSE /
  variance, as :func:`odm_mm.calibration.quantization_error`);
* ``range_width``: mean width of the learned activation ranges;
* ``clip_frac``: mean share of activation elements outside the range;
* ``nsr_weight``: mean weight quantization noise-to-signal
  (``MSE(Q(W), W) / var(W)``) of the trained weights.

Each run's measures are cached in ``<run>/posthoc.json`` (the FP32 ones in
``<work_dir>/posthoc_fp32.json``); runs without a checkpoint (seeded from a
committed report, :mod:`odm_bench.seed`) keep the cached ones or are
skipped.

The FP32 teacher's ``sum_sigma`` is measured too (a run's model with the
FP32 weights loaded and quantization switched off). This tells whether L_V made the
features narrower than training without it did, and whether narrower
features meant a smaller quantization error.
"""
from __future__ import annotations

import glob
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config

from odm_mm.calibration import (QuantErrorObserver, observe,
                                weight_noise_to_signal)
from odm_mm.layers import QuantInputMixin

from .jsonio import dump_json, load_json
from .pipeline import read_rgb

__all__ = ['posthoc_diagnostics']


class _Probe(QuantErrorObserver):
    """Per layer: sigma of each input and the elements outside the range,
    on top of the activation quantization error, in the network's own
    (quantized) pass."""

    def __init__(self, conv: QuantInputMixin, quantized: bool) -> None:
        super().__init__(conv)
        self.quantized = quantized
        self.sig: List[float] = []
        self.clip: Optional[int] = 0
        self.n = 0

    @torch.no_grad()
    def update(self, x):  # noqa: D102
        self.sig.append(float(x.std()))
        self.n += x.numel()
        if not self.quantized:
            return
        q = self.conv.act_quantizer
        if not getattr(q, 'has_integer_form', True):
            self.clip = None  # a run-time range (DAQ): nothing to count
        elif self.clip is not None:
            form = q.integer_form()
            self.clip += int(((x < form.clip_lo) | (x > form.clip_hi)).sum())
        super().update(x)


def _inputs(data_root: str, scale: int,
            max_pixels: int = 10000) -> List[torch.Tensor]:
    """The Set5 LR images of at most ``max_pixels`` (x4: all but baby,
    which alone would double the time)."""
    paths = sorted(glob.glob(osp.join(data_root, 'Set5', 'LR_bicubic',
                                      f'X{scale}', '*.png')))
    imgs = [torch.tensor(read_rgb(p)).permute(2, 0, 1)[None].float() / 255.
            for p in paths]
    return [x for x in imgs if x.shape[-2] * x.shape[-1] <= max_pixels]


def _width(conv: QuantInputMixin) -> float:
    try:
        return float(conv.act_quantizer.range_width())
    except (NotImplementedError, ValueError):  # a run-time range (DAQ)
        return float('nan')


@torch.no_grad()
def _measure(model, inputs, quantized: bool = True) -> Dict[str, float]:
    gen = model.generator
    gen.eval()
    convs = [(n, m) for n, m in gen.named_modules()
             if isinstance(m, QuantInputMixin)]  # convs and Linears
    probes = {n: _Probe(m, quantized) for n, m in convs}
    with observe(convs, fp32=False, observers=probes):
        for x in inputs:
            gen(x)
    out = dict(sum_sigma=float(sum(np.mean(p.sig) for p in probes.values())))
    if quantized:
        out.update(
            nsr_act=float(np.mean([p.relative() for p in probes.values()])),
            nsr_weight=float(np.mean([
                weight_noise_to_signal(m.weight_quantizer, m.weight)
                for _, m in convs])),
            range_width=float(np.mean([_width(m) for _, m in convs])),
            clip_frac=None if any(p.clip is None for p in probes.values())
            else float(np.mean([p.clip / p.n for p in probes.values()])))
    return out


def posthoc_diagnostics(work_dir: str, data_root: str, scale: int = 4,
                        bits: int = 2) -> Dict[str, Dict[str, float]]:
    """``{run name: measures}`` for every finished W``bits`` run (+
    ``'fp32'``)."""
    from mmagic.registry import MODELS
    from mmengine.registry import DefaultScope
    import odm_mm.registry  # noqa: F401,E501  (registers ODMEditModel)
    inputs = _inputs(data_root, scale)
    out: Dict[str, Dict[str, float]] = {}
    cfg = None
    for run_dir in sorted(glob.glob(osp.join(work_dir, 'runs', '*'))):
        if not osp.isfile(osp.join(run_dir, 'result.json')) or \
                f'_w{bits}a{bits}' not in osp.basename(run_dir):
            continue
        cached = osp.join(run_dir, 'posthoc.json')
        if osp.isfile(cached):  # measured before (or seeded, seed.py)
            out[osp.basename(run_dir)] = load_json(cached)
            continue
        if not osp.isfile(osp.join(run_dir, 'last_checkpoint')):
            continue  # a seeded run without its checkpoint
        cfg = Config.fromfile(osp.join(run_dir, 'config.py'),
                              import_custom_modules=False)
        with DefaultScope.overwrite_default_scope('mmagic'):
            model = MODELS.build(cfg.model)
        with open(osp.join(run_dir, 'last_checkpoint')) as f:
            ckpt = torch.load(f.read().strip(), map_location='cpu')
        model.load_state_dict(ckpt['state_dict'])
        for _, m in model.quant_layers():
            m.sync_offset_flags()
        out[osp.basename(run_dir)] = _measure(model, inputs)
        dump_json(cached, out[osp.basename(run_dir)])
    fp32_cached = osp.join(work_dir, 'posthoc_fp32.json')
    if osp.isfile(fp32_cached):
        out['fp32'] = load_json(fp32_cached)
    elif cfg is not None:
        with DefaultScope.overwrite_default_scope('mmagic'):
            model = MODELS.build(cfg.model)
        model.init_weights()  # the FP32 checkpoint
        for _, m in model.quant_layers():
            m.disable_quant()
        out['fp32'] = _measure(model, inputs, quantized=False)
        dump_json(fp32_cached, out['fp32'])
    return out
