#!/usr/bin/env bash
# Run a benchmark preset with N single-threaded workers sharing its runs
# (on a CPU, N processes with 1 thread each beat one process with N), then
# collect everything into one report.
#
#   scripts/bench_parallel.sh PRESET [WORKERS=2] [extra tools/benchmark.py args]
#   e.g. scripts/bench_parallel.sh edsr 2 --sweep
#
# Stage 1 (FP32 test or training, bicubic and controls) runs first, once.
# Each worker then takes the next run nobody has claimed (an atomic mkdir
# under <work_dir>/claims/), in the preset's order, so finished runs are
# skipped and an interrupted script can be started again (delete the claims
# of runs without a result.json first: the script does it at start).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:?usage: $0 PRESET [WORKERS] [args]}
workers=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
PY=${PY:-.venv/bin/python}
work=work_dirs/bench_$preset
mkdir -p "$work/claims"
for c in "$work"/claims/*; do
  [ -e "$c" ] || continue
  [ -f "$work/runs/$(basename "$c")/result.json" ] || rmdir "$c"
done
names=$($PY - "$preset" "$@" <<'PYEOF'
import sys
sys.path[:0] = ['.', 'tools']
from odm_bench.presets import get_preset, run_name
from odm_bench.benchmark import SWEEPS
p = get_preset(sys.argv[1])
names = [run_name(m, b) for m, b in p.runs]
if '--sweep' in sys.argv[2:]:
    names += [run_name(m, b, t) for m, b, t, _ in (p.sweep or SWEEPS)]
print(' '.join(names))
PYEOF
)
echo "[bench_parallel] stage 1, then $workers workers over: $names"
$PY tools/benchmark.py --preset "$preset" --only _stage1_ --no-speed --no-report "$@" \
  > "$work/stage1.log" 2>&1
worker() {
  local w=$1
  shift
  for n in $names; do
    mkdir "$work/claims/$n" 2>/dev/null || continue
    echo "[bench_parallel] worker $w: $n ($(date +%H:%M:%S))"
    $PY tools/benchmark.py --preset "$preset" --only "$n" --no-speed \
      --no-report --threads 1 "$@" >> "$work/worker$w.log" 2>&1 \
      || echo "[bench_parallel] worker $w: $n FAILED (see $work/worker$w.log)"
  done
}
for w in $(seq 1 "$workers"); do worker "$w" "$@" & done
wait
echo "[bench_parallel] collecting ($(date +%H:%M:%S))"
$PY tools/benchmark.py --preset "$preset" --collect "$@"
