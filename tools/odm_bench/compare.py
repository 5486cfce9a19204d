"""Compare benchmark results (``results.json``) with a reference.

A benchmark is reproducible when a second run of the same preset gives the
same numbers: the FP32 teacher and every QAT run must land within ``tol``
dB of the reference on every test set. This module lines the runs of one
reference JSON (e.g. the committed ``docs/benchmarks_quick.json``) up with
those of one or more new JSONs and reports the largest difference per run.

Used by ``tools/compare_benchmarks.py``; kept free of torch/mmengine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

__all__ = ['Row', 'psnr_table', 'compare', 'format_rows']


@dataclass
class Row:
    """One run on one test set across the compared results.

    Attributes:
        run: Run name (``'fp32'`` for the teacher).
        test_set: Test set name.
        ref: Reference Y-PSNR (None if the reference lacks it).
        new: Y-PSNR of each new result (None where missing).
        tol: Tolerance in dB.
    """
    run: str
    test_set: str
    ref: Optional[float]
    new: List[Optional[float]]
    tol: float

    @property
    def max_abs_diff(self) -> Optional[float]:
        """Largest |new - ref| (None when nothing can be compared)."""
        diffs = [abs(v - self.ref) for v in self.new
                 if v is not None and self.ref is not None]
        return max(diffs) if diffs else None

    @property
    def status(self) -> str:
        """``'ok'``, ``'DIFF'`` (beyond tol) or ``'missing'``."""
        if self.ref is None or any(v is None for v in self.new):
            return 'missing'
        return 'ok' if self.max_abs_diff <= self.tol + 1e-12 else 'DIFF'


def psnr_table(results: Dict) -> Dict[str, Dict[str, float]]:
    """``{run: {set: psnr}}`` of a results JSON, the teacher as ``'fp32'``."""
    table: Dict[str, Dict[str, float]] = {}
    fp32 = (results.get('fp32') or {}).get('metrics') or {}
    if fp32:
        table['fp32'] = {k: v['psnr'] for k, v in fp32.items()}
    for name, run in (results.get('runs') or {}).items():
        metrics = run.get('metrics') if isinstance(run, dict) else None
        if metrics:
            table[name] = {k: v['psnr'] for k, v in metrics.items()}
    return table


def compare(ref: Dict, new: Sequence[Dict], tol: float = 0.01,
            runs: Optional[Sequence[str]] = None) -> List[Row]:
    """Rows for every (run, set) of ``ref`` (or of ``runs``).

    Args:
        ref: The reference results JSON.
        new: One or more results JSONs to check against it.
        tol: Tolerance in dB.
        runs: Restrict to these run names (default: all of ``ref``).
    """
    if not new:
        raise ValueError('compare() needs at least one new result')
    ref_t = psnr_table(ref)
    new_t = [psnr_table(n) for n in new]
    names = list(runs) if runs is not None else list(ref_t)
    rows = []
    for name in names:
        sets = list((ref_t.get(name) or {}) or
                    next((t[name] for t in new_t if name in t), {}))
        for s in sets:
            rows.append(Row(name, s, (ref_t.get(name) or {}).get(s),
                            [(t.get(name) or {}).get(s) for t in new_t],
                            tol))
    return rows


def format_rows(rows: Sequence[Row], labels: Sequence[str]) -> str:
    """A markdown table of the rows; ``labels`` name the new results."""
    def f(v: Optional[float]) -> str:
        return '-' if v is None else f'{v:.3f}'

    head = ['run', 'set', 'reference'] + list(labels) + ['max abs diff', '']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for r in rows:
        cells = [r.run, r.test_set, f(r.ref)] + [f(v) for v in r.new] + [
            f(r.max_abs_diff), r.status]
        lines.append('| ' + ' | '.join(cells) + ' |')
    n_ok = sum(r.status == 'ok' for r in rows)
    lines.append('')
    lines.append(f'{n_ok}/{len(rows)} within {rows[0].tol if rows else 0} '
                 'dB of the reference' if rows else 'nothing to compare')
    return '\n'.join(lines)
