"""Check that benchmark results reproduce a reference within a tolerance.

Usage::

    python tools/compare_benchmarks.py REFERENCE.json NEW.json [NEW2.json ...]
        [--tol 0.01] [--runs RUN ...] [--labels A B ...] [--strict]

e.g. the committed quick-preset table against two fresh runs::

    python tools/compare_benchmarks.py docs/benchmarks_quick.json \\
        /work/repro1/work_dirs/bench_quick/results.json \\
        /work/repro2/work_dirs/bench_quick/results.json

Prints one markdown row per (run, test set): the reference Y-PSNR, each new
result's, the largest |difference| and ``ok`` / ``DIFF`` / ``missing``.
With ``--strict`` the exit status is 1 when any row is not ``ok``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.dirname(__file__)))  # odm_bench

from odm_bench.compare import compare, format_rows  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('reference', help='results JSON to compare against')
    p.add_argument('new', nargs='+', help='results JSON(s) to check')
    p.add_argument('--tol', type=float, default=0.01, help='dB (0.01)')
    p.add_argument('--runs', nargs='+', default=None,
                   help='only these runs (default: all of the reference)')
    p.add_argument('--labels', nargs='+', default=None,
                   help='column names of the new results')
    p.add_argument('--strict', action='store_true',
                   help='exit 1 unless every row is within --tol')
    args = p.parse_args(argv)
    docs = []
    for path in [args.reference] + args.new:
        try:
            with open(path) as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as err:
            p.error(f'cannot read results JSON {path}: {err}')
    labels = args.labels or [f'new {i + 1}' for i in range(len(args.new))]
    if len(labels) != len(args.new):
        p.error(f'--labels needs {len(args.new)} names, got {len(labels)}')
    rows = compare(docs[0], docs[1:], args.tol, args.runs)
    print(format_rows(rows, labels))
    return 1 if args.strict and any(r.status != 'ok' for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
