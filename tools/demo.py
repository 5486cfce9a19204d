"""Embedded demo (``make demo``): FP32 vs PAMS vs ODM on real photographs.

Runs a short version of the benchmark protocol (``tools/benchmark.py``) on a
fresh machine, offline, without the SR data sets: the photographs bundled
with scikit-image (``skimage.data``: astronaut, coffee, motorcycle, camera,
coins, moon, brick, gravel for training; chelsea and rocket for testing) are
written in SR layout under ``<work-dir>/data``, then

1. an FP32 EDSR x4 (32 channels, 8 blocks) is trained on them,
2. PAMS and ODM quantize that one checkpoint at W4A4 and W2A2 (same seed,
   data and iterations),
3. each is tested (mmagic Y-PSNR/SSIM, border 4) and its storage size and
   BitOPs (1920 x 1080 output) are counted.

Prints the table, writes ``<work-dir>/side_by_side.png`` (one test image:
HR, bicubic, FP32, PAMS, ODM) and ``<work-dir>/results.json``. Sized for
about 15 minutes on 2 CPU cores; an interrupted demo resumes where it
stopped. ``--data-root DIR`` uses T91 / Set5 / Set14 below DIR instead.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root DIR]
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
sys.path.insert(0, osp.abspath(osp.dirname(__file__)))  # odm_bench


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the demo."""
    p = argparse.ArgumentParser(description='FP32 vs PAMS vs ODM demo')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--data-root', default=None,
                   help='use T91 + Set5/Set14 below this folder instead of '
                   'the scikit-image photographs')
    p.add_argument('--preset', default='demo',
                   help='benchmark preset (default demo; smoke = seconds)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the demo; returns the results dict."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    from odm_bench.benchmark import Benchmark
    from odm_bench.figures import plot_side_by_side
    from odm_bench.presets import get_preset
    from odm_bench.report import console_table
    preset = get_preset(args.preset)
    if args.data_root:
        if not osp.isdir(osp.join(args.data_root, 'T91')):
            raise SystemExit(f'--data-root {args.data_root} has no T91/ '
                             '(see docs/data.md)')
        preset = preset.with_overrides(data='folders',
                                       test_sets=('Set5', 'Set14'),
                                       sample=('Set5', 'butterfly'))
    results = Benchmark(preset, args.work_dir, args.data_root).run()
    side = plot_side_by_side(results,
                             osp.join(args.work_dir, 'side_by_side.png'))
    print()
    print(f'ODM vs PAMS, EDSR x{preset.scale} '
          f'({preset.mid_channels}ch/{preset.num_blocks} blocks), test set '
          f'{", ".join(preset.test_sets)}; size = storage (K = 1000 x 32 '
          'bit), BitOPs for a 1920x1080 output:')
    print(console_table(results))
    runs = results['runs']
    for bits in sorted({r['bits'] for r in runs.values()}, reverse=True):
        a = runs.get(f'odm_w{bits}a{bits}')
        b = runs.get(f'pams_w{bits}a{bits}')
        if a and b:
            gains = ', '.join(
                f'{s} {a["metrics"][s]["psnr"] - b["metrics"][s]["psnr"]:+.2f}'
                ' dB' for s in preset.test_sets)
            print(f'W{bits}A{bits}: ODM - PAMS = {gains}')
    print(f'side by side: {side}')
    print(f'results: {osp.join(args.work_dir, "results.json")}')
    print(f'demo wall time: {(time.perf_counter() - t0) / 60:.1f} min')
    return results


if __name__ == '__main__':
    main()
