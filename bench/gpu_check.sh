#!/usr/bin/env bash
# Verifies the CUDA backend in one command on a GPU machine (an H100/H200 with nvcc, cmake, ninja,
# torch, cupy and pytest; nothing of ours installed): builds for sm_90 on every core, runs the GPU
# tests, compute-sanitizer's memcheck/racecheck/synccheck/initcheck on a run that reaches every
# kernel, the profiler's count of kernels per optimizer step, and the GPU benchmarks; each step
# under its own timeout. Failing GPU tests are rerun with the kernel switches off
# (bench/gpu_switch_bisect.py), which names the change behind them.  Writes 6 files into OUTDIR:
# summary.txt, build.log, tests.log, sanitize.log, bench.log and results.tgz (this run's
# cuda_*.json, also left in bench/results/; `tar -xzf results.tgz -C bench/results` files them in
# a checkout), and ends with a summary of about 40 lines.
#
#   bash bench/gpu_check.sh OUTDIR            # on the GPU machine, from anywhere
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # without a GPU: the build and the plumbing only
#   GPU_CHECK_STEPS=tests,bn,ln bash bench/gpu_check.sh OUTDIR   # a recheck: only these steps
#     (of tests, sanitize, bn, ln, ncu, optim, fullbatch, syncbn, userpath, profile; the build
#     always runs)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
dry=${GPU_CHECK_DRY:-0}
budget=${GPU_CHECK_BUDGET:-530}   # seconds for the whole run: later steps get what is left
t0=$(date +%s)
summary="$out/summary.txt"
: >"$summary"
status=0

steps=",${GPU_CHECK_STEPS:-all},"
say() { printf '%s\n' "$*" | tee -a "$summary"; }

# want STEP: whether this run includes STEP.
want() { [ "$steps" = ",all," ] || [[ "$steps" == *",$1,"* ]]; }

left() { echo $((budget - ($(date +%s) - t0))); }

# run_step NAME LIMIT_S LOG CMD...: one step under its own timeout (never past the budget), its
# output appended to LOG.
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local start rc
  [ "$limit" -gt "$(($(left) - 5))" ] && limit=$(($(left) - 5))
  if [ "$limit" -lt 10 ]; then
    say "SKIP  $name: out of time"
    status=1
    return
  fi
  start=$(date +%s)
  echo "==== $name: $*" >>"$log"
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$(($(date +%s) - start))
  if [ "$rc" -eq 0 ]; then
    say "ok    $name (${took}s)"
  else
    [ "$rc" -eq 124 ] && rc="timeout after ${limit}s"
    say "FAIL  $name: $rc (${took}s; see $(basename "$log"))"
    status=1
  fi
}

find_sanitizer() {
  command -v compute-sanitizer && return
  for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/compute-sanitizer \
           "$(dirname "$(command -v nvcc 2>/dev/null || echo /x)")"; do
    [ -x "$d/compute-sanitizer" ] && { echo "$d/compute-sanitizer"; return; }
  done
}

say "gpu_check $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
  2>/dev/null | sed 's/^/gpu   /' | tee -a "$summary"

# ---- 1. build for this machine only, every core: sm_90 and the baseline CPU ISA (the GPU tests
# never take the other CPU paths; wheels build them all)
build_log="$out/build.log"
export FUSEDTRAIN_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
export CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90 -DFUSEDTRAIN_CPU_ISAS=baseline"
run_step "build (sm_90, $(nproc) jobs)" 180 "$build_log" \
  "$py" -m pip install --no-build-isolation --no-deps --no-index --force-reinstall -v .
run_step "import" 30 "$build_log" "$py" -m fusedtrain info
"$py" -c "import fusedtrain as ft; i = ft.info(); print('info  cuda', i['cuda_runtime_version'], i['cuda_devices'], i.get('cuda_error') or '')" \
  2>/dev/null | tee -a "$summary"

if [ "$dry" = 1 ]; then
  say "dry run: GPU steps not run"
  GPU_SKIP=1
else
  GPU_SKIP=0
fi

# ---- 2. GPU tests and the four sanitizers, side by side (the sanitizers are CPU-bound)
tests_log="$out/tests.log"
san_log="$out/sanitize.log"
if [ "$GPU_SKIP" = 0 ]; then
  export FUSEDTRAIN_REQUIRE_GPU=1
  sanitizer=$(want sanitize && find_sanitizer)
  pids=()
  if ! want sanitize; then
    :
  elif [ -n "$sanitizer" ]; then
    for tool in memcheck racecheck synccheck initcheck; do
      timeout -k 5 200 "$sanitizer" --tool "$tool" --error-exitcode 9 --print-limit 30 \
        "$py" bench/gpu_sanitize.py >"$out/.san_$tool" 2>&1 &
      pids+=($!)
    done
  else
    say "FAIL  compute-sanitizer not found"
    status=1
  fi
  workers=$(($(nproc) / 2))
  if want tests; then
    run_step "GPU tests" 240 "$tests_log" "$py" -m pytest tests -m gpu -q -p no:cacheprovider \
      -n "$workers" -rfE --tb=short
    tail -n 1 "$tests_log" | sed 's/^/tests /' | tee -a "$summary"
    # Failures: which switch turned off clears them (Note [row kernel switches]), at most 120 s.
    if grep -qE '^(FAILED|ERROR) ' "$tests_log" && [ "$(left)" -gt 150 ]; then
      "$py" bench/gpu_switch_bisect.py "$tests_log" --budget 120 -- -n "$workers" --tb=line \
        2>&1 | sed 's/^/bisect /' | tee -a "$summary" "$tests_log"
    fi
  fi
  i=0
  for tool in memcheck racecheck synccheck initcheck; do
    [ -n "$sanitizer" ] || break
    wait "${pids[$i]}"
    rc=$?
    i=$((i + 1))
    { echo "==== $tool (rc $rc)"; cat "$out/.san_$tool"; } >>"$san_log"
    # racecheck sums up in a "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)" line
    # where it prints one (the 2026-11-27 runs printed none).
    line=$(grep -hE "(ERROR|RACECHECK) SUMMARY" "$out/.san_$tool" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
      say "ok    sanitizer $tool: ${line:-no summary: nothing reported}"
    else
      say "FAIL  sanitizer $tool: rc $rc, ${line:-no summary} (see sanitize.log)"
      status=1
    fi
    rm -f "$out/.san_$tool"
  done
fi

# ---- 3. the profiler's view of a step, then the benchmarks (alone on the GPU)
bench_log="$out/bench.log"
marker="$out/.start"
touch "$marker"
if [ "$GPU_SKIP" = 0 ]; then
  want bn && run_step "bench: batch norm" 120 "$bench_log" "$py" bench/bench_bn_cuda.py
  want ln && run_step "bench: layer, RMS and group norm" 120 "$bench_log" "$py" bench/bench_ln_cuda.py
  # Hardware counters of the kernels behind the short targets (time, DRAM and SM throughput as
  # % of peak, bytes), before the benches of targets already met: a run short of time skips those.
  if want ncu && command -v ncu >/dev/null; then
    run_step "ncu: counters of the timed kernels" 90 "$bench_log" ncu --clock-control none \
      -k 'regex:rule_kernel|planar_|rows_|matrix_kernel|each_kernel|_grad_kernel' --csv --metrics \
      gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
      "$py" bench/gpu_ncu_targets.py
  fi
  # shellcheck disable=SC2086 # GPU_CHECK_OPTIM_ARGS: extra arguments, e.g. --rules adamw,momentum
  want optim && run_step "bench: optimizers" 120 "$bench_log" "$py" bench/bench_optim_cuda.py ${GPU_CHECK_OPTIM_ARGS:-}
  want fullbatch && run_step "bench: full-batch L-BFGS" 120 "$bench_log" "$py" bench/bench_fullbatch_cuda.py --rounds 5
  want syncbn && run_step "bench: SyncBatchNorm over 1-rank NCCL" 60 "$bench_log" "$py" bench/bench_sync_bn_cuda.py
  want userpath && run_step "bench: import and host time, torch CUDA and CuPy" 90 "$bench_log" \
    "$py" bench/bench_torch_user_path.py --devices cuda --quick
  want profile && run_step "profile: kernels per step (10,000 tensors)" 60 "$bench_log" "$py" bench/gpu_profile_step.py
fi
# This run's results alone (bench/results/ also holds committed ones of other GPUs).
fresh="$out/.results"
mkdir -p "$fresh"
find bench/results -maxdepth 1 -name 'cuda_*.json' -newer "$marker" -exec cp {} "$fresh/" \;
rm -f "$marker"
"$py" bench/gpu_summary.py "$fresh" 2>&1 | tee -a "$summary"
if compgen -G "$fresh/cuda_*.json" >/dev/null; then
  tar -czf "$out/results.tgz" -C "$fresh" $(cd "$fresh" && ls cuda_*.json)
fi
rm -rf "$fresh"
say "total $(($(date +%s) - t0))s, status $status"
exit "$status"
