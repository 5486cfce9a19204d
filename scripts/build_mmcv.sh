#!/usr/bin/env bash
# Build (once) and cache a full mmcv 2.1.0 wheel (with ops) for the torch in
# the current Python environment, then print its path.
#
# Why: mmagic 1.2.0 needs 2.0.0 <= mmcv < 2.2.0 *with* compiled ops
# (`mmcv._ext`; mmcv-lite is not enough). PyPI only has mmcv 2.1.0's sdist for
# Python 3.11, and torch >= 2.5 headers need C++20 while mmcv's setup.py asks
# for C++17. The build takes ~14 min on 2 cores, so the wheel is cached outside
# the repository, keyed by the torch version:
#   ${ODM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/odm_mm/wheels}/torch-<ver>/
set -euo pipefail
PY=${PYTHON:-python}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY");; esac
MMCV_VERSION=2.1.0
torch_ver=$($PY -c 'import torch; print(torch.__version__)')
py_tag=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
cache=${ODM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/odm_mm/wheels}/torch-${torch_ver}-${py_tag}
mkdir -p "$cache"
whl=$(ls "$cache"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -1 || true)
if [ -n "$whl" ]; then
  echo "$whl"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[build_mmcv] building mmcv ${MMCV_VERSION} for torch ${torch_ver} (about 14 min on 2 cores)" >&2
$PY -m pip download --no-deps --no-binary=:all: --no-build-isolation -d "$work" "mmcv==${MMCV_VERSION}" >&2
tar -xzf "$work"/mmcv-${MMCV_VERSION}.tar.gz -C "$work"
src="$work/mmcv-${MMCV_VERSION}"
sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/setup.py"
( cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
    $PY -m pip wheel --no-deps --no-build-isolation -w "$work/dist" . >&2 )
cp "$work"/dist/mmcv-*.whl "$cache"/
ls "$cache"/mmcv-${MMCV_VERSION}-*.whl | head -1
