#!/usr/bin/env bash
# One GPU round in one device call: build (timed), GPU + CPU pytest suite, the main job, and on
# request forward kernel times (--times: default and fallback kernels, graph-replay GPU time and
# error), the benchmark (--bench: python -m fusedconv bench, JSON + PNG) and compute-sanitizer
# memcheck/racecheck/initcheck/synccheck on small cases (--sanitize). --no-tests skips pytest
# and the main job. Logs and JSON go under $OUT.
# --crossover sweeps each fused kernel against the floor path (benchmarks/crossover.py).
# --candidates: the depthwise candidate kernels' A/B (benchmarks/
# depthwise_candidates_kernel_times.py) and the depthwise crossovers with them on
# (FUSEDCONV_DEPTHWISE_CANDIDATES=all).
# --small-backward: the v0 training step with the small-problem backward against the floor
# (benchmarks/small_backward_step.py) and its crossover (crossover.py --directions small_bwd).
# --grouped: the grouped kernel's GPU time against the floor (benchmarks/grouped_kernel_time.py)
# and its crossover (crossover.py --directions grouped).
# --timing-check: the networks suite's small-layer timings against plain loops in one process
# (benchmarks/networks_timing_check.py).
# --networks: the whole networks suite with eager, compile and fusedconv (two halves of about
# 215 and 160 s on an H100, each under its own timeout) into $OUT/networks.json;
# FUSEDCONV_NETWORKS_ARGS adds options (e.g. --inputs network).
# --groups N: the test files in N concurrent pytest processes (the whole suite takes more than
# one call's 600 s in one), each with two OpenMP threads: seven processes of 16 threads on 16 cores
# made CPU gradchecks crawl (seventeenth session); a test past 150 s dumps its stack. With
# --groups the trailing arguments are test files (split among the groups), not pytest options.
# Usage (on the device machine): scripts/gpu_round.sh [--times] [--bench] [--sanitize] [--no-tests]
#                                                   [--crossover] [--candidates]
#                                                   [--small-backward] [--grouped] [--networks]
#                                                   [--timing-check]
#                                                   [--groups N]
#                                                   [pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/fusedconv-gpu-round}"
mkdir -p "$OUT"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# This machine's image sets CXX=/opt/gcc/bin/g++, a GCC that links libstdc++ statically into the
# extension; mixed with torch's shared libstdc++, any C++ exception message that formats a number
# (every TORCH_CHECK with a shape in it) segfaults in std::num_put. Build with the distribution's
# GCC, which links libstdc++ dynamically like torch itself.
if [ -x /usr/bin/g++ ]; then
  export CXX=/usr/bin/g++ CC=/usr/bin/gcc
fi
sanitize=0
crossover=0
candidates=0
small_backward=0
grouped=0
timing_check=0
networks=0
times=0
bench=0
tests=1
groups=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --times) times=1 ;;
    --crossover) crossover=1 ;;
    --candidates) candidates=1 ;;
    --small-backward) small_backward=1 ;;
    --grouped) grouped=1 ;;
    --networks) networks=1 ;;
    --timing-check) timing_check=1 ;;
    --bench) bench=1 ;;
    --no-tests) tests=0 ;;
    --groups) groups="$2"; shift ;;
    *) break ;;
  esac
  shift
done
status=0

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -n 2
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== build"
python3 - <<'PY' 2>&1 | tee "$OUT/build.log"
import logging, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
started = time.perf_counter()
import fusedconv
fusedconv.load_extension()
print("build/load wall time: %.1f s" % (time.perf_counter() - started))
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build FAILED"; exit 1; }

if [ "$times" = 1 ]; then
  echo "== forward kernel times"
  timeout 240 python3 benchmarks/forward_kernel_times.py --cases "${FUSEDCONV_TIME_CASES:-v0.1,v0}" \
    --json "$OUT/times.json" 2>&1 | tee "$OUT/times.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  # The fallback kernels of the same cases: mma.sync for wgmma, FFMA for DMMA.
  FUSEDCONV_PLAN=fused FUSEDCONV_DISABLE_WGMMA=1 FUSEDCONV_DISABLE_DMMA=1 timeout 240 \
    python3 benchmarks/forward_kernel_times.py \
    --cases "${FUSEDCONV_TIME_CASES:-v0.1,v0}" 2>&1 | tee -a "$OUT/times.log"
fi

if [ "$crossover" = 1 ]; then
  echo "== crossover sweep (fused vs floor)"
  timeout "${FUSEDCONV_CROSSOVER_TIMEOUT:-300}" python3 benchmarks/crossover.py \
    --json "$OUT/crossover.json" ${FUSEDCONV_CROSSOVER_ARGS:-} >"$OUT/crossover.log" 2>&1
  echo "crossover: exit $?; $(tail -n 1 "$OUT/crossover.log")"
fi

if [ "$candidates" = 1 ]; then
  echo "== depthwise candidates: A/B, then the depthwise crossovers with them on"
  timeout 300 python3 benchmarks/depthwise_candidates_kernel_times.py \
    --json "$OUT/candidates_times.json" 2>&1 | tee "$OUT/candidates_times.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  FUSEDCONV_DEPTHWISE_CANDIDATES=all timeout 300 python3 benchmarks/crossover.py \
    --directions depthwise,depthwise_bwd --json "$OUT/candidates_crossover.json" \
    >"$OUT/candidates_crossover.log" 2>&1
  echo "candidates crossover: exit $?; $(tail -n 1 "$OUT/candidates_crossover.log")"
fi

if [ "$small_backward" = 1 ]; then
  echo "== small-problem backward: the v0 step, then the crossover"
  timeout 120 python3 benchmarks/small_backward_step.py 2>&1 | tee "$OUT/small_backward_step.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  timeout 120 python3 benchmarks/crossover.py --directions small_bwd \
    --json "$OUT/crossover_small_bwd.json" >"$OUT/crossover_small_bwd.log" 2>&1
  echo "small_bwd crossover: exit $?; $(tail -n 1 "$OUT/crossover_small_bwd.log")"
fi

if [ "$grouped" = 1 ]; then
  echo "== grouped kernel: GPU time, then the crossover"
  (cd benchmarks && timeout 120 python3 grouped_kernel_time.py) 2>&1 | tee "$OUT/grouped_time.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  timeout 120 python3 benchmarks/crossover.py --directions grouped \
    --json "$OUT/crossover_grouped.json" >"$OUT/crossover_grouped.log" 2>&1
  echo "grouped crossover: exit $?; $(tail -n 1 "$OUT/crossover_grouped.log")"
fi

if [ "$tests" = 1 ]; then
  echo "== pytest"
  if [ "$groups" -gt 1 ]; then
    files=(${@:-tests/python/test_*.py})
    pids=()
    for ((g = 0; g < groups; ++g)); do
      part=()
      for ((i = g; i < ${#files[@]}; i += groups)); do part+=("${files[$i]}"); done
      OMP_NUM_THREADS=2 python3 -m pytest -q -rs -p no:cacheprovider -o faulthandler_timeout=150 \
        --junitxml="$OUT/pytest_$g.xml" "${part[@]}" >"$OUT/pytest_$g.log" 2>&1 &
      pids+=($!)
    done
    for ((g = 0; g < groups; ++g)); do
      wait "${pids[$g]}" || status=1
      echo "group $g: $(tail -n 1 "$OUT/pytest_$g.log")"
    done
    grep -h -E "^(FAILED|ERROR)" "$OUT"/pytest_*.log | head -n 40
  else
    python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" \
      "${@:-tests/python}" \
      2>&1 | tee "$OUT/pytest.log" | tail -n 40
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  fi

  echo "== main job"
  python3 -m fusedconv verify 2>&1 | tee "$OUT/main.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if [ "$bench" = 1 ]; then
  echo "== bench"
  python3 -m fusedconv bench --json "$OUT/h100.json" --plot "$OUT/h100.png" \
    ${FUSEDCONV_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if [ "$timing_check" = 1 ]; then
  echo "== networks timing check (suite against plain loops)"
  timeout 240 python3 benchmarks/networks_timing_check.py 2>&1 | tee "$OUT/timing_check.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if [ "$networks" = 1 ]; then
  echo "== networks suite"
  for half in mnv3,r50 effb0,rx50; do
    # shellcheck disable=SC2086
    timeout 280 python3 -m fusedconv bench --suite networks --layers "$half" \
      --systems eager,compile,fusedconv --repeats 30 --json "$OUT/networks.json" \
      ${FUSEDCONV_NETWORKS_ARGS:-} >"$OUT/networks_${half/,/_}.log" 2>&1
    echo "$half: exit $?"
    grep -E "^summary" "$OUT/networks_${half/,/_}.log"
  done
fi

if [ "$sanitize" = 1 ]; then
  echo "== compute-sanitizer"
  for tool in memcheck racecheck initcheck synccheck; do
    # Every kernel of the process: filtering to ours (--kernel-name) blinds initcheck to the
    # writes of torch's own kernels and reported 95k false "uninitialized" reads of randn data.
    # The fused kernels wherever they apply (FUSEDCONV_PLAN=fused), the sanitizers' subject.
    FUSEDCONV_PLAN=fused compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 tests/sanitizer/sanitize_cases.py >"$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -n 1)"
    [ "$rc" -eq 0 ] || status=1
  done
fi
echo "gpu round status: $status"
exit "$status"
