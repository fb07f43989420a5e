#!/usr/bin/env bash
# One GPU round in one device call: build (timed), GPU + CPU pytest suite, the main job, and with
# --sanitize compute-sanitizer memcheck/racecheck/initcheck on small cases. Logs and JSON go under $OUT.
# Usage (on the device machine): tools/gpu_round.sh [--sanitize] [pytest args]
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
if [ "${1:-}" = "--sanitize" ]; then
  sanitize=1
  shift
fi
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

echo "== pytest"
python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" "$@" tests/python \
  2>&1 | tee "$OUT/pytest.log" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== main job"
python3 -m fusedconv verify 2>&1 | tee "$OUT/main.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

if [ "$sanitize" = 1 ]; then
  echo "== compute-sanitizer"
  for tool in memcheck racecheck initcheck; do
    # Every kernel of the process: filtering to ours (--kernel-name) blinds initcheck to the
    # writes of torch's own kernels and reported 95k false "uninitialized" reads of randn data.
    compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 tools/sanitize_cases.py >"$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -n 1)"
    [ "$rc" -eq 0 ] || status=1
  done
fi
echo "gpu round status: $status"
exit "$status"
