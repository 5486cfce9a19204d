"""Benchmark figures: PSNR vs bits, conflict ratio (Fig. 2), side by side.

Each function takes the benchmark ``results`` dict, writes one PNG (Agg
backend, small: < 500 KB) and returns its path, or None when the results
hold nothing to plot.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ['plot_psnr_vs_bits', 'plot_conflict_ratio', 'plot_side_by_side',
           'texture_window']

_COLORS = {'pams': 'tab:red', 'odm_q': 'tab:orange', 'var_plain': 'tab:gray',
           'var_coop': 'tab:purple', 'offsets': 'tab:green',
           'odm': 'tab:blue', 'daq': 'tab:brown', 'ddtb': 'tab:pink',
           'wcc': 'tab:olive', 'odm24': 'tab:cyan'}


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_psnr_vs_bits(results: Dict, path: str) -> Optional[str]:
    """Y-PSNR vs bit-width per method and test set, FP32/bicubic as lines."""
    runs = {n: e for n, e in results['runs'].items() if not e.get('tag')}
    methods = [m for m in _COLORS if any(e['method'] == m
                                         for e in runs.values())]
    if not methods:
        return None
    plt = _plt()
    sets = list(results['preset']['test_sets'])
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4),
                             squeeze=False)
    for ax, s in zip(axes[0], sets):
        for m in methods:
            pts = sorted((e['bits'], e['metrics'][s]['psnr'])
                         for e in runs.values() if e['method'] == m)
            label = next(e['label'] for e in runs.values()
                         if e['method'] == m)
            ax.plot([b for b, _ in pts], [v for _, v in pts], 'o-',
                    color=_COLORS[m], label=label, ms=4)
        ax.axhline(results['fp32']['metrics'][s]['psnr'], color='k', ls='--',
                   lw=1, label='FP32')
        ax.axhline(results['bicubic'][s]['psnr'], color='k', ls=':', lw=1,
                   label='bicubic')
        ax.set_title(s)
        ax.set_xlabel('bits (W = A)')
        ax.set_xticks(sorted({e['bits'] for e in runs.values()}))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('Y-PSNR (dB)')
    axes[0][-1].legend(fontsize=7, loc='lower right')
    from .presets import network_label
    fig.suptitle(f'{network_label(results["preset"])}, preset '
                 f'{results["preset"]["name"]}', fontsize=10)
    fig.tight_layout()
    return _save(fig, path, plt)


def _smooth(v: List[float], k: int) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if len(v) < k or k < 2:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = (c[k:] - c[:-k]) / k
    return np.concatenate([v[:k - 1] * np.nan, out])


def plot_conflict_ratio(results: Dict, path: str) -> Optional[str]:
    """Fig. 2: share of elements where g_R and g_V disagree, per update."""
    series = [(n, e) for n, e in results['runs'].items()
              if 'conflict_ratio' in e.get('train', {})]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for n, e in series:
        it = [i for i, _ in e['train']['conflict_ratio']]
        v = [r for _, r in e['train']['conflict_ratio']]
        main = e['method'] == 'var_plain'
        color = _COLORS.get(e['method'], 'k')
        ax.plot(it, v, color=color, alpha=0.15, lw=0.6)
        ax.plot(it, _smooth(v, 25), color=color, lw=1.8 if main else 1.0,
                label=f'{n} (mean {np.mean(v):.2f})')
    ax.set_ylim(0, 1)
    ax.set_xlabel('QAT iteration')
    ax.set_ylabel('conflict ratio  P(g_R g_V < 0)')
    ax.set_title('Gradient conflict between L_R and L_V (cf. paper Fig. 2)',
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def texture_window(img: np.ndarray, size: int) -> Tuple[int, int]:
    """Top-left corner of the ``size`` window with most gradient energy."""
    g = img.astype(np.float32).mean(-1)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    c = np.pad(np.cumsum(np.cumsum(e, 0), 1), ((1, 0), (1, 0)))
    h, w = e.shape
    size = min(size, h, w)
    tot = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + \
        c[:-size, :-size]
    step = max(1, size // 8)
    sub = tot[::step, ::step]
    y, x = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return int(y * step), int(x * step)


def plot_side_by_side(results: Dict, path: str,
                      crop: int = 120) -> Optional[str]:
    """HR, bicubic, FP32 and the quantized runs on one test image."""
    from mmagic.datasets.transforms import MATLABLikeResize
    from mmagic.evaluation.metrics.psnr import psnr

    from .pipeline import read_rgb
    sample = results.get('sample', {})
    if not sample or not osp.isfile(sample.get('hr', '')):
        return None
    s = results['preset']['scale']
    lr = read_rgb(sample['lr'])
    hr = read_rgb(sample['hr'])[:lr.shape[0] * s, :lr.shape[1] * s]
    bic = MATLABLikeResize(keys=['img'], scale=s)(
        dict(img=lr.astype(np.float32)))['img']
    panels = [('HR', hr), ('Bicubic', np.clip(np.floor(bic + .5), 0,
                                              255).astype(np.uint8))]
    entries = [('FP32', results['fp32'])] + [
        (f'{e["label"]} W{e["bits"]}A{e["bits"]}', e)
        for n, e in sorted(results['runs'].items(),
                           key=lambda kv: (-kv[1]['bits'],
                                           kv[1]['method'] != 'pams'))
        if not e.get('tag') and e['method'] in ('pams', 'odm')]
    for label, e in entries:
        p = e.get('sample_sr')
        if p and osp.isfile(p):
            panels.append((label, read_rgb(p)))
    y, x = texture_window(hr, crop)
    plt = _plt()
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows),
                             squeeze=False, constrained_layout=True)
    for ax in axes.ravel():
        ax.axis('off')
    for ax, (label, img) in zip(axes.ravel(), panels):
        val = '' if label == 'HR' else '\n{:.2f} dB'.format(psnr(
            hr.astype(np.float64), img.astype(np.float64), s, 'HWC', 'Y'))
        ax.imshow(img[y:y + crop, x:x + crop], interpolation='nearest')
        ax.set_title(label + val, fontsize=8)
    fig.suptitle(f'{sample["set"]}/{sample["image"]} x{s} (crop; Y-PSNR of '
                 'the whole image)', fontsize=9)
    return _save(fig, path, plt, dpi=90)


def _save(fig, path: str, plt, dpi: int = 110) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
