"""Figures of the EDSR-baseline sweep: what L_V and the offsets do.

* :func:`plot_lambda_sweep`: PSNR vs lambda_V for Eq. 4 (plain sum) and
  Eq. 5 (cooperative gate), with the quantizer alone at the same budget as
  a line, and ``||g_V|| / ||g_R||`` on a second panel (is L_V strong
  enough to act at all?);
* :func:`plot_layer_error`: per-layer activation quantization
  noise-to-signal right after calibration, for runs that differ in how the
  offsets start (identity vs Eq. 6 statistics) and in the quantizer.

Same conventions as :mod:`.figures`: one small PNG each, None when the
results hold nothing to plot.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

from .figures import _plt, _save

__all__ = ['plot_lambda_sweep', 'plot_layer_error']


def _lambda(e: Dict, default: float) -> float:
    return e.get('overrides', {}).get('lambda_v', default)


def plot_lambda_sweep(results: Dict, path: str,
                      test_set: str = 'Set5') -> Optional[str]:
    """PSNR and gradient ratio vs lambda_V (plain L_V, W2A2 sweep runs)."""
    runs = results['runs']
    lam0 = results['preset']['lambda_v']
    series: Dict[str, List] = {'var_plain': [], 'var_coop': []}
    for name, e in runs.items():
        ov = e.get('overrides', {})
        if e['method'] in series and e['bits'] == 2 and \
                ov.get('lambda_v_norm', 'none') == 'none' and \
                'qat_iters' in ov and test_set in e['metrics']:
            series[e['method']].append(
                (_lambda(e, lam0), e['metrics'][test_set]['psnr'],
                 e['train'].get('grad_ratio_mean')))
    if not any(series.values()):
        return None
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = {'var_plain': '(a) Eq. 4, plain sum',
              'var_coop': '(b) Eq. 5, cooperative'}
    for key, pts in series.items():
        pts.sort()
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o-',
                label=labels[key])
        g = [(p[0], p[2]) for p in pts if p[2] is not None]
        ax2.plot([p[0] for p in g], [p[1] for p in g], 'o-',
                 label=labels[key])
    ctrl = next((e for n, e in runs.items() if e['method'] == 'odm_q'
                 and e.get('tag') and re.fullmatch(r's\d+', e['tag'])), None)
    if ctrl is not None and test_set in ctrl['metrics']:
        ax.axhline(ctrl['metrics'][test_set]['psnr'], color='tab:orange',
                   ls='--', label='quantizer alone (same budget)')
    ax.set_xscale('log')
    ax.set_xlabel('lambda_V')
    ax.set_ylabel(f'{test_set} PSNR (dB)')
    ax.set_title('W2A2 after the sweep budget')
    ax.legend(fontsize=8)
    ax2.set_xscale('log')
    ax2.set_yscale('log')
    ax2.set_xlabel('lambda_V')
    ax2.set_ylabel('mean ||g_V|| / ||g_R||')
    ax2.set_title('strength of L_V against L_R')
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_layer_error(results: Dict, path: str,
                     names: Optional[List[str]] = None) -> Optional[str]:
    """Per-layer activation noise-to-signal at step 0 of selected runs."""
    runs = results['runs']
    names = names or [n for n in runs if n.startswith(
        ('pams_w2a2', 'odm_q_w2a2', 'odm_w2a2', 'offsets_w2a2'))]
    curves = []
    for n in names:
        err = (runs.get(n, {}).get('train', {}).get('quant_error_step0')
               or {}).get('per_layer')
        if err:
            curves.append((n, [v['act'] for v in err.values()]))
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for n, vals in curves:
        ax.plot(range(len(vals)), vals, '.-', label=n, lw=1)
    ax.set_yscale('log')
    ax.set_xlabel('quantized layer (module order)')
    ax.set_ylabel('MSE(Q(x), x) / var(x)')
    ax.set_title('activation quantization error right after calibration')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path, plt)
