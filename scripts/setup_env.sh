#!/usr/bin/env bash
# Create or reuse the project virtual env and install everything odm_mm needs.
# Idempotent: a second call only checks a stamp and returns in about a second.
#
#   VENV=.venv (default) | PYTHON_BIN=python3.11 | ODM_WHEEL_CACHE=~/.cache/odm_mm/wheels
set -euo pipefail
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
$PY -m pip install -q --no-deps --no-build-isolation -e .
$PY -c "import mmagic.models, odm_mm; print('[setup_env] odm_mm', odm_mm.__version__, 'ready')"
echo "$want" > "$stamp"
echo "[setup_env] done in $(( $(date +%s) - t0 )) s"
