"""Start a benchmark work dir from a committed report's JSON.

A committed ``docs/<stem>.json`` holds every finished run of a preset (its
``result.json`` plus the labels the collector adds), the FP32 and bicubic
results and the after-training diagnostics. Writing them back as the work
dir's cached files lets new runs be added to a committed table without
training the old ones again: :class:`~odm_bench.benchmark.Benchmark` skips
every run whose ``result.json`` exists, and ``--collect`` gathers old and
new ones into one report. The seeded runs keep their own ``config`` path,
numbers and timings; they have no checkpoints, so step-time measurement
(``--no-speed``) and ``--posthoc`` (their ``posthoc.json`` is seeded
instead) do not re-measure them.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List

from .jsonio import dump_json, load_json

__all__ = ['seed_work_dir', 'SEEDED_MARK']

#: Key added to every seeded run's ``result.json``: the report it came from.
SEEDED_MARK = 'seeded_from'

#: Keys the collector adds to a run; they are recomputed, not seeded.
_COLLECTED = ('method', 'label', 'bits', 'tag', 'ablation', 'features',
              'overrides')


def seed_work_dir(report_json: str, work_dir: str) -> List[str]:
    """Write the runs of ``report_json`` into ``work_dir`` (existing files
    are kept). Returns the names of the runs written."""
    rep: Dict = load_json(report_json)
    os.makedirs(work_dir, exist_ok=True)

    def put(path: str, obj) -> bool:
        if osp.isfile(path) or obj is None:
            return False
        os.makedirs(osp.dirname(path), exist_ok=True)
        dump_json(path, obj)
        return True

    put(osp.join(work_dir, 'bicubic.json'), rep.get('bicubic'))
    put(osp.join(work_dir, 'fp32_controls.json'), rep.get('fp32_controls'))
    put(osp.join(work_dir, 'fp32', 'result.json'), rep.get('fp32'))
    posthoc = rep.get('posthoc') or {}
    put(osp.join(work_dir, 'posthoc_fp32.json'), posthoc.get('fp32'))
    written = []
    for name, run in rep.get('runs', {}).items():
        res = {k: v for k, v in run.items() if k not in _COLLECTED}
        res[SEEDED_MARK] = osp.relpath(report_json)
        run_dir = osp.join(work_dir, 'runs', name)
        if put(osp.join(run_dir, 'result.json'), res):
            written.append(name)
        put(osp.join(run_dir, 'posthoc.json'), posthoc.get(name))
    return written
