"""Benchmark stages: FP32 training, QAT runs, testing and complexity.

Glue (mmengine). Every training run is an mmengine :class:`Runner` built from
a config of :mod:`odm_bench.configs` (what ``tools/train.py`` runs), then
tested on the preset's sets with mmagic's PSNR/SSIM (Y channel, crop =
scale) by the same Runner. Each run writes ``<run dir>/result.json`` when it
is complete; a restarted benchmark skips those runs and resumes an
interrupted one from its last checkpoint.
"""
from __future__ import annotations

import gc
import math
import os
import os.path as osp
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from odm_mm.analysis.complexity import count_complexity

from .jsonio import dump_json, load_json  # noqa: F401  (re-exported)

__all__ = ['as_editor_checkpoint', 'machine_info', 'dump_json', 'load_json', 'summarize_log',
           'parse_metrics', 'run_training', 'bicubic_metrics',
           'super_resolve', 'read_rgb', 'test_only', 'upscale_metrics',
           'body_controls', 'interleaved_step_times']


def machine_info() -> Dict:
    """CPU/GPU, thread count and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    import mmagic
    import mmengine
    info = dict(cpu=cpu, cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(),
                platform=platform.platform(), python=platform.python_version(),
                torch=torch.__version__, mmengine=mmengine.__version__,
                mmagic=mmagic.__version__,
                gpu=torch.cuda.get_device_name(0)
                if torch.cuda.is_available() else None)
    try:
        info['load_avg_1min'] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def summarize_log(log: Dict, warmup: float = 0.1,
                  curve_every: int = 10) -> Dict:
    """Step-time statistics and curves of a QATRecorderHook log."""
    recs = log.get('iters', [])
    if not recs:
        return {}
    skip = min(int(len(recs) * warmup), len(recs) - 1)
    steps = [r['step_s'] for r in recs[skip:]]
    out: Dict = dict(iters=len(recs), step_s_median=statistics.median(steps),
                     step_s_mean=statistics.fmean(steps),
                     step_s_total=sum(r['step_s'] for r in recs))
    cpu = [r['step_cpu_s'] for r in recs[skip:] if 'step_cpu_s' in r]
    if cpu:
        out['step_cpu_s_median'] = statistics.median(cpu)
    ratios = [(r['iter'], round(r['conflict_ratio'], 5)) for r in recs
              if 'conflict_ratio' in r]
    if ratios:
        vals = [v for _, v in ratios]
        out['conflict_ratio'] = ratios
        out['conflict_ratio_mean'] = statistics.fmean(vals)
        half = vals[len(vals) // 2:]
        out['conflict_ratio_mean_2nd_half'] = statistics.fmean(half)
    keys = sorted({k for r in recs for k in r if k.startswith('loss')})
    out['curves'] = {
        k: [(r['iter'], round(r[k], 6)) for r in recs
            if k in r and r['iter'] % curve_every == 0] for k in keys}
    widths = [(r['iter'], round(r['range_width'], 5)) for r in recs
              if 'range_width' in r]
    if widths:
        out['curves']['range_width'] = widths
    out.update(_diagnostics(log, recs))
    return out


def _mean(vals: List[float]) -> Optional[float]:
    return statistics.fmean(vals) if vals else None


def _diagnostics(log: Dict, recs: List[Dict]) -> Dict:
    """What explains a result: gradient ratio, sum of sigma, ranges, error.

    ``grad_ratio_mean``: mean ``||g_V|| / ||g_R||`` over the updates;
    ``dominant_frac_mean``: mean share of elements with ``|g_V| > |g_R|``;
    ``loss_var_first/last``: L_V over the first/last 10% of iterations;
    ``range_width_start/end``: mean activation range width after
    calibration and after training; ``quant_error_step0``: mean activation /
    weight quantization noise-to-signal after calibration (OffsetHook).
    """
    out: Dict = {}
    n = max(len(recs) // 10, 1)
    for key in ('grad_ratio', 'dominant_frac', 'gate_weight'):
        v = [r[key] for r in recs if key in r and math.isfinite(r[key])]
        if v:
            out[f'{key}_mean'] = _mean(v)
    lv = [r['loss_var'] for r in recs if 'loss_var' in r]
    if lv:
        out['loss_var_first'] = _mean(lv[:n])
        out['loss_var_last'] = _mean(lv[-n:])
    for key, name in (('layer_widths_start', 'range_width_start'),
                      ('layer_widths_end', 'range_width_end')):
        w = log.get(key)
        if w:  # (NaN: a layer without a range of its own, left out)
            out[name] = _mean([v for v in w.values() if v == v])
    for key in ('quantizer_state_start', 'quantizer_state_end'):
        if log.get(key):
            out[key] = log[key]
    err = log.get('quant_error_step0')
    if err:
        out['quant_error_step0'] = dict(
            act=_mean([e['act'] for e in err.values()]),
            weight=_mean([e['weight'] for e in err.values()]),
            per_layer=err)
    return out


def parse_metrics(metrics: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """``{'Set5/PSNR': v, ...}`` -> ``{'Set5': {'psnr': v, 'ssim': ..}}``."""
    out: Dict[str, Dict[str, float]] = {}
    for key, val in metrics.items():
        if '/' not in key:
            continue
        name, metric = key.rsplit('/', 1)
        out.setdefault(name, {})[metric.lower()] = float(val)
    return out


def read_rgb(path: str) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB."""
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img.convert('RGB'))


@torch.no_grad()
def super_resolve(model, lr: np.ndarray) -> np.ndarray:
    """Run an mmagic editor's generator on one uint8 RGB image."""
    gen, dp = model.generator, model.data_preprocessor
    device = next(gen.parameters()).device
    x = torch.tensor(lr).permute(2, 0, 1)[None].float().to(device)
    mean = dp.mean.view(1, -1, 1, 1).to(device)
    std = dp.std.view(1, -1, 1, 1).to(device)
    was = gen.training
    gen.eval()
    try:
        y = gen((x - mean) / std) * std + mean
    finally:
        gen.train(was)
    return y[0].permute(1, 2, 0).clamp(0, 255).round().byte().cpu().numpy()


def _test(runner) -> Dict[str, float]:
    """``runner.test()`` metrics (QATRecorderHook's if it returns None)."""
    metrics = runner.test()
    if metrics is None:
        rec = [h for h in runner.hooks if type(h).__name__ ==
               'QATRecorderHook']
        metrics = rec[0].test_metrics if rec else None
    if not metrics:
        raise RuntimeError('the test loop returned no metrics')
    return metrics


def run_training(cfg: Config, result_path: str,
                 after: Optional[Callable] = None) -> Dict:
    """Train and test one config; skip if ``result_path`` exists.

    Args:
        cfg: Full config (``work_dir`` set).
        result_path: JSON written when the run is complete.
        after: ``after(model, result)`` hook (e.g. save sample images); its
            return dict is merged into the result.

    Returns:
        ``{'metrics', 'complexity', 'train', 'wall_s', 'config'}``.
    """
    if osp.isfile(result_path):
        print_log(f'[bench] {result_path} exists: skipping this run',
                  logger='current')
        return load_json(result_path)
    work_dir = cfg.work_dir
    os.makedirs(work_dir, exist_ok=True)
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        cfg.resume = True  # interrupted earlier: continue from there
    cfg.dump(osp.join(work_dir, 'config.py'))
    t0, c0 = time.perf_counter(), time.process_time()
    runner = Runner.from_cfg(cfg)
    t_build = time.perf_counter() - t0
    runner.train()
    t_train = time.perf_counter() - t0 - t_build
    c_train = time.process_time() - c0
    metrics = _test(runner)
    t_test = time.perf_counter() - t0 - t_build - t_train
    c_test = time.process_time() - c0 - c_train
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    model.eval()
    rep = count_complexity(model.generator, hr_size=(1080, 1920))
    log = load_json(osp.join(work_dir, 'bench_log.json'))
    result = dict(metrics=parse_metrics(metrics),
                  complexity=rep.totals(),
                  train=summarize_log(log),
                  wall_s=dict(build=t_build, train=t_train, test=t_test),
                  cpu_s=dict(build_train=c_train, test=c_test),
                  resumed=bool(cfg.resume),
                  config=osp.join(work_dir, 'config.py'))
    if hasattr(model, 'quantized_layers'):
        result['offsets'] = {
            n: dict(shift=bool(m.shift_enabled), scale=bool(m.scale_enabled))
            for n, m in model.quant_layers()}
    if after is not None:
        result.update(after(model, result) or {})
    dump_json(result_path, result)
    del runner, model
    gc.collect()
    return result


def _pairs(root: str, name: str, scale: int) -> List[tuple]:
    lr_dir = osp.join(root, name, 'LR_bicubic', f'X{scale}')
    out = []
    for f in sorted(os.listdir(osp.join(root, name, 'HR'))):
        stem, ext = osp.splitext(f)
        out.append((osp.join(lr_dir, f'{stem}x{scale}{ext}'),
                    osp.join(root, name, 'HR', f)))
    return out


def upscale_metrics(root: str, sets: List[str], scale: int,
                    upscale: Callable[[np.ndarray], np.ndarray]
                    ) -> Dict[str, Dict[str, float]]:
    """Y-PSNR/SSIM (border = scale, mmagic's functions) of ``upscale(lr)``.

    ``upscale`` maps a uint8 RGB LR image to a uint8 RGB SR image.
    """
    from mmagic.evaluation.metrics.psnr import psnr
    from mmagic.evaluation.metrics.ssim import ssim
    out = {}
    kw = dict(crop_border=scale, input_order='HWC', convert_to='Y')
    for name in sets:
        ps, ss = [], []
        for lr_path, hr_path in _pairs(root, name, scale):
            lr = read_rgb(lr_path)
            hr = read_rgb(hr_path)[:lr.shape[0] * scale, :lr.shape[1] * scale]
            up = upscale(lr).astype(np.float64)
            ps.append(psnr(hr.astype(np.float64), up, **kw))
            ss.append(ssim(hr.astype(np.float64), up, **kw))
        out[name] = dict(psnr=float(np.mean(ps)), ssim=float(np.mean(ss)))
    return out


def bicubic_metrics(root: str, sets: List[str],
                    scale: int) -> Dict[str, Dict[str, float]]:
    """Y-PSNR/SSIM (border = scale) of MATLAB-like bicubic upscaling."""
    from mmagic.datasets.transforms import MATLABLikeResize

    def bicubic(lr: np.ndarray) -> np.ndarray:
        up = MATLABLikeResize(keys=['img'], scale=scale)(
            dict(img=lr.astype(np.float32)))['img']
        return np.clip(np.floor(up + 0.5), 0, 255).astype(np.uint8)

    return upscale_metrics(root, sets, scale, bicubic)


@torch.no_grad()
def body_controls(cfg: Config, checkpoint: str, root: str, sets: List[str],
                  scale: int) -> Dict[str, Dict]:
    """How much of the FP32 accuracy is at stake in the quantized body.

    Tests the FP32 generator as is (a cross-check of the Runner's metrics
    with :func:`upscale_metrics`) and with ``conv_after_body`` zeroed, i.e.
    the whole residual body removed (EDSR: long skip, head and upsampler
    only). Quantizing the body cannot cost much more than removing it.

    Returns:
        ``{'fp32': metrics, 'no_body': metrics}`` (``no_body`` only for
        generators with a ``conv_after_body``).
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmagic.registry import MODELS
    model = MODELS.build(cfg.model)
    state = _load_checkpoint(checkpoint, map_location='cpu')
    model.load_state_dict(state.get('state_dict', state), strict=False)
    model.to('cuda' if torch.cuda.is_available() else 'cpu').eval()
    out = {'fp32': upscale_metrics(root, sets, scale,
                                   lambda lr: super_resolve(model, lr))}
    tail = getattr(model.generator, 'conv_after_body', None)
    if isinstance(tail, torch.nn.Conv2d):
        tail.weight.zero_()
        if tail.bias is not None:
            tail.bias.zero_()
        out['no_body'] = upscale_metrics(root, sets, scale,
                                         lambda lr: super_resolve(model, lr))
    return out


def as_editor_checkpoint(path: str, out: str) -> str:
    """``path`` if it is an mmagic editor checkpoint (``generator.*`` keys),
    else a copy with those keys written to ``out`` (once).

    Bare generator files (e.g. ``../shared/models/*.pth``) load into
    ODMEditModel as they are, but the FP32 test stage loads the file into a
    ``BaseEditModel`` with ``load_from``, which needs the prefix.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    if osp.isfile(out):
        return out
    ckpt = _load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    if any(k.startswith('generator.') for k in state):
        return path
    os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save(dict(meta=dict(source=osp.abspath(path)),
                    state_dict={f'generator.{k}': v
                                for k, v in state.items()}), out)
    return out


def test_only(cfg: Config, checkpoint: str, result_path: str,
              after: Optional[Callable] = None) -> Dict:
    """Test a given checkpoint with ``cfg`` (no training)."""
    if osp.isfile(result_path):
        return load_json(result_path)
    os.makedirs(cfg.work_dir, exist_ok=True)
    cfg.load_from, cfg.resume = checkpoint, False
    cfg.dump(osp.join(cfg.work_dir, 'config.py'))
    t0, c0 = time.perf_counter(), time.process_time()
    runner = Runner.from_cfg(cfg)
    metrics = _test(runner)
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    model.eval()
    result = dict(metrics=parse_metrics(metrics),
                  complexity=count_complexity(
                      model.generator, hr_size=(1080, 1920)).totals(),
                  train={}, wall_s=dict(test=time.perf_counter() - t0),
                  cpu_s=dict(test=time.process_time() - c0),
                  checkpoint=checkpoint,
                  config=osp.join(cfg.work_dir, 'config.py'))
    if after is not None:
        result.update(after(model, result) or {})
    dump_json(result_path, result)
    return result


def interleaved_step_times(runs: Dict[str, str], work_dir: str,
                           rounds: int = 10, warmup: int = 2) -> Dict:
    """Train-step time of several trained runs, measured turn by turn.

    Per-run medians from training logs are taken minutes apart and, on a
    shared machine, under different loads. Here every run's final
    checkpoint and optimizer are rebuilt from its ``config.py`` and one
    ``train_step`` of each run is timed in turn on the same batch, for
    ``rounds`` rounds, so all runs see the same conditions.

    Args:
        runs: ``{name: run dir}`` (with ``config.py`` and ``last_checkpoint``).
        work_dir: Scratch folder for the Runners' logs.
        rounds: Timed rounds (after ``warmup`` untimed ones).

    Returns:
        ``{name: {'step_s_median', 'step_cpu_s_median'}, '_rounds': n}``.
    """
    from mmengine.runner import load_checkpoint
    items, batch = [], None
    for name, run_dir in runs.items():
        cfg = Config.fromfile(osp.join(run_dir, 'config.py'))
        cfg.work_dir = osp.join(work_dir, name)
        cfg.resume, cfg.load_from = False, None
        runner = Runner.from_cfg(cfg)
        with open(osp.join(run_dir, 'last_checkpoint')) as f:
            load_checkpoint(runner.model, f.read().strip(),
                            map_location='cpu', logger='silent')
        wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
        if batch is None:
            batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
        runner.model.train()
        items.append((name, runner.model, wrapper, [], []))
    sync = torch.cuda.synchronize if torch.cuda.is_available() else \
        (lambda: None)
    for r in range(warmup + rounds):
        for name, model, wrapper, walls, cpus in items:
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            model.train_step(batch, wrapper)
            sync()
            if r >= warmup:
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
    out: Dict = {name: dict(step_s_median=statistics.median(w),
                            step_cpu_s_median=statistics.median(c))
                 for name, _, _, w, c in items}
    out['_rounds'] = rounds
    return out
