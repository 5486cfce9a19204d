"""Embedded demo (``make demo``): what ODM is for, quietly.

Quantizes the paper's EDSR-baseline x4 (64 channels, 16 blocks) to 2-bit
weights and activations with PAMS and with ODM, from the same teacher, seed,
data and iterations, and shows what ODM buys: PSNR/SSIM, storage and BitOPs
in one table, the crop of the test images where the two differ most, and the
feature distributions of the ODM model against its learned ranges (paper
Fig. 1 / Fig. 3). Offline; about 14 minutes on 2 CPU cores; an
interrupted demo resumes (finished runs are kept).

* teacher: mmagic's official EDSR x4 weights if cached or downloadable (one
  quick try), else ``../shared/models/edsr_x4c64b16_t91_fp32.pth``, else a
  small EDSR (32ch/8 blocks) trained first; one line says which and why;
* data: T91 patches and Set5 + Set14 from ``../shared/data``
  (``ODM_DATA_ROOT``), else photographs bundled with scikit-image;
* PAMS and ODM W2A2 train as two single-thread worker processes in
  parallel; every stage's mmengine log is in ``<work-dir>/logs/``; the
  terminal shows one progress bar per stage and the results.

Details: ``docs/demo.md`` and :mod:`odm_bench.demo`.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root DIR]
        [--teacher auto|official|shared|train] [--data auto|folders|skimage]
        [--offline] [--w4a4] [--workers N] [--set FIELD=VALUE ...]
    python tools/demo.py --smoke       # seconds: tiny network (CI)
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from typing import Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
sys.path.insert(0, osp.abspath(osp.dirname(__file__)))  # odm_bench


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the demo."""
    p = argparse.ArgumentParser(description='PAMS vs ODM at W2A2 on EDSR x4 '
                                '(make demo)')
    p.add_argument('--work-dir', default=None,
                   help='default work_dirs/demo (work_dirs/demo_smoke with '
                   '--smoke)')
    p.add_argument('--data-root', default=None,
                   help='SR data root with T91/ and Set5/ (default '
                   '$ODM_DATA_ROOT or ../shared/data)')
    p.add_argument('--preset', default='demo',
                   help='benchmark preset of the protocol (default demo; '
                   'smoke: a tiny network, seconds)')
    p.add_argument('--teacher', default='auto',
                   choices=['auto', 'official', 'shared', 'train'],
                   help='FP32 teacher (default: official if cached or '
                   'downloadable, else ../shared/models, else train one)')
    p.add_argument('--data', default='auto',
                   choices=['auto', 'folders', 'skimage'],
                   help='T91 + Set5/Set14 folders or scikit-image '
                   'photographs (default: folders when present)')
    p.add_argument('--offline', action='store_true',
                   help='do not try to download the official weights')
    p.add_argument('--w4a4', action='store_true',
                   help='also PAMS and ODM at W4A4 (~10 more minutes)')
    p.add_argument('--workers', type=int, default=2,
                   help='parallel QAT worker processes (default 2)')
    p.add_argument('--set', nargs='+', default=[], metavar='FIELD=VALUE',
                   help='override preset fields, e.g. qat_iters=100 '
                   '(experiments; the defaults are what docs/demo.md '
                   'describes)')
    p.add_argument('--smoke', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    p.add_argument('--threads', type=int, default=None,
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _worker(args: argparse.Namespace) -> None:
    """One stage in this process (started by the demo itself)."""
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from odm_bench.demo import run_stage
    run_stage(osp.abspath(args.work_dir), args.worker)


def _warnings_to(path: str) -> None:
    """Send Python warnings of this process (import-time deprecations of
    the OpenMMLab stack) to ``path`` instead of the terminal."""
    import logging
    os.makedirs(osp.dirname(path), exist_ok=True)
    logging.captureWarnings(True)
    log = logging.getLogger('py.warnings')
    log.handlers = [logging.FileHandler(path)]
    log.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the demo; returns the results dict."""
    args = parse_args(argv)
    if args.worker:
        _worker(args)
        return {}
    t0 = time.perf_counter()
    smoke = args.smoke or args.preset == 'smoke'
    work_dir = osp.abspath(args.work_dir or (
        'work_dirs/demo_smoke' if smoke else 'work_dirs/demo'))
    _warnings_to(osp.join(work_dir, 'logs', 'demo.log'))
    from odm_bench.demo import (Supervisor, _dump, _load, _rel,
                                collect_results, make_plan, Teacher)
    from odm_bench.presets import parse_overrides
    from odm_bench.report import console_table
    preset_name = 'smoke' if smoke else args.preset
    plan, resumed = make_plan(work_dir, preset_name, args.data_root,
                              args.teacher, args.data,
                              offline=args.offline or smoke, w4a4=args.w4a4,
                              overrides=parse_overrides(args.set))
    p = plan['preset']
    sup = Supervisor(work_dir, plan, workers=args.workers)
    bits = ' and '.join(f'W{b}A{b}' for b in sorted(
        {b for _, b in plan['runs']}))
    print(f'ODM demo: PAMS vs ODM at {bits} on EDSR x{p["scale"]} '
          f'({p["mid_channels"]}ch/{p["num_blocks"]} blocks), '
          f'{p["qat_iters"]} QAT iterations each, {sup.workers} parallel '
          f'workers; sized for ~{p["budget_min"] or "?"} min on 2 idle CPU '
          'cores (the bars show the time left as measured here)')
    t = Teacher(**plan['teacher'])
    from odm_bench.demo import _preset_from
    print(t.line(_preset_from(p)) + (' [resumed]' if resumed else ''))
    print(plan['data']['line'])
    print(f'logs: {_rel(osp.join(work_dir, "logs"))}/ (full mmengine '
          'output of every stage)')
    try:
        ok = sup.run()
    except KeyboardInterrupt:
        print('interrupted: run the same command again to resume '
              '(finished runs are kept)')
        sys.exit(130)
    if not ok:
        for stage, rc in sup.failed.items():
            print(f'stage {stage} failed (exit {rc}); end of '
                  f'{_rel(sup.log(stage))}:')
            for line in sup.tail(stage):
                print(f'  {line[:160]}')
        sys.exit(1)
    results = collect_results(work_dir, plan)
    figs = _load(osp.join(work_dir, 'figures.json'), {})
    sets = ', '.join(p['test_sets'])
    print()
    print(f'Y-PSNR (dB) / SSIM on {sets}; size = storage (K = 1000 x 32 '
          'bit), BitOPs for a 1920x1080 output:')
    print(console_table(results))
    runs = results['runs']
    for b in sorted({b for _, b in plan['runs']}):
        a, c = runs.get(f'odm_w{b}a{b}'), runs.get(f'pams_w{b}a{b}')
        if a and c:
            gains = ', '.join(
                f'{s} {a["metrics"][s]["psnr"] - c["metrics"][s]["psnr"]:+.2f}'
                ' dB' for s in p['test_sets'])
            print(f'W{b}A{b}: ODM - PAMS = {gains}')
    side = figs.get('side_by_side')
    if side:
        print(f'side by side: {_rel(side["path"])} ({side["set"]}/'
              f'{side["image"]}, the {side["size"]} px crop where PAMS and '
              'ODM W2A2 differ most)')
    if figs.get('fig1'):
        print(f'ODM feature distributions vs learned ranges: '
              f'{_rel(figs["fig1"])} (Fig. 1, {figs["fig1_layer"]}), '
              f'{_rel(figs["fig3"])} (Fig. 3)')
    results['figures'] = figs
    results['wall_s_this_session'] = time.perf_counter() - t0
    _dump(osp.join(work_dir, 'results.json'), results)
    print(f'results: {_rel(osp.join(work_dir, "results.json"))}; wall time '
          f'{(time.perf_counter() - t0) / 60:.1f} min'
          + (f' (skipped finished: {", ".join(sup.skipped)})'
             if sup.skipped else ''))
    return results


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    main()
