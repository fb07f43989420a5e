#!/usr/bin/env bash
# Profiling round for the forward kernel (kernel notes): ncu sections and per-instruction stall
# samples of one v0.1 call (another benchmark case with FUSEDCONV_PROFILE_PROBLEM=<case name>;
# pick the kernel with FUSEDCONV_PROFILE_KERNEL, a regex, default wgmma_kernel), and the SASS of
# the Hopper kernels. Expects the extension built (run after scripts/gpu_round.sh in the same
# device call). Output under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/fusedconv-gpu-round}"
mkdir -p "$OUT"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -x /usr/bin/g++ ]; then
  export CXX=/usr/bin/g++ CC=/usr/bin/gcc
fi
timeout 300 ncu --kernel-name "regex:${FUSEDCONV_PROFILE_KERNEL:-wgmma_kernel}" --launch-skip 1 \
  --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SourceCounters \
  -o "$OUT/profile" -f python3 benchmarks/profile_forward.py >"$OUT/ncu-run.log" 2>&1
echo "ncu exit $?"
ncu --import "$OUT/profile.ncu-rep" --page details >"$OUT/ncu.txt" 2>&1
ncu --import "$OUT/profile.ncu-rep" --page source --csv --print-source sass \
  >"$OUT/ncu-source.csv" 2>&1
library=$(find "$TORCH_EXTENSIONS_DIR" -name 'fusedconv_ext_cuda*.so' | head -n 1)
cuobjdump --dump-sass "$library" |
  awk '/Function : .*wgmma/{p=1} p{print} /Function : / && !/wgmma/{p=0}' \
  >"$OUT/wgmma.sass"
wc -l "$OUT/wgmma.sass"
grep -E "Duration|Throughput|Registers|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots" \
  "$OUT/ncu.txt" | head -n 30
