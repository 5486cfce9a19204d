"""Reproduce the paper's EDSR claims at a chosen scale, end to end.

Stages (each one an mmengine Runner built from the repo's configs; the
harness is ``tools/odm_bench``):

1. train ONE FP32 EDSR x4 (``--preset``: size, data, iterations), or test a
   given checkpoint (``--fp32-checkpoint``);
2. from that checkpoint, QAT with the same iterations, seed and data for
   PAMS, the ODM quantizer alone, Table 5's ablations (a) (b) (c) and full
   ODM at the preset's bit-widths (``--sweep`` adds the range co-adaptation
   sweep);
3. test each on the preset's sets (mmagic PSNR/SSIM on Y, border = scale),
   count storage and BitOPs (1920 x 1080 output).

Writes ``<work-dir>/results.json`` and, for ``edsr``/``quick``/``paper``
(or with ``--docs-dir``), ``docs/<stem>.md``, ``docs/<stem>.json`` and the
figures (:data:`REPORTS`: ``edsr`` -> ``benchmarks``, ``quick`` ->
``benchmarks_quick``), with ``docs/<stem>_notes.md`` appended if present.
A restarted run skips finished runs and resumes an interrupted one.

Examples::

    python tools/benchmark.py --preset quick            # ~45 min, 2 CPUs
    python tools/benchmark.py --preset quick --sweep --only odm_w2a2_rlr10
    python tools/benchmark.py --preset paper --data-root /data/sr \
        --fp32-checkpoint edsr_x4c64b16_1xb16-300k_div2k.pth   # GPU
    python tools/benchmark.py --preset quick --report-only
    # EDSR-baseline from the T91 teacher, two workers then one collector:
    python tools/benchmark.py --preset edsr --threads 1 --no-speed \
        --only pams_w2a2 odm_w2a2 ... &   # (each worker its share)
    python tools/benchmark.py --preset edsr --sweep --collect
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
sys.path.insert(0, osp.abspath(osp.dirname(__file__)))  # odm_bench

from odm_bench.presets import PRESETS, get_preset, parse_overrides  # noqa: E402,E501

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))
#: Committed reports: preset -> (file stem in docs/, figures folder).
#: ``edsr`` (the paper's network) leads docs/benchmarks.md; ``quick`` is the
#: fast 32ch/8-block smoke check.
REPORTS = {'edsr': ('benchmarks', 'figures/edsr'),
           'quick': ('benchmarks_quick', 'figures'),
           'paper': ('benchmarks_paper', 'figures/paper'),
           'swinir': ('benchmarks_swinir', 'figures/swinir')}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--preset', default='quick', choices=sorted(PRESETS))
    p.add_argument('--work-dir', default=None,
                   help='default: work_dirs/bench_<preset>')
    p.add_argument('--data-root', default=None,
                   help='SR data root (default $ODM_DATA_ROOT or '
                   '../shared/data)')
    p.add_argument('--fp32-checkpoint', default=None,
                   help='quantize this FP32 checkpoint (skips stage 1)')
    p.add_argument('--only', nargs='+', default=None,
                   help='run names to run, e.g. odm_w2a2 pams_w2a2')
    p.add_argument('--sweep', action='store_true',
                   help='also run the range co-adaptation sweep')
    p.add_argument('--set', nargs='+', default=[], metavar='FIELD=VALUE',
                   help='override preset fields, e.g. qat_iters=100')
    p.add_argument('--docs-dir', default=None,
                   help='where the report and figures go (default docs/ '
                   'for the presets of REPORTS, else <work-dir>/report)')
    p.add_argument('--notes', default=None,
                   help='Markdown file appended as "Notes on this run" '
                   '(default <docs-dir>/<stem>_notes.md if present)')
    p.add_argument('--report-only', action='store_true',
                   help='only rewrite the report from results.json')
    p.add_argument('--no-speed', action='store_true',
                   help='skip the interleaved step-time measurement (for '
                   'parallel workers that each run a share with --only)')
    p.add_argument('--collect', action='store_true',
                   help='train nothing: gather the finished runs (after '
                   'parallel workers), measure step times, report')
    p.add_argument('--posthoc', action='store_true',
                   help='measure every W2A2 run after training (sum of '
                   'sigma, quantization error, ranges on Set5) into the '
                   'results before the report')
    p.add_argument('--no-report', action='store_true',
                   help='write results.json only (parallel workers)')
    p.add_argument('--seed-from', default=None, metavar='REPORT_JSON',
                   help='first write the runs of a committed report (e.g. '
                   'docs/benchmarks.json) into the work dir as finished '
                   'runs, so that new runs join its table without '
                   'training the old ones again (odm_bench/seed.py)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads of this process')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark; returns the results dict."""
    args = parse_args(argv)
    preset = get_preset(args.preset)
    if args.set:
        preset = preset.with_overrides(**parse_overrides(args.set))
    work_dir = args.work_dir or osp.join('work_dirs', f'bench_{preset.name}')
    stem, figs = REPORTS.get(preset.name, ('benchmarks', 'figures'))
    docs_dir = args.docs_dir or (
        osp.join(REPO, 'docs') if preset.name in REPORTS else
        osp.join(work_dir, 'report'))
    from odm_bench.benchmark import Benchmark
    from odm_bench.pipeline import load_json
    from odm_bench.report import console_table, write_report
    if args.seed_from:
        from odm_bench.seed import seed_work_dir
        if not osp.isfile(args.seed_from):
            raise SystemExit(f'--seed-from: no file {args.seed_from}')
        done = seed_work_dir(args.seed_from, work_dir)
        print(f'seeded {len(done)} finished runs from {args.seed_from} '
              f'into {work_dir}')
    if args.report_only:
        results = load_json(osp.join(work_dir, 'results.json'))
    else:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        results = Benchmark(preset, work_dir, args.data_root,
                            args.fp32_checkpoint, args.only,
                            args.sweep, speed=not args.no_speed,
                            collect=args.collect).run()
    if args.posthoc:
        from odm_bench.pipeline import dump_json
        from odm_bench.posthoc import posthoc_diagnostics
        from odm_mm.data_root import get_data_root
        results['posthoc'] = posthoc_diagnostics(
            work_dir, args.data_root or get_data_root(), preset.scale)
        dump_json(osp.join(work_dir, 'results.json'), results)
    if args.no_report:
        return results
    notes_path = args.notes or osp.join(docs_dir, f'{stem}_notes.md')
    notes = open(notes_path).read() if osp.isfile(notes_path) else None
    out = write_report(results, docs_dir, osp.join(docs_dir, figs),
                       notes=notes, md_name=f'{stem}.md',
                       json_name=f'{stem}.json', repo_root=REPO)
    print(console_table(results))
    for key, path in out.items():
        print(f'{key}: {osp.relpath(path)}')
    return results


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    main()
