#!/usr/bin/env bash
# Profiling round for the small-problem backward by bands (issue 21): builds the study binary
# (experiments/small_backward_tiled.cu, which runs the package's kernel too) and takes ncu's
# sections and per-instruction stall samples of one bands-kernel launch at KernelBench's v0
# (padding 1; another shape with FUSEDCONV_PROFILE_ARGS="batch cin cout size kernel pad rows").
# Why: the kernel takes 52-61 us at v0 on an H100 where its instruction count predicts ~15.
# Output under $OUT; needs no extension build.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-/tmp/fusedconv-gpu-round}"
mkdir -p "$OUT"
nvcc -O3 -std=c++17 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc/include -Icsrc/cuda \
  -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  experiments/small_backward_tiled.cu csrc/cuda/backward/small_backward.cu \
  csrc/cuda/backward/small_backward_bands.cu -o "$OUT/sbt" || exit 1
args=${FUSEDCONV_PROFILE_ARGS:-128 3 16 32 3 1 8}
# shellcheck disable=SC2086
timeout 300 ncu --kernel-name "regex:small_backward_bands" --launch-skip 5 --launch-count 1 \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SourceCounters \
  --section LaunchStats -o "$OUT/bands" -f "$OUT/sbt" $args >"$OUT/ncu-run.log" 2>&1
echo "ncu exit $?"
ncu --import "$OUT/bands.ncu-rep" --page details >"$OUT/ncu.txt" 2>&1
ncu --import "$OUT/bands.ncu-rep" --page source --csv --print-source sass \
  >"$OUT/ncu-source.csv" 2>&1
grep -E "Duration|Throughput|Registers|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots|Stall" \
  "$OUT/ncu.txt" | head -n 40
