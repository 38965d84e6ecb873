#!/usr/bin/env bash
# Install charlstm with its test extras and run the whole CPU test suite:
#   1. ruff (the lint rules of pyproject.toml) over the whole tree,
#   2. the unit/conformance tests (Triton kernels under the Triton interpreter),
#   3. the throughput benchmarks in smoke mode (each runs once, nothing is timed or compared),
#   4. the CUDA sources' compile check (nvcc, sm_80 + sm_90, warnings as errors), if nvcc exists.
# Exits non-zero if anything fails.  Tests marked `cuda` are skipped without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch first, on its own, so that nothing below resolves torch to another (CUDA) build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0" || exit 1
fi
"$PY" -m pip install -q -e ".[test,triton]" || exit 1

# The browser test of `charlstm viz` (tests/test_viz.py) opens a page in headless Chromium:
# install Debian's package when it is missing and apt-get can (as root, or with password-less
# sudo), refreshing the package lists if the first try fails.  Without apt the install is
# skipped, and the test fails rather than skips (CHARLSTM_REQUIRE_BROWSER=1) so that CI sees it.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && [ -z "${CHARLSTM_CHROMIUM:-}" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; }
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    echo "test.sh: installing chromium (apt-get) for the viz browser test"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q chromium >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; } \
      || echo "test.sh: apt-get install chromium failed: the viz browser test will fail"
  else
    echo "test.sh: chromium is missing and apt-get is unavailable (or not root): the viz" \
         "browser test will fail (install Chromium, or set CHARLSTM_CHROMIUM to one)"
  fi
fi
export CHARLSTM_REQUIRE_BROWSER=${CHARLSTM_REQUIRE_BROWSER:-1}

status=0
export TRITON_INTERPRET=${TRITON_INTERPRET:-$("$PY" -c "import torch; print(0 if torch.cuda.is_available() else 1)")}
"$PY" -m ruff check . || status=1
"$PY" -m pytest tests "$@" || status=1
"$PY" -m pytest benchmarks/test_throughput.py benchmarks/test_scripts.py --benchmark-disable -q || status=1
if [ -f scripts/check_cuda_compile.sh ]; then
  if command -v nvcc >/dev/null 2>&1; then
    bash scripts/check_cuda_compile.sh || status=1
  else
    echo "test.sh: nvcc not found: CUDA compile check skipped"
  fi
fi
exit $status
