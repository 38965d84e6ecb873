#!/usr/bin/env bash
# Compile checks of the cuda backend's C++/CUDA sources (no GPU needed):
#   * every csrc/*.cu with nvcc for sm_80 (-std=c++17) and sm_90 (-std=c++20), warnings as
#     errors (host and device), register spills / local memory use reported as errors;
#   * csrc/bindings.cpp with the host compiler against the installed torch's headers,
#     pybind11 and Python (-fsyntax-only, -Wall -Wextra -Werror on our code; torch headers are
#     -isystem), in C++17 and C++20 (torch 2.11 .. 2.13 build extensions with one or the other);
#   * csrc/launch_plan.h alone with the host compiler and no CUDA headers (the launch planning
#     is plain C++, shared by the launchers and the host emulator);
#   * then the sm_90 objects linked with a stub main calling both C entry points of launch.h:
#     every cell's kernels (cell_<name>.cu, explicit instantiations the entry points in
#     launcher.cu call) must be there, or the link fails here rather than at import on a GPU.
# Exits non-zero if any compile or the link fails.  Two jobs at a time (CHECK_JOBS to change).
# Usage: bash scripts/check_cuda_compile.sh
set -uo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then NVCC="$CUDA_HOME/bin/nvcc"; fi
if [[ -z "$NVCC" ]]; then echo "check_cuda_compile: nvcc not found (set NVCC or CUDA_HOME)" >&2; exit 2; fi
CXX="${CXX:-g++}"
PY="${PYTHON:-python}"
JOBS="${CHECK_JOBS:-2}"

INCLUDES=$("$PY" - <<'PYEOF'
import sysconfig
from torch.utils import cpp_extension
import pybind11
paths = cpp_extension.include_paths() + [pybind11.get_include(), sysconfig.get_paths()["include"]]
print(" ".join(f"-isystem {p}" for p in paths))
PYEOF
) || { echo "check_cuda_compile: cannot find torch/pybind11 include paths" >&2; exit 2; }

TORCH_NVCC_DEFINES="-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

jobs_file="$OUT/jobs"
: > "$jobs_file"
for cu in csrc/*.cu; do
  name=$(basename "$cu" .cu)
  # sm_90 also gets the defines torch's extension build passes to nvcc (no implicit half
  # conversions/operators), so code relying on them fails here, not on a GPU machine.
  for spec in "80 c++17" "90 c++20 $TORCH_NVCC_DEFINES"; do
    set -- $spec
    arch=$1 std=$2
    shift 2
    echo "$NVCC -std=$std $* -O3 -lineinfo -gencode=arch=compute_$arch,code=sm_$arch -Icsrc -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -warn-spills,-warn-lmem-usage -c $cu -o $OUT/${name}_sm$arch.o" >> "$jobs_file"
  done
done
echo "echo '#include \"launch_plan.h\"' | $CXX -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Icsrc -x c++ -" >> "$jobs_file"
for std in c++17 c++20; do
  echo "$CXX -std=$std -fsyntax-only -Wall -Wextra -Werror -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -Icsrc $INCLUDES csrc/bindings.cpp" >> "$jobs_file"
done

run_one() {
  local cmd="$1" log
  log=$(mktemp)
  if bash -c "$cmd" > "$log" 2>&1; then
    echo "ok    ${cmd:0:160}"
  else
    echo "FAIL  $cmd"
    cat "$log"
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
export -f run_one

start=$SECONDS
if ! tr '\n' '\0' < "$jobs_file" | xargs -0 -P "$JOBS" -I{} bash -c 'run_one "$1"' _ {}; then
  echo "check_cuda_compile: FAILED (see above)" >&2
  exit 1
fi
cat > "$OUT/link_main.cpp" <<'CPPEOF'
#include "launch.h"
int main() { return charlstm_forward(0, 0, 0, 0) + charlstm_backward(0, 0, 0, 0); }
CPPEOF
if ! run_one "$NVCC -std=c++17 -Icsrc -gencode=arch=compute_90,code=sm_90 $OUT/link_main.cpp $OUT/*_sm90.o -o $OUT/link_check"; then
  echo "check_cuda_compile: FAILED to link (see above)" >&2
  exit 1
fi
echo "check_cuda_compile: all $(wc -l < "$jobs_file") compiles and the link passed in $((SECONDS - start)) s"
exit 0
