"""Report parts for ODM's published version (ECCV 2024) and the budget
curve: the published Table 5 ablation, the per-run diagnostics that
explain it (clipping factors, gate weight, noise-to-signal after
training) and the PSNR-vs-iterations curve of the ``b1200`` runs.

Each function takes the benchmark ``results`` dict and returns Markdown
(empty when the results hold none of its runs) or, for the figure, the PNG
path (None when there is nothing to plot).
"""
from __future__ import annotations

import os
import os.path as osp
import statistics
from typing import Dict, List, Optional

from .presets import METHODS

__all__ = ['PUBLISHED_ABLATION', 'table5_published', 'published_diagnostics',
           'budget_table', 'plot_budget_curve']

#: Rows of the published Table 5 (v2): baseline, (b) .. (e).
PUBLISHED_ABLATION = ['pams', 'odm_q', 'mr_coop', 'wcc', 'wcc_mr_plain',
                      'odm24']


def _sets(results: Dict) -> List[str]:
    return list(results['preset']['test_sets'])


def _f(v, fmt: str = '.3f') -> str:
    return '-' if v is None else format(v, fmt)


def table5_published(results: Dict, bits: int = 2) -> str:
    """The published ablation at W``bits``A``bits``: WCC, cooperative
    (similarity gate), mismatch regularisation; storage/BitOPs vs PAMS."""
    from .configs import method_features
    runs = results['runs']
    sets = _sets(results)
    rows = [(k, runs.get(f'{k}_w{bits}a{bits}')) for k in PUBLISHED_ABLATION]
    rows = [(k, e) for k, e in rows if e is not None]
    if not any(k in ('mr_coop', 'wcc', 'wcc_mr_plain', 'odm24')
               for k, _ in rows):
        return ''
    cols = ['Model', 'WCC', 'Coop.', 'MR', 'Storage', 'BitOPs'] + [
        f'{s} PSNR' for s in sets]
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    base = runs.get(f'pams_w{bits}a{bits}')
    for key, e in rows:
        m = METHODS[key]
        f = e.get('features') or method_features(m.config)
        c = e['complexity']
        if base is not None and key != 'pams':
            st = f'{c["storage_k"] - base["complexity"]["storage_k"]:+.2f}K'
            bo = f'{c["bitops_t"] - base["complexity"]["bitops_t"]:+.4f}T'
        else:
            st, bo = f'{c["storage_k"]:.1f}K', f'{c["bitops_t"]:.2f}T'
        cells = [f'{m.ablation} {e["label"]}'.strip(),
                 'yes' if f.get('wcc') else '-',
                 'yes' if f.get('coop') and f.get('mismatch') else '-',
                 'yes' if f.get('mismatch') else '-', st, bo]
        cells += [_f(e['metrics'].get(s, {}).get('psnr'), '.2f')
                  for s in sets]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _gamma(state: Optional[Dict]) -> List[float]:
    return [v['weight.gamma'] for v in (state or {}).values()
            if 'weight.gamma' in v]


def published_diagnostics(results: Dict) -> str:
    """Per run with a clipping factor or L_M: gamma (mean, min..max over
    layers) after calibration and after training, ||g_M||/||g_R|| and the
    gate's weight (means over the updates), weight and activation
    noise-to-signal at step 0 and after training (Set5)."""
    post = results.get('posthoc') or {}
    lines = ['| Run | Set5 PSNR | gamma start | gamma end | g_M/g_R | '
             'gate weight | NSR weight step 0 -> after | NSR act step 0 -> '
             'after |', '|---|---|---|---|---|---|---|---|']
    n = 0
    for name, e in results['runs'].items():
        t = e.get('train', {})
        g0 = _gamma(t.get('quantizer_state_start'))
        g1 = _gamma(t.get('quantizer_state_end'))
        if not (g0 or e['method'] in ('mr_coop', 'wcc_mr_plain', 'odm24',
                                      'odm_q', 'daq', 'pams')):
            continue
        n += 1

        def gs(g):
            return (f'{statistics.fmean(g):.3f} ({min(g):.2f}..'
                    f'{max(g):.2f})' if g else '-')

        q = t.get('quant_error_step0') or {}
        p = post.get(name, {})
        lines.append(
            f'| {name} | {_f(e["metrics"].get("Set5", {}).get("psnr"), ".2f")}'
            f' | {gs(g0)} | {gs(g1)} | {_f(t.get("grad_ratio_mean"), ".2e")}'
            f' | {_f(t.get("gate_weight_mean"), ".3f")} | '
            f'{_f(q.get("weight"), ".4f")} -> {_f(p.get("nsr_weight"), ".4f")}'
            f' | {_f(q.get("act"), ".4f")} -> {_f(p.get("nsr_act"), ".4f")} |')
    return '\n'.join(lines) if n else ''


def _curves(results: Dict) -> Dict[str, Dict]:
    return {n: e for n, e in results['runs'].items() if e.get('curve')}


def budget_table(results: Dict) -> str:
    """PSNR at each evaluated iteration of the budget-curve runs."""
    runs = _curves(results)
    if not runs:
        return ''
    iters = sorted({int(i) for e in runs.values() for i in e['curve']})
    sets = sorted({s for e in runs.values() for pt in e['curve'].values()
                   for s in pt}, key=lambda s: _sets(results).index(s)
                  if s in _sets(results) else 99)
    cols = ['Run'] + [f'{s} @{i}' for s in sets for i in iters]
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for name, e in runs.items():
        cells = [f'{e["label"]} ({name})']
        for s in sets:
            for i in iters:
                v = e['curve'].get(str(i), {}).get(s, {}).get('psnr')
                cells.append(_f(v, '.2f'))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_budget_curve(results: Dict, path: str) -> Optional[str]:
    """Y-PSNR vs QAT iterations (log x) per budget-curve run and set."""
    runs = _curves(results)
    if not runs:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sets = [s for s in _sets(results)
            if any(s in pt for e in runs.values()
                   for pt in e['curve'].values())]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 3.4),
                             squeeze=False)
    for ax, s in zip(axes[0], sets):
        for name, e in runs.items():
            pts = sorted((int(i), pt[s]['psnr'])
                         for i, pt in e['curve'].items() if s in pt)
            ax.plot([i for i, _ in pts], [v for _, v in pts], 'o-', ms=4,
                    label=e['label'])
        ax.axhline(results['fp32']['metrics'][s]['psnr'], color='k', ls='--',
                   lw=1, label='FP32')
        ax.set_xscale('log')
        ax.minorticks_off()
        ax.set_xticks(sorted({int(i) for e in runs.values()
                              for i in e['curve']}))
        ax.get_xaxis().set_major_formatter(
            matplotlib.ticker.ScalarFormatter())
        ax.set_title(f'{s}, W2A2')
        ax.set_xlabel('QAT iterations (one run each)')
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('Y-PSNR (dB)')
    axes[0][-1].legend(fontsize=7, loc='center right')
    fig.tight_layout()
    os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
