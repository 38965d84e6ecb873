#!/usr/bin/env bash
# Every GPU check of charlstm in one command.  Usage, from anywhere:
#
#     scripts/gpu_check.sh OUTDIR
#
# Steps (each runs even when an earlier one failed, each under its own `timeout`, and each
# records pass / failed / skipped and its seconds):
#   env          versions, nvidia-smi, tools found                        (always runs)
#   build        pip install --no-deps --no-build-isolation -e .  with TORCH_CUDA_ARCH_LIST set
#                from torch.cuda.get_device_capability(), so the extension is built for this GPU only
#   canary       scripts/gpu_canary.py for the triton persistent schedule and the cuda persistent
#                and persistent_tc paths, 60 s each: a path that fails or hangs is recorded and
#                later steps steer around it (env.override, CHARLSTM_GPU_CANARY_FAILED)
#   pytest-cuda  pytest -m cuda tests  (JUnit XML)
#   triton       tests/test_triton_kernels.py's unmarked tests, which on a GPU run the compiled
#                Triton kernels on CUDA tensors (not the interpreter)
#   memcheck, racecheck, synccheck
#                compute-sanitizer --tool <tool> on scripts/cuda_sanitize_case.py
#   bench        benchmarks/bench_lstm.py --quick, plus one full-size row per backend
#                (B=16, T=1024, H=768, bfloat16) and the B=1, H=512 per-step latency, for the
#                cuda backend (auto and FMA persistent paths) and the triton backend in
#                separate runs (triton with one fixed configuration); short bench_train.py and bench_sample.py runs (char-rnn
#                characters/s per backend); then the headline row for cuda's stepwise path,
#                for triton autotuned, and for each of triton's other two schedules.  Every
#                run has its own timeout.
#   fixtures     tests/cudnn_fixtures/generate.py --device cuda  (cuDNN's outputs and gradients)
#   fixture-tests  tests/test_cudnn_fixtures.py against the fixtures just generated
#   ncu          Nsight Compute (speed of light, occupancy, memory, warp states) of the cuda
#                backend's auto and persistent paths and triton's persistent schedule at
#                B=16, H=768 bf16, T=64 (scripts/profile_case.py); the report is logs/ncu.log
#
# Without a GPU the steps that need one report "skipped: no GPU" and the exit code is 0 unless
# something failed.  OUTDIR receives at most 4 flat files (the fetch from a GPU machine takes at
# most 8 files, 16 MiB each):
#   summary.txt      the one-screen summary printed at the end
#   summary.json     the same, machine-readable
#   results.tar.gz   results/{logs/*.log, junit-*.xml, bench/*.json|md|png, fixtures/*}
#   bench.md         the benchmark tables (when the bench step produced any), concatenated
# The summary and the archive are rewritten after every step, so an interrupted run still leaves
# what it did.  Environment knobs: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 540:
# total seconds; a step never gets more than what is left), GPU_CHECK_TIMEOUT_<STEP> (seconds,
# e.g. GPU_CHECK_TIMEOUT_BUILD=300), GPU_CHECK_STEPS (space-separated subset to run),
# GPU_CHECK_SANITIZER_ARGS (extra compute-sanitizer options).
set -u -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
export ROOT
export PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
export RES="$WORK/results"
mkdir -p "$RES/logs" "$RES/bench" "$RES/fixtures"
BUDGET=${GPU_CHECK_BUDGET_S:-540}
START=$(date +%s)
# Order: what later sessions need most first (results to commit), the slow sanitizers last;
# the total budget may cut the tail.
ALL_STEPS="env build canary pytest-cuda bench fixtures fixture-tests ncu triton memcheck racecheck synccheck"
STEPS=${GPU_CHECK_STEPS:-$ALL_STEPS}

HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
export HAS_GPU
if [ "$HAS_GPU" = 1 ]; then
  DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null)
else
  DEVICE="no GPU (torch.cuda.is_available() is False)"
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT+dirty"; fi

declare -a R_NAME R_STATUS R_SECS

# ------------------------------------------------------------------------- the steps
# Each runs in its own bash under `timeout`; exit 0 = pass, 77 = skipped (reason in
# $RES/logs/<step>.skip), anything else = failed.
skip() { echo "$1" > "$RES/logs/$STEP.skip"; exit 77; }
need_gpu() { [ "$HAS_GPU" = 1 ] || skip "no GPU"; }
export -f skip need_gpu

step_env() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "commit: $(git rev-parse HEAD 2>/dev/null)"
  "$PY" - <<'EOF'
import json, sys
sys.path.insert(0, ".")
import torch
from benchmarks.common import environment, pick_device
print(json.dumps(environment(pick_device("auto")), indent=1))
EOF
  local rc=$?
  for tool in nvidia-smi nvcc ncu compute-sanitizer ninja; do
    printf '%-18s %s\n' "$tool" "$(command -v "$tool" || echo 'not found')"
  done
  command -v nvidia-smi >/dev/null && nvidia-smi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  return $rc
}

step_build() {
  need_gpu
  local arch
  arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || return 1
  echo "TORCH_CUDA_ARCH_LIST=$arch"
  TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=${MAX_JOBS:-16} \
    "$PY" -m pip install --no-deps --no-build-isolation -e . || return 1
  # load (or JIT-build) the extension now, so no later step pays for a compile
  "$PY" -c "from charlstm.backends.cuda import build; build.load_extension(verbose=True)" || return 1
  "$PY" -c "import charlstm, charlstm.backends as b; print({n: b.status(n) for n in b.BACKENDS})"
}

# A small run of each kernel path whose failure mode is a hang (spin barriers), under its own
# timeout, before the long steps use them.  What fails or hangs is written to env.override,
# which every later step reads: CHARLSTM_GPU_CANARY_FAILED (tests/conftest.py skips the tests
# that force those paths), and defaults that avoid them (CHARLSTM_TRITON_SCHEDULE=step,
# CHARLSTM_CUDA_PATH=stepwise or persistent) for everything else.
step_canary() {
  need_gpu
  local kind failed="" rc=0
  for kind in triton-persistent cuda-persistent cuda-persistent_tc; do
    echo "== canary $kind"
    CHARLSTM_TRITON_AUTOTUNE=0 timeout -k 5 60 "$PY" scripts/gpu_canary.py "$kind"
    case $? in
      0) ;;
      2) echo "($kind cannot run here: not counted; the tests will say why)" ;;
      *) failed="$failed $kind"; rc=1 ;;
    esac
  done
  failed=${failed# }
  {
    echo "CHARLSTM_GPU_CANARY_FAILED=\"$failed\""
    case " $failed " in *" triton-persistent "*) echo "CHARLSTM_TRITON_SCHEDULE=step" ;; esac
    case " $failed " in
      *" cuda-persistent "*) echo "CHARLSTM_CUDA_PATH=stepwise" ;;
      *" cuda-persistent_tc "*) echo "CHARLSTM_CUDA_PATH=persistent" ;;
    esac
  } > "$RES/env.override"
  [ -n "$failed" ] && echo "failed or hung: $failed (later steps steer around them)" > "$RES/logs/$STEP.note"
  return $rc
}

# pytest, with its final count line ("12 passed, 3 skipped in 4.1s") kept as the step's note.
# Verbose (one line per test as it finishes), so a run cut by its timeout or the budget still
# says in its log which tests passed and failed; the 15 slowest tests are listed at the end.
run_pytest() {
  "$PY" -m pytest "$@" -v -rs --durations=15
  local rc=$?
  grep -E '[0-9]+ (passed|failed|skipped|error)' "$RES/logs/$STEP.log" | tail -1 | tr -d '=' \
    | sed 's/^ *//' > "$RES/logs/$STEP.note"
  return $rc
}

step_pytest_cuda() {
  need_gpu
  # tests check correctness: one fixed Triton configuration instead of autotuning every shape
  CHARLSTM_TRITON_AUTOTUNE=0 run_pytest -m cuda tests --junitxml="$RES/junit-cuda.xml"
  local rc=$?
  [ $rc = 5 ] && skip "no tests marked cuda were collected"
  return $rc
}

step_triton() {
  need_gpu
  CHARLSTM_TRITON_AUTOTUNE=0 run_pytest tests/test_triton_kernels.py -m "not cuda" --junitxml="$RES/junit-triton.xml"
}

sanitize() {
  need_gpu
  command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not on PATH"; return 1; }
  [ -f scripts/cuda_sanitize_case.py ] || { echo "scripts/cuda_sanitize_case.py is missing"; return 1; }
  # GPU_CHECK_SANITIZER_ARGS: extra options, e.g. "--kernel-name kns=lstm" to check only our kernels
  # shellcheck disable=SC2086
  compute-sanitizer --tool "$1" --error-exitcode 99 --print-limit 50 ${GPU_CHECK_SANITIZER_ARGS:-} \
    "$PY" scripts/cuda_sanitize_case.py
}
# Nsight Compute on the headline shape (T=64): the cuda backend's auto path (tensor cores for
# bf16 at B=16) and its FMA persistent path, and the triton backend's persistent schedule; the
# profiled run is each script's second (--launch-skip skips the warm-up's kernels)
step_ncu() {
  need_gpu
  command -v ncu >/dev/null || { echo "ncu not on PATH"; return 1; }
  local rc=0 what
  for what in "cuda --path auto" "cuda --path persistent" "triton"; do
    echo "== ncu: $what"
    # shellcheck disable=SC2086
    CHARLSTM_TRITON_AUTOTUNE=0 timeout -k 5 60 ncu --kernel-name regex:'persistent|lstm_' \
      --launch-skip 2 --launch-count 2 --section SpeedOfLight --section LaunchStats \
      --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats \
      "$PY" scripts/profile_case.py --backend $what || rc=1
  done
  return $rc
}
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }
step_synccheck() { sanitize synccheck; }

# one benchmark invocation under its own timeout, so that a hung kernel (e.g. a spin barrier
# that never opens) costs that invocation only; a timeout is listed in the step's note
bench_part() {
  local secs=$1 label=$2; shift 2
  echo "-- $label (timeout ${secs}s): $*"
  timeout -k 5 "$secs" "$@"
  local rc=$?
  case $rc in 0) ;; 124|137) echo "$label: timeout after ${secs}s" >> "$RES/logs/$STEP.parts" ;;
    *) echo "$label: exit $rc" >> "$RES/logs/$STEP.parts" ;; esac
  return $rc
}

step_bench() {
  need_gpu
  local rc=0 B="$PY benchmarks/bench_lstm.py" ROW=16,1024,768,bfloat16 sched
  : > "$RES/logs/$STEP.parts"
  # 1. quick grid + headline row (B=16, T=1024, H=768 bf16) + B=1/H=512 latency: cuDNN and the
  #    cuda backend, then cuDNN and the triton backend (separate runs: a hang in one backend
  #    cannot take the other's numbers with it; the ratio is always to cuDNN in the same run).
  #    triton runs one fixed configuration here (autotuning every shape would not fit the
  #    budget); its JSON records triton_autotune=false.
  #    cuda runs its auto path (tensor cores for 16-bit from batch 8) and the FMA persistent one.
  bench_part 90 lstm-cuda $B --quick --row $ROW --latency --backends torch,cuda,cuda:persistent \
    --out "$RES/bench" --tag gpu-check-cuda || rc=1
  CHARLSTM_TRITON_AUTOTUNE=0 bench_part 90 lstm-triton $B --quick --row $ROW --latency \
    --backends torch,triton --out "$RES/bench" --tag gpu-check-triton || rc=1
  # 2. char-rnn training and sampling characters/s per backend (short runs)
  CHARLSTM_TRITON_AUTOTUNE=0 bench_part 45 train "$PY" benchmarks/bench_train.py --iters 20 \
    --warmup-iters 5 --out "$RES/bench" --tag gpu-check || rc=1
  CHARLSTM_TRITON_AUTOTUNE=0 bench_part 45 sample "$PY" benchmarks/bench_sample.py --length 200 \
    --out "$RES/bench" --tag gpu-check || rc=1
  # 3. the headline row for triton autotuned (default, persistent schedule), then its other two
  #    schedules with the fixed configuration (what choose_launch's rule needs)
  bench_part 60 triton-tuned $B --row $ROW --backends torch,triton --no-plot \
    --out "$RES/bench" --tag gpu-check-triton-tuned || rc=1
  bench_part 30 cuda-stepwise $B --row $ROW --latency --backends torch,cuda:stepwise --no-plot \
    --out "$RES/bench" --tag gpu-check-cuda-stepwise || rc=1
  for sched in sequence step; do
    CHARLSTM_TRITON_AUTOTUNE=0 CHARLSTM_TRITON_SCHEDULE=$sched bench_part 30 triton-$sched \
      $B --row $ROW --backends torch,triton --no-plot --out "$RES/bench" \
      --tag gpu-check-triton-$sched || rc=1
  done
  "$PY" - "$RES/bench" "$RES/logs/$STEP.parts" > "$RES/logs/$STEP.note" <<'EOF'
import glob, json, sys
rows = [r for f in glob.glob(sys.argv[1] + "/*.json") for r in json.load(open(f))["rows"]]
errs = [r for r in rows if "error" in r]
parts = [l.strip() for l in open(sys.argv[2]) if l.strip()]
print(f"{len(rows)} rows, {len(errs)} with errors" + (f" (first: {errs[0]['backend']})" if errs else "")
      + (f"; {'; '.join(parts)}" if parts else ""))
EOF
  return $rc
}

step_fixtures() {
  need_gpu
  "$PY" tests/cudnn_fixtures/generate.py --device cuda --out "$RES/fixtures"
}

step_fixture_tests() {
  need_gpu
  [ -f "$RES/fixtures/metadata.json" ] || skip "the fixtures step produced no fixtures"
  CHARLSTM_TRITON_AUTOTUNE=0 CHARLSTM_CUDNN_FIXTURES="$RES/fixtures" run_pytest tests/test_cudnn_fixtures.py \
    --junitxml="$RES/junit-fixtures.xml"
}
export -f bench_part run_pytest step_env step_build step_canary step_pytest_cuda step_triton sanitize step_ncu step_memcheck step_racecheck \
  step_synccheck step_bench step_fixtures step_fixture_tests

default_timeout() {
  case $1 in
    env) echo 60 ;; build) echo 240 ;; canary) echo 200 ;; pytest-cuda) echo 180 ;; triton) echo 60 ;; memcheck) echo 90 ;;
    racecheck) echo 90 ;; synccheck) echo 60 ;; ncu) echo 150 ;; bench) echo 300 ;; fixtures) echo 60 ;;
    fixture-tests) echo 90 ;; *) echo 60 ;;
  esac
}

# ------------------------------------------------------------------------- reporting
write_summary() {
  local failed=0 passed=0 skipped=0 i
  {
    echo "charlstm gpu_check  $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $COMMIT"
    echo "device: $DEVICE"
    printf '%-14s %-56s %7s\n' step result seconds
    for i in "${!R_NAME[@]}"; do
      printf '%-14s %-56s %7s\n' "${R_NAME[$i]}" "${R_STATUS[$i]:0:56}" "${R_SECS[$i]}"
      case ${R_STATUS[$i]} in
        pass*) passed=$((passed + 1)) ;;
        failed*) failed=$((failed + 1)) ;;
        *) skipped=$((skipped + 1)) ;;
      esac
    done
    echo "total: $passed passed, $failed failed, $skipped skipped in $(( $(date +%s) - START ))s"
    [ "$HAS_GPU" = 1 ] || echo "no GPU: every step that needs one was skipped (nothing was checked on a GPU)"
    for i in "${!R_NAME[@]}"; do
      case ${R_STATUS[$i]} in
        failed*)
          echo "--- ${R_NAME[$i]}: last lines of logs/${R_NAME[$i]}.log"
          tail -n 4 "$RES/logs/${R_NAME[$i]}.log" 2>/dev/null | cut -c1-160 ;;
      esac
    done
    echo "details: results.tar.gz (logs/, junit-*.xml, bench/, fixtures/)"
  } > "$OUT/summary.txt"
  "$PY" - "$OUT/summary.json" "$COMMIT" "$DEVICE" "$HAS_GPU" \
    "$(printf '%s\n' "${R_NAME[@]}")" "$(printf '%s\n' "${R_STATUS[@]}")" "$(printf '%s\n' "${R_SECS[@]}")" <<'EOF'
import json, sys
path, commit, device, gpu, names, status, secs = sys.argv[1:8]
steps = [{"step": n, "result": s, "seconds": int(t)}
         for n, s, t in zip(names.splitlines(), status.splitlines(), secs.splitlines())]
json.dump({"commit": commit, "device": device, "gpu": gpu == "1", "steps": steps}, open(path, "w"),
          indent=1)
EOF
  tar -czf "$OUT/results.tar.gz.tmp" -C "$WORK" results && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
  # every benchmark table of the run, one after another
  if ls "$RES"/bench/*.md >/dev/null 2>&1; then cat "$RES"/bench/*.md > "$OUT/bench.md"; fi
  return 0
}

run_step() {
  local name=$1 fn=step_${1//-/_} var t left t0 rc status
  var=GPU_CHECK_TIMEOUT_$(echo "$name" | tr 'a-z-' 'A-Z_')
  t=${!var:-$(default_timeout "$name")}
  left=$(( BUDGET - ($(date +%s) - START) ))
  t0=$(date +%s)
  if [ "$left" -lt 20 ]; then
    status="skipped: time budget (${BUDGET}s) used up"
  else
    [ "$t" -gt $((left - 10)) ] && t=$((left - 10))
    echo "== $name (timeout ${t}s)" >&2
    STEP=$name timeout -k 10 "$t" bash -c "$fn" > "$RES/logs/$name.log" 2>&1
    rc=$?
    case $rc in
      0) status=pass; [ -s "$RES/logs/$name.note" ] && status="pass: $(cat "$RES/logs/$name.note")" ;;
      77) status="skipped: $(cat "$RES/logs/$name.skip" 2>/dev/null)" ;;
      124|137) status="failed: timeout after ${t}s" ;;
      *) status="failed (exit $rc)"
         [ -s "$RES/logs/$name.note" ] && status="failed: $(cat "$RES/logs/$name.note")" ;;
    esac
  fi
  R_NAME+=("$name"); R_STATUS+=("$status"); R_SECS+=($(( $(date +%s) - t0 )))
  echo "   $name: $status" >&2
  # what the canary step found applies to every later step
  if [ -f "$RES/env.override" ]; then set -a; . "$RES/env.override"; set +a; fi
  write_summary
}

export STEP=""
for s in $STEPS; do
  case " $ALL_STEPS " in
    *" $s "*) run_step "$s" ;;
    *) echo "unknown step '$s' (known: $ALL_STEPS)" >&2; R_NAME+=("$s"); R_STATUS+=("failed: unknown step"); R_SECS+=(0) ;;
  esac
done
write_summary
cat "$OUT/summary.txt"
rm -rf "$WORK"
for st in "${R_STATUS[@]}"; do
  case $st in failed*) exit 1 ;; esac
done
exit 0
