// Which depthwise candidate kernel runs where it applies (fusedconv/launch.h): the switch, and
// under its default the measured rule, the one home of where a candidate beats the kernel it
// replaces (benchmarks/NOTES.md has the measurements).
#pragma once

#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {

enum class DepthwiseCandidate : int {
  kRowsForward,         // NCHW forward by vector rows (depthwise.cu)
  kRowsBackward,        // NCHW grad_input and weight pass by vector rows (depthwise_backward.cu)
  kStagedForward,       // channels_last forward with staged filters (depthwise.cu)
  kStagedGradInput,     // channels_last grad_input with staged filters
  kSlidingWeightPass,   // channels_last weight pass by sliding rows
  kPlanesGradInput,     // NCHW grad_input by whole planes in shared memory (depthwise_backward.cu)
  kPlanesForward,       // NCHW forward by blocks of planes in shared memory (depthwise_planes)
  kPlanesBackward,      // NCHW backward by blocks of planes, one pass (depthwise_backward_planes)
};

// Where each candidate was measured faster than the kernel it replaces, inside its domain (the
// launchers test the domain). GPU time per call on an H200 (benchmarks/
// depthwise_candidates_kernel_times.py, batch 64, the networks suite's six depthwise layers in
// float32 / bfloat16 / float16; benchmarks/results/h200_depthwise_candidates_times.json,
// benchmarks/NOTES.md "Fifteenth session"):
// - NCHW rows won every case in their domain: forward 1.74-3.21x, backward 3.10-9.79x.
// - Staged forward filters won in 16-bit (1.23-1.28x over resident 3x3 filters, 1.03-1.25x at
//   5x5) and at float32 5x5 (1.11-1.47x), and lost at float32 3x3 (0.90-0.97x: four channels
//   per vector, per-tap loads cost less) and where the copy grew to 33.6 KB per CTA (16-bit 5x5
//   of 672 channels on a 7x7 output: 0.70-0.76x). The 16 KB cap below lies between the wins
//   (up to 14.4 KB) and that loss; it also gives up float32 5x5 of 240 channels (24 KB), which
//   the crossover had winning against the floor by 1.05-1.13x, not measured against per tap.
// - Staged grad_input filters won over per-tap ones at 5x5 (2.1-2.4x at stride 1, 1.10-1.41x
//   in 16-bit at stride 2) but lost at float32 5x5 stride 2 (0.92x, a pixel gathers a quarter
//   of the taps) and tied or lost against resident 3x3 filters (0.85-1.05x).
// - The sliding weight pass won at 3x3 (1.05-1.64x) and at float32 5x5 (1.56-1.69x) on outputs
//   28-112 wide; it lost on a 7-wide output (0.55-0.89x: short runs) and at 16-bit 5x5
//   (0.70-0.73x). The threshold, 14 wide, is chosen between 7 and 28, not measured.
// - The planes grad_input (what the rows do not take) won over the gather in all 27 cases
//   measured (seventeenth session: `--planes-shapes` on an H100, results/
//   h100_depthwise_planes_times.txt, and the 672-channel layer on an H200: 3x3 / 5x5, stride
//   1 / 2, 7x7 to 31x31 planes, three types; 1.14-2.53x).
// - Blocks of planes (twenty-third session, `--planes-shapes` on an H100, results/
//   h100_depthwise_plane_blocks_times.txt: 3x3 / 5x5, stride 1 / 2, 7x7 to 31x31 outputs,
//   float32 and bfloat16), against the default each replaces:
//   - forward: won at stride 1 in every case (1.25-1.98x; larger outputs than the 31x31
//     measured keep the default, bound 1024); at stride 2 won in 16-bit at 5x5 (1.33-1.44x),
//     tied at 16-bit 3x3 (0.97x), and in float32 won once staged 16 bytes at a time
//     (twenty-fourth session, h100_depthwise_plane_blocks_tap_walks_times.txt: 1.12-1.45x);
//   - backward in one pass, with its tap walks (twenty-fourth session): won on outputs of up
//     to 15x15 (1.91-4.65x; 1.39x over the planes grad_input at 16-bit 3x3 stride 2), and on a
//     31x31 output tied with the planes grad_input (0.96-1.06x: few planes to a block).
//     The bound, 256 outputs, lies between 225 and 961, not measured in between.
// 7x7 kernels, other strides and dilation were not measured: the kernels they replace keep them.
inline bool candidate_measured_faster(DepthwiseCandidate candidate, const ConvParams& p) {
  const bool half = element_bytes(p.dtype) == 2;
  const int64_t k = p.kernel_h;
  const int64_t staged_bytes = p.kernel_h * p.kernel_w * p.in_channels * element_bytes(p.dtype);
  // The planes kernels' measured domain: square 3x3 / 5x5, stride 1 / 2 on both axes, no dilation.
  const bool square_3_or_5 = (k == 3 || k == 5) && p.kernel_w == k && p.stride_h == p.stride_w &&
                             (p.stride_h == 1 || p.stride_h == 2) && p.dilation_h == 1 &&
                             p.dilation_w == 1;
  switch (candidate) {
    case DepthwiseCandidate::kRowsForward:
    case DepthwiseCandidate::kRowsBackward:
      return true;
    case DepthwiseCandidate::kStagedForward:
      return (k == 5 || (k == 3 && half)) && staged_bytes <= 16 * 1024;
    case DepthwiseCandidate::kStagedGradInput:
      return k == 5 && ((p.stride_h == 1 && p.stride_w == 1) || half);
    case DepthwiseCandidate::kSlidingWeightPass:
      return (k == 3 || (k == 5 && p.dtype == DType::kFloat32)) && p.out_width >= 14;
    case DepthwiseCandidate::kPlanesGradInput:
      return square_3_or_5;
    case DepthwiseCandidate::kPlanesForward:
      return square_3_or_5 && p.out_height * p.out_width <= 1024 &&
             (p.stride_h == 1 || !(half && k == 3));
    case DepthwiseCandidate::kPlanesBackward:
      return square_3_or_5 && p.out_height * p.out_width <= 256;
  }
  return false;
}

inline bool run_candidate(DepthwiseCandidate candidate, const ConvParams& p) {
  switch (depthwise_candidates()) {
    case DepthwiseCandidates::kAll:
      return true;
    case DepthwiseCandidates::kNone:
      return false;
    default:
      return candidate_measured_faster(candidate, p);
  }
}

}  // namespace fusedconv
