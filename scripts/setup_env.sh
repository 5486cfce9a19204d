#!/usr/bin/env bash
# Create or reuse the project virtual env and install everything odm_mm needs.
# Idempotent: a second call only checks a stamp and returns in about a second.
#
#   scripts/setup_env.sh [--quiet]
#   VENV=.venv (default) | PYTHON_BIN=python3.11 | ODM_WHEEL_CACHE=~/.cache/odm_mm/wheels
#
# --quiet (used by `make demo`): one line before and one after; pip's and the
# mmcv build's output go to $VENV/setup_env.log, whose last 40 lines are
# printed (to stderr) only if the install fails.
set -euo pipefail
quiet=0
case "${1:-}" in
  --quiet) quiet=1 ;;
  "") ;;
  *) echo "usage: $0 [--quiet]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
VENV=${VENV:-.venv}
PYTHON_BIN=${PYTHON_BIN:-python3}
stamp="$VENV/.odm_mm_stamp"
want=$(cat requirements/*.txt setup.py scripts/setup_env.sh scripts/build_mmcv.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
t0=$(date +%s)
if [ "$quiet" = 1 ]; then
  mkdir -p "$VENV"
  log="$VENV/setup_env.log"
  echo "[setup_env] installing into $VENV (first run or changed requirements: ~2 min, ~15 min more if mmcv must be compiled); log: $log"
  exec 3>&1 4>&2 >"$log" 2>&1
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "[setup_env] FAILED (exit $rc); the last lines of $log:" >&4; tail -n 40 "$log" >&4; else echo "[setup_env] ready in $(( $(date +%s) - t0 )) s" >&3; fi' EXIT
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_env] creating $VENV with $($PYTHON_BIN --version)"
  "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PY -m pip install -q --upgrade "pip<27"
$PY -m pip install -q -r requirements/build.txt
$PY -m pip install -q -r requirements/torch.txt
mmcv_whl=$(PYTHON=$PY bash scripts/build_mmcv.sh)
# mmagic without its declared dependencies (they pull numpy 2); the modules it
# really imports are in requirements/runtime.txt.
$PY -m pip install -q --no-deps "mmagic==1.2.0"
$PY -m pip install -q "$mmcv_whl" -r requirements/runtime.txt -r requirements/deploy.txt \
  -r requirements/tests.txt \
  -c requirements/torch.txt
# mmagic's metadata pulls in mediapipe; its recent releases (0.10.35, 1.2.x
# checked) have no `mp.solutions`, which controlnet_aux 0.0.10 uses whenever
# mediapipe imports, so `from mmagic.apis import MMagicInferencer` fails; the
# releases that have it (0.10.21) need protobuf<5, onnx needs >=6.31. Without
# mediapipe, controlnet_aux (imported by mmagic.apis) only loses its face
# detector, unused here.
$PY -m pip uninstall -y -q mediapipe
$PY -m pip install -q --no-deps --no-build-isolation -e .
$PY -W ignore -c "import mmagic.models, mmagic.apis, odm_mm; print('[setup_env] odm_mm', odm_mm.__version__, 'ready')"
echo "$want" > "$stamp"
echo "[setup_env] done in $(( $(date +%s) - t0 )) s"
