"""After-training diagnostics of finished benchmark runs.

For each run's last checkpoint, on the Set5 LR images (fixed inputs, one at
a time):

* ``sum_sigma``: sum over quantized layers of sigma(x_i), the quantity L_V
  (Eq. 3) penalises, measured on the tensor each quantizer receives;
* ``nsr_act``: mean activation quantization noise-to-signal
  (:func:`odm_mm.calibration.quantization_error`);
* ``range_width``: mean width of the learned activation ranges;
* ``clip_frac``: mean share of activation elements outside the range.

The FP32 teacher's ``sum_sigma`` is measured too (a run's model with the
FP32 weights loaded and quantization switched off). This tells whether L_V made the
features narrower than training without it did, and whether narrower
features meant a smaller quantization error.
"""
from __future__ import annotations

import glob
import os.path as osp
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import Config

from odm_mm.calibration import quantization_error
from odm_mm.layers import QuantConv

from .pipeline import read_rgb

__all__ = ['posthoc_diagnostics']


class _Probe:
    def __init__(self, conv: QuantConv) -> None:
        self.conv, self.sig, self.clip, self.n = conv, [], 0, 0

    @torch.no_grad()
    def update(self, x):  # noqa: D102
        self.sig.append(float(x.std()))
        q = self.conv.act_quantizer.integer_form()
        self.clip += int(((x < q.clip_lo) | (x > q.clip_hi)).sum())
        self.n += x.numel()


def _inputs(data_root: str, scale: int) -> List[torch.Tensor]:
    paths = sorted(glob.glob(osp.join(data_root, 'Set5', 'LR_bicubic',
                                      f'X{scale}', '*.png')))
    return [torch.tensor(read_rgb(p)).permute(2, 0, 1)[None].float() / 255.
            for p in paths]


@torch.no_grad()
def _measure(model, inputs, quantized: bool = True) -> Dict[str, float]:
    gen = model.generator
    gen.eval()
    convs = [(n, m) for n, m in gen.named_modules()
             if isinstance(m, QuantConv)]
    probes = {n: _Probe(m) for n, m in convs}
    for n, m in convs:
        m.observer = probes[n]
    try:
        for x in inputs:
            gen(x)
    finally:
        for _, m in convs:
            m.observer = None
    sum_sigma = float(sum(np.mean(p.sig) for p in probes.values()))
    if not quantized:
        return dict(sum_sigma=sum_sigma)
    err = quantization_error(gen, inputs)
    return dict(
        sum_sigma=sum_sigma,
        nsr_act=float(np.mean([e['act'] for e in err.values()])),
        range_width=float(np.mean([float(m.act_quantizer.range_width())
                                   for _, m in convs])),
        clip_frac=float(np.mean([p.clip / p.n for p in probes.values()])))


def posthoc_diagnostics(work_dir: str, data_root: str,
                        scale: int = 4) -> Dict[str, Dict[str, float]]:
    """``{run name: measures}`` for every finished run (+ ``'fp32'``)."""
    from mmagic.registry import MODELS
    from mmengine.registry import DefaultScope
    import odm_mm.registry  # noqa: F401,E501  (registers ODMEditModel)
    inputs = _inputs(data_root, scale)
    out: Dict[str, Dict[str, float]] = {}
    cfg = None
    for run_dir in sorted(glob.glob(osp.join(work_dir, 'runs', '*'))):
        if not osp.isfile(osp.join(run_dir, 'result.json')):
            continue
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
    if cfg is not None:
        with DefaultScope.overwrite_default_scope('mmagic'):
            model = MODELS.build(cfg.model)
        model.init_weights()  # the FP32 checkpoint
        for _, m in model.quant_layers():
            m.disable_quant()
        out['fp32'] = _measure(model, inputs, quantized=False)
    return out
