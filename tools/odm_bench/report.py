"""Benchmark report: paper-shaped tables, target checks, plots.

Turns the ``results.json`` of :class:`~odm_bench.benchmark.Benchmark`
into ``benchmarks.md`` (Table 1 / Table 5 shaped tables, step times, target
checks, scope), a copy of the JSON, and PNG figures
(:mod:`odm_bench.figures`).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from .figures import plot_conflict_ratio, plot_psnr_vs_bits, plot_side_by_side
from .published import (budget_table, plot_budget_curve,
                        published_diagnostics, table5_published)
from .sweep_figures import plot_lambda_sweep, plot_layer_error
from .configs import method_features
from .presets import ABLATION, METHODS, network_label
from .targets import TARGETS, check_targets, targets_md

__all__ = ['TARGETS', 'check_targets', 'table1', 'table5', 'speed_table',
           'sweep_table', 'diagnostics_table', 'posthoc_table',
           'console_table',
           'write_report', 'relativize']

def _sets(results: Dict) -> List[str]:
    return list(results['preset']['test_sets'])


def _ps(m: Dict, s: str) -> str:
    v = m.get(s)
    return f'{v["psnr"]:.2f} | {v["ssim"]:.4f}' if v else '- | -'


def _cx(e: Dict) -> str:
    c = e.get('complexity')
    return f'{c["storage_k"]:.1f}K | {c["bitops_t"]:.2f}T' if c else '- | -'


def _header(results: Dict, first: List[str]) -> List[str]:
    sets = _sets(results)
    cols = first + [f'{s} {m}' for s in sets for m in ('PSNR', 'SSIM')]
    return ['| ' + ' | '.join(cols) + ' |',
            '|' + '---|' * len(cols)]


def table1(results: Dict) -> str:
    """Table 1 shape: FP32, bicubic, then PAMS / DAQ (training-free, QAT,
    variants) / DDTB (conv inputs, official placement) / ODM-q / ODM per
    bit-width."""
    lines = _header(results, ['Model', 'Bit', 'Storage', 'BitOPs'])
    sets = _sets(results)

    def row(label, bit, e):
        cells = [label, str(bit), _cx(e)] + [_ps(e['metrics'], s)
                                             for s in sets]
        lines.append('| ' + ' | '.join(cells) + ' |')

    row(f'{results["preset"].get("model_name", "EDSR")} (FP32)', 32,
        results['fp32'])
    row('Bicubic', '-', dict(metrics=results['bicubic']))
    nobody = results.get('fp32_controls', {}).get('no_body')
    if nobody:
        row('FP32 without its body (control)', 32, dict(metrics=nobody))
    runs = results['runs']
    for bits in sorted({r['bits'] for r in runs.values()}, reverse=True):
        for key in ('pams', 'daq_free', 'daq', 'daq_clip', 'daq_std8',
                    'ddtb', 'ddtb_place', 'ddtb_off', 'odm_q', 'odm', 'wcc',
                    'odm24'):
            e = runs.get(f'{key}_w{bits}a{bits}')
            if e is not None:
                row(e['label'], bits, e)
    return '\n'.join(lines)


def table5(results: Dict, bits: int = 2) -> str:
    """Table 5 shape: the ablation at W``bits``A``bits``."""
    runs = results['runs']
    base = runs.get(f'pams_w{bits}a{bits}')
    lines = _header(results, ['Model', 'Coop.', 'Var. Reg.', 'Dist. Off.',
                              'Storage', 'BitOPs'])
    sets = _sets(results)
    for key in ['pams', 'odm_q'] + ABLATION[1:]:
        e = runs.get(f'{key}_w{bits}a{bits}')
        if e is None:
            continue
        m = METHODS[key]
        f = e.get('features') or method_features(m.config)
        c = e['complexity']
        if base is not None and key != 'pams':
            ds = c['storage_k'] - base['complexity']['storage_k']
            db = c['bitops_t'] - base['complexity']['bitops_t']
            ps = 100 * ds / base['complexity']['storage_k']
            pb = 100 * db / base['complexity']['bitops_t']
            st = f'{ds:+.2f}K ({ps:+.2f}%)'
            bo = f'{db:+.4f}T ({pb:+.3f}%)'
        else:
            st, bo = f'{c["storage_k"]:.1f}K', f'{c["bitops_t"]:.2f}T'
        label = f'{m.ablation} {e["label"]}'.strip()
        cells = [label, 'yes' if f['coop'] else '-',
                 'yes' if f['var_loss'] else '-',
                 'yes' if f['offsets'] else '-',
                 st, bo] + [_ps(e['metrics'], s) for s in sets]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def speed_table(results: Dict) -> str:
    """Train-step times (interleaved measurement and training logs)."""
    runs = results['runs']
    speed = results.get('step_times', {})
    lines = ['| Run | Step wall (s) | vs PAMS | Step CPU (s) | vs PAMS | '
             'Step wall in training (s) | Train wall (s) | Conflict ratio '
             '(mean, 2nd half) |', '|---|---|---|---|---|---|---|---|']
    fp = results['fp32'].get('train', {})
    if fp:
        lines.append(f'| FP32 (batch {results["preset"]["fp32_batch"]}) | '
                     f'- | - | - | - | {fp["step_s_median"]:.3f} | '
                     f'{results["fp32"]["wall_s"].get("train", 0):.0f} | - |')

    def cell(name, key, ref):
        v = speed.get(name, {}).get(key)
        r = speed.get(ref, {}).get(key)
        return (f'{v:.3f}' if v else '-',
                f'{v / r:.2f}x' if v and r else '-')

    for name, e in runs.items():
        t = e.get('train', {})
        if not t:
            continue
        ref = f'pams_w{e["bits"]}a{e["bits"]}'
        w, wr = cell(name, 'step_s_median', ref)
        c, cr_ = cell(name, 'step_cpu_s_median', ref)
        cr = (f'{t["conflict_ratio_mean"]:.3f}, '
              f'{t["conflict_ratio_mean_2nd_half"]:.3f}'
              if 'conflict_ratio_mean' in t else '-')
        lines.append(f'| {name} | {w} | {wr} | {c} | {cr_} | '
                     f'{t["step_s_median"]:.3f} | '
                     f'{e["wall_s"]["train"]:.0f} | {cr} |')
    if speed:
        lines += ['', f'Step wall / CPU: medians of {speed.get("_rounds")} '
                  'train steps per run (batch '
                  f'{results["preset"]["qat_batch"]}), measured turn by turn '
                  'on one batch after training, so every run saw the same '
                  'machine load. "In training": median over the run\'s own '
                  'iterations (load varied between runs).']
    return '\n'.join(lines)


def sweep_table(results: Dict) -> str:
    """Runs with a tag (the sweep) vs their control: the untagged run of
    the same method, or, for a run at another budget (``qat_iters``), the
    quantizer alone at that budget (``odm_q_..._s<iters>``)."""
    runs = results['runs']
    sets = _sets(results)
    # (budget-curve runs have their own table)
    tagged = [(n, e) for n, e in runs.items()
              if e.get('tag') and not e.get('curve')]
    if not tagged:
        return ''
    lines = ['| Run | Changed | ' + ' | '.join(
        f'{s} PSNR (vs control)' for s in sets) + ' |',
        '|---|---|' + '---|' * len(sets)]
    for name, e in [(n, e) for n, e in runs.items()
                    if not e.get('tag') and any(
                        t['method'] == e['method'] and t['bits'] == e['bits']
                        for _, t in tagged)] + tagged:
        ref = runs.get(f'{e["method"]}_w{e["bits"]}a{e["bits"]}')
        iters = e.get('overrides', {}).get('qat_iters')
        if iters is not None:  # a shorter budget: its quantizer-alone run
            ref = runs.get(f'odm_q_w{e["bits"]}a{e["bits"]}_s{iters}', ref)
        cells = []
        for s in sets:
            if s not in e['metrics']:
                cells.append('-')
                continue
            v = e['metrics'][s]['psnr']
            d = v - ref['metrics'][s]['psnr'] if ref and e.get('tag') else 0
            cells.append(f'{v:.2f} ({d:+.2f})' if e.get('tag') else
                         f'{v:.2f}')
        changed = ', '.join(f'{k}={v}' for k, v in e.get('overrides',
                                                         {}).items()
                            if k != 'test_sets')
        lines.append(f'| {name} | {changed or "default"} | ' +
                     ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _f(v, fmt: str = '.3f') -> str:
    return '-' if v is None else format(v, fmt)


def diagnostics_table(results: Dict) -> str:
    """Per run: what explains its PSNR (see ``pipeline._diagnostics``).

    Columns: ``||g_V||/||g_R||`` and the share of elements where L_V's
    gradient is the larger one (means over the updates), the summed feature
    std ``sum_i sigma(x_i)`` at the start and end of training (L_V /
    lambda_V, plain L_V only), the mean activation range width after
    calibration and after training, and the mean quantization
    noise-to-signal (MSE / variance) of activations and weights after
    calibration.
    """
    lines = ['| Run | Set5 PSNR | g_V/g_R | share abs(g_V)>abs(g_R) | '
             'sum sigma start -> end | range width start -> end | '
             'NSR act / weight at step 0 |',
             '|---|---|---|---|---|---|---|']
    for name, e in results['runs'].items():
        t = e.get('train', {})
        ov = e.get('overrides', {})
        lam = ov.get('lambda_v', results['preset']['lambda_v'])
        norm = ov.get('lambda_v_norm', 'none')
        sig = '-'
        if 'loss_var_first' in t and norm == 'none' and lam:
            sig = (f'{t["loss_var_first"] / lam:.2f} -> '
                   f'{t["loss_var_last"] / lam:.2f}')
        elif 'loss_var_first' in t:
            sig = (f'({t["loss_var_first"] / lam:.2f} -> '
                   f'{t["loss_var_last"] / lam:.2f} normalised)')
        q = t.get('quant_error_step0') or {}
        s5 = e['metrics'].get('Set5', {}).get('psnr')
        lines.append(
            f'| {name} | {_f(s5, ".2f")} | {_f(t.get("grad_ratio_mean"), ".2e")}'
            f' | {_f(t.get("dominant_frac_mean"), ".4f")} | {sig} | '
            f'{_f(t.get("range_width_start"))} -> '
            f'{_f(t.get("range_width_end"))} | '
            f'{_f(q.get("act"), ".4f")} / {_f(q.get("weight"), ".4f")} |')
    return '\n'.join(lines)


def posthoc_table(results: Dict) -> str:
    """After training, on the Set5 LR images (``odm_bench.posthoc``)."""
    post = results.get('posthoc')
    if not post:
        return ''
    lines = ['| Run | Set5 PSNR | sum sigma | NSR act | range width | '
             'share outside the range |', '|---|---|---|---|---|---|']
    for name, d in post.items():
        e = results['runs'].get(name, {})
        s5 = e.get('metrics', {}).get('Set5', {}).get('psnr') \
            if name != 'fp32' else results['fp32']['metrics'].get(
                'Set5', {}).get('psnr')
        lines.append(f'| {name} | {_f(s5, ".2f")} | {_f(d.get("sum_sigma"))}'
                     f' | {_f(d.get("nsr_act"), ".4f")} | '
                     f'{_f(d.get("range_width"))} | '
                     f'{_f(d.get("clip_frac"), ".4f")} |')
    return '\n'.join(lines)


def console_table(results: Dict, names: Optional[Sequence[str]] = None
                  ) -> str:
    """Plain-text table (FP32, bicubic and runs) for terminals."""
    sets = _sets(results)
    head = f'{"model":<26}{"bits":>5}' + ''.join(
        f'{s[:12] + " PSNR":>18}{"SSIM":>8}' for s in sets) + \
        f'{"size":>10}{"BitOPs":>10}'
    rows = [head, '-' * len(head)]
    items = [('FP32', 32, results['fp32']),
             ('Bicubic', '-', dict(metrics=results['bicubic']))]
    for n, e in results['runs'].items():
        if names is None or n in names:
            items.append((e['label'] + (f' [{e["tag"]}]' if e.get('tag')
                                        else ''), e['bits'], e))
    for label, bits, e in items:
        line = f'{label:<26}{bits!s:>5}'
        for s in sets:
            m = e['metrics'].get(s)
            line += f'{m["psnr"]:>18.2f}{m["ssim"]:>8.4f}' if m else \
                f'{"-":>18}{"-":>8}'
        c = e.get('complexity')
        line += (f'{c["storage_k"]:>9.1f}K{c["bitops_t"]:>9.2f}T' if c
                 else f'{"-":>10}{"-":>10}')
        rows.append(line)
    return '\n'.join(rows)


def relativize(obj, prefix: str):
    """Replace the absolute ``prefix`` of every path string by ``''``."""
    if isinstance(obj, str):
        return obj[len(prefix):] if obj.startswith(prefix) else obj
    if isinstance(obj, dict):
        return {k: relativize(v, prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relativize(v, prefix) for v in obj]
    return obj


_SCOPE = """\
* **Reduced scale.** EDSR with {mid} channels and {blocks} residual blocks
  (the paper: EDSR-baseline, 64 x 16), FP32 trained {fp32_iters} iterations
  on {data}, QAT {qat_iters} iterations of batch {qat_batch} (the paper: 60
  epochs on DIV2K from the official FP32 weights). Absolute PSNR is therefore
  far below the paper's Table 1 (32.10 dB FP32 on Set5); only differences
  between methods, all trained from the same FP32 checkpoint with the same
  seed, data order and iterations, are comparable to the paper's claims.
* **One seed.** No repetitions, so differences of a few hundredths of a dB
  are within run-to-run noise (not measured here).
* **Storage and BitOPs** are exact for the model that was tested (1920 x 1080
  output, conventions of `odm_mm/analysis/complexity.py`); they scale with
  the reduced width/depth and are not the paper's 411.7K / 215.1T.
* **Step times**: compare the interleaved columns (every run timed turn by
  turn on one batch, so under the same load); the per-run medians "in
  training" depend on what else ran on the machine at that time. Data
  loading is excluded from step times and included in the train wall time.
* **Not shown:** Urban100 (not available locally), RDN and SRResNet (Tables 2
  and 3), DAQ/DDTB rows (no implementation here), x2 results.
"""


_SCOPE_GENERATOR = """\
* **Reduced scale.** {network}, FP32 teacher trained here {fp32_iters}
  iterations on {data}, QAT {qat_iters} iterations of batch {qat_batch}.
  Absolute PSNR is far below a DIV2K-trained network's; only differences
  between methods, all trained from the same FP32 checkpoint with the same
  seed, data order and iterations, are comparable.
* **One seed.** No repetitions, so differences of a few hundredths of a dB
  are within run-to-run noise (not measured here).
* **Storage and BitOPs** are exact for the model that was tested (1920 x 1080
  output, conventions of `odm_mm/analysis/complexity.py`).
* **Step times**: compare the interleaved columns when present; the per-run
  medians "in training" depend on what else ran on the machine at that time.
"""


_DATA = {'folders': 'T91 patches', 'div2k': 'DIV2K',
         'skimage': 'scikit-image photographs'}


def write_report(results: Dict, docs_dir: str,
                 figures_dir: Optional[str] = None,
                 notes: Optional[str] = None,
                 md_name: str = 'benchmarks.md',
                 json_name: str = 'benchmarks.json',
                 repo_root: Optional[str] = None) -> Dict[str, str]:
    """Write the Markdown report, the JSON and the figures.

    Args:
        results: ``results.json`` content.
        docs_dir: Folder of the Markdown and JSON files.
        figures_dir: Folder of the PNGs (default ``<docs_dir>/figures``).
        notes: Markdown appended under "Notes on this run" (hand-written
            analysis), or None.
        md_name, json_name: File names.
        repo_root: Absolute prefix stripped from the paths in the JSON.

    Returns:
        ``{'md': path, 'json': path, <figure>: path, ...}``.
    """
    figures_dir = figures_dir or osp.join(docs_dir, 'figures')
    os.makedirs(docs_dir, exist_ok=True)
    os.makedirs(figures_dir, exist_ok=True)
    p = results['preset']
    checks = check_targets(results)
    figs = {
        'psnr_vs_bits': plot_psnr_vs_bits(
            results, osp.join(figures_dir, 'psnr_vs_bits.png')),
        'conflict_ratio': plot_conflict_ratio(
            results, osp.join(figures_dir, 'conflict_ratio.png')),
        'side_by_side': plot_side_by_side(
            results, osp.join(figures_dir, 'side_by_side.png')),
        'lambda_sweep': plot_lambda_sweep(
            results, osp.join(figures_dir, 'lambda_sweep.png')),
        'layer_error': plot_layer_error(
            results, osp.join(figures_dir, 'layer_error_step0.png')),
        'budget_curve': plot_budget_curve(
            results, osp.join(figures_dir, 'budget_curve.png')),
    }
    figs = {k: v for k, v in figs.items() if v}
    m = results['machine']
    wall = results['wall_s']
    rel = lambda path: osp.relpath(path, docs_dir)  # noqa: E731
    md = [f'# Benchmark: ODM vs PAMS on {p.get("model_name", "EDSR")} '
          f'x{p["scale"]} '
          f'(preset `{p["name"]}`)', '',
          'Generated by `tools/benchmark.py` from '
          f'`{json_name}` (every number below is in it).', '',
          f'* Command: `{results["command"]}`',
          f'* Preset: {p["description"]}',
          f'* Machine: {m["cpu"]}, {m["cpu_count"]} cores, '
          f'{m["torch_threads"]} torch threads, GPU: {m["gpu"] or "none"}; '
          f'torch {m["torch"]}, mmengine {m["mmengine"]}, mmagic '
          f'{m["mmagic"]}; 1-min load average at start / end of the command '
          'that wrote the report: '
          f'{m.get("load_avg_1min", float("nan")):.2f} / '
          f'{m.get("load_avg_1min_end", float("nan")):.2f}',
          f'* Seed: {results["seed"]} (every run)',
          f'* Wall time: {wall["total_recorded"] / 60:.1f} min recorded '
          f'(FP32 {wall["fp32"] / 60:.1f} min, QAT + test '
          f'{sum(wall["runs"].values()) / 60:.1f} min over '
          f'{len(wall["runs"])} runs); process CPU time (user + sys) '
          f'{results.get("cpu_s", {}).get("total_recorded", 0) / 60:.1f} '
          'min, i.e. about half of it as wall time on 2 otherwise idle '
          'cores',
          (f'* FP32: {p["fp32_iters"]} it, batch {p["fp32_batch"]}, lr '
           f'{p["fp32_lr"]}' if results['fp32'].get('train') else
           '* FP32: the given teacher `' + osp.basename(str(
               p.get('fp32_checkpoint') or results.get('fp32_checkpoint')))
           + '` (no FP32 training)') +
          f'; QAT: {p["qat_iters"]} it, batch '
          f'{p["qat_batch"]}, lr {p["qat_lr"]} (ranges/offsets x'
          f'{p["range_lr_mult"] or "config"}), lambda_V {p["lambda_v"]:g}, HR patch '
          f'{p["gt_patch"]}, OffsetHook p=0.3 recalib_interval '
          f'{p["recalib_interval"]}',
          '', '## Quantitative comparison (shape of the paper\'s Table 1)',
          '', 'Y-channel PSNR (dB) / SSIM, border = scale; storage and '
          'BitOPs for a 1920 x 1080 output.', '', table1(results), '',
          '## Ablation at W2A2 (shape of the paper\'s Table 5)', '',
          table5(results), '']
    t5v2 = table5_published(results)
    if t5v2:
        md += ['## Ablation of the published version (ECCV 2024) at W2A2',
               '', 'Shape of the published Table 5: WCC = weight clipping '
               'correction (method `odm_wcc`), MR = mismatch regulariser '
               'L_M, Coop. = its similarity gate; storage/BitOPs vs PAMS.',
               '', t5v2, '']
    curve = budget_table(results)
    if curve:
        md += ['## Budget curve (one run each, tested at several '
               'iterations)', '',
               'Each run trains its full length with the preset\'s schedule '
               'scaled to that length (lr halved at '
               f'{", ".join(str(int(f * 100)) + "%" for f in p["qat_milestones"])}'
               ' of it) and its intermediate checkpoints are tested '
               '(`eval_at`); a point before the end is therefore not the run '
               'of that budget, whose lr would have been halved earlier.',
               '', curve, '']
    md += ['## Training step time and conflict ratio',
          '', speed_table(results), '', '## Targets', '',
          targets_md(checks) or '(no target applies to this preset)', '']
    sweep = sweep_table(results)
    if sweep:
        md += ['## Sweep (tagged runs vs their control at the same budget)', '',
               sweep, '']
    md += ['## Diagnostics', '', diagnostics_table.__doc__.split(
        '\n\n', 1)[1].replace('\n    ', ' ').strip(), '',
        diagnostics_table(results), '']
    pdiag = published_diagnostics(results)
    if pdiag:
        md += ['### Clipping factors, mismatch gradient, noise-to-signal', '',
               published_diagnostics.__doc__.split(':', 1)[1].replace(
                   '\n    ', ' ').strip(), '', pdiag, '']
    post = posthoc_table(results)
    if post:
        md += ['## After training (W2A2, on the Set5 LR images)', '',
               'Measured on each run\'s last checkpoint by '
               '`tools/odm_bench/posthoc.py` (one pass per run through the '
               'quantized network): the sum over quantized layers of '
               'sigma(x_i) (what L_V penalises), the mean activation '
               'quantization noise-to-signal, the mean range width and the '
               'share of activation elements outside the range.', '',
               post, '']
    if figs:
        md += ['## Figures', '']
        md += [f'![{k}]({rel(v)})' for k, v in figs.items()] + ['']
    scope = _SCOPE_GENERATOR if p.get('generator') else _SCOPE
    md += ['## What these numbers do and do not show', '',
           scope.format(mid=p['mid_channels'], blocks=p['num_blocks'],
                        network=network_label(p),
                        fp32_iters=p['fp32_iters'],
                        data=_DATA.get(p['data'], p['data']),
                        qat_iters=p['qat_iters'], qat_batch=p['qat_batch'])]
    if notes:
        md += ['## Notes on this run', '', notes.strip(), '']
    md_path = osp.join(docs_dir, md_name)
    with open(md_path, 'w') as f:
        f.write('\n'.join(md).rstrip() + '\n')
    json_path = osp.join(docs_dir, json_name)
    out = dict(results, targets=checks)
    if repo_root:
        out = relativize(out, repo_root.rstrip('/') + '/')
    with open(json_path, 'w') as f:
        json.dump(out, f, indent=1)
    return dict(md=md_path, json=json_path, **figs)
