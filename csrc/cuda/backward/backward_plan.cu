// Fused backward for the forward's fast-path configurations (float32, dense NCHW, stride 1,
// dilation 1, groups 1; docs/DESIGN.md, "Kernels"). g = dL/dz = grad_y * f'(y) is formed on the fly
// from grad_y and the saved output y while they are staged in shared memory: it is never written
// to global memory. Precision 3xTF32 (common/three_tf32.cuh), or one TF32 product when allow_tf32.
//
// grad_input: owner-computes implicit GEMM, M = input pixels (256-pixel tiles of one image),
//   N = input channels (8 per n8 tile), K = output channels x taps against the flipped weights,
//   walked in chunks of 8 output channels. Each CTA writes only its own pixels: no atomics. A
//   prep kernel splits W once per call into B-fragment order in the workspace.
// grad_weight, grad_bias: M = output channels (64 per CTA), N = (tap, input channel) pairs of an
//   8-channel chunk, K = output pixels (128-pixel tiles). A persistent CTA accumulates its tiles
//   in registers and writes one partial per warp; a reduce kernel sums the partials in a fixed
//   order, so the result is bitwise identical from run to run. grad_bias is summed from the staged
//   g in the same pass.
//
// This file is the backward's dispatch rule (whether the fused kernels take a call: where they
// apply and, under the default policy, measured faster than the floor), plans their workspace and
// launches dgrad.cu's and wgrad.cu's kernels for the gradients asked for, or the depthwise and
// small-problem backwards' entry points (depthwise_backward.h, small_backward.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backward/backward_plan.h"
#include "backward/depthwise_backward.h"
#include "backward/small_backward.h"
#include "backward/small_backward_bands.h"
#include "common/configuration.h"
#include "common/depthwise_candidates.h"
#include "common/depthwise_planes_domain.h"
#include "common/depthwise_rows_domain.h"
#include "common/device_limits.h"
#include "common/plan_memo.h"
#include "common/plan_policy.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace backward {
namespace {

// Where the fused backward measured faster than the floor's g pass plus PyTorch's convolution
// backward (cuDNN): nowhere reliably. On an H200 (benchmarks/crossover.py, batch 32, 216 float32
// NCHW stride-1 shapes per precision mode; benchmarks/NOTES.md "Crossovers") it won on 19
// (3xTF32) and 30 (TF32) shapes, by at most 1.3-1.5x, scattered among losses of the same
// channel counts, and lost down to 0.05x from 32 input channels on. So the default plan takes
// the floor; PlanPolicy::kFused still reaches the kernels (their tests, issue 21's work).
bool fused_beats_floor(const ConvParams& /*p*/, bool /*allow_tf32*/) { return false; }

// The depthwise backward (Python-call crossover, batch 32, all three gradients; benchmarks/
// NOTES.md, "Twelfth session"): NCHW 3x3 won all 56 float32 / bfloat16 shapes (1.13-1.51x,
// stride 1 and 2), NCHW 5x5 11 of 56; channels_last (weight pass re-sliced) float32 5x5 stride 2
// won all 14 (1.02-1.55x), float32 3x3 stride 2 11 of 14 (the rest 0.99x), stride 1 and most
// of bfloat16 lost. float16 was not measured. With the candidate kernels (common/
// depthwise_candidates.h; h200_crossover_depthwise_candidates.json and the GPU-time A/B,
// fifteenth session, benchmarks/NOTES.md): NCHW won all 156 records the row kernels take, in
// all three types (1.10-8.11x), and lost only outside them (0.93-0.99x, 7-wide outputs);
// channels_last 3x3 stride 2 with the sliding weight pass beats the floor in all three types
// (1.17-1.24x, summing the A/B's kernel times). The other channels_last cases lost (stride 1:
// 0.38-0.83x); one exception, 16-bit 5x5 stride 2 on 7x7 planes of 672 channels, beat the floor
// 2.6x in GPU time at batch 64 but lost at batch 32 in the crossover (0.77-0.85x): left there.
// Where a candidate is the reason to leave the floor, the rule asks whether it runs (the
// switch): "none" never plans the older kernels where they lost to the floor (channels_last
// float32 3x3 stride 2 with them: 11 of 14 won, the rest 0.99x). NCHW outside the rows with
// the planes grad_input (seventeenth session, GPU time of graph replay, batch 64, 3x3 / 5x5,
// 7x7 to 31x31 planes; an H100 and, for the 672-channel layer, an H200): won in all float32
// and bfloat16 cases (1.92-3.08x) and in float16 at stride 2 (1.77-2.08x), lost in float16
// at stride 1 (0.64-1.11x: cuDNN's float16 kernels). Where the measured rule runs the one pass by
// blocks of planes instead (a subset of those calls; twenty-third session), it beat the floor
// in every float32 / bfloat16 case timed there (2.40-4.44x, h100_depthwise_plane_blocks_times;
// with its tap walks, twenty-fourth session: 2.46-5.34x, h100_depthwise_plane_blocks_tap_walks_
// times, the 16-bit 3x3 stride-2 calls the rule now gives it included: 3.50x).
bool depthwise_beats_floor(const ConvParams& p, bool grad_input_wanted) {
  const bool nchw = p.input_strides.w == 1;  // channels_last has stride in_channels > 1 there
  if (nchw) {
    depthwise_rows::RowGeometry rows;
    const bool by_rows = depthwise_rows::row_geometry(p, rows) &&
                         run_candidate(DepthwiseCandidate::kRowsBackward, p);
    // The launcher's choice where the rows do not apply, measured with grad_input (without it
    // the older weight pass runs alone); cuDNN's float16 stride-1 backward beat the planes in 4
    // of 5 cases (0.64-1.11x), at stride 2 the planes won (1.77-2.08x).
    const bool by_planes = !by_rows && grad_input_wanted &&
                           depthwise_planes::grad_input_applies(p) &&
                           run_candidate(DepthwiseCandidate::kPlanesGradInput, p) &&
                           (p.dtype != DType::kFloat16 || p.stride_h == 2);
    return by_rows || by_planes ||
           (p.kernel_h == 3 && (p.dtype == DType::kFloat32 || p.dtype == DType::kBFloat16));
  }
  if (p.stride_h != 2 || p.stride_w != 2) {
    return false;
  }
  const bool float32 = p.dtype == DType::kFloat32;
  const bool sliding = depthwise_backward::channels_last::sliding_weight_pass_applies(p) &&
                       run_candidate(DepthwiseCandidate::kSlidingWeightPass, p);
  return (p.kernel_h == 3 && (float32 || sliding)) || (p.kernel_h == 5 && float32);
}

// The small-problem backward (small_backward.cu) against the floor (benchmarks/crossover.py
// --directions small_bwd, batch 32, ms per op call). Its positions kernel won all 15 shapes up to
// 2^22 multiply-adds (batch x output positions x out_channels x in_channels x taps) on an H200
// and an H100 (seventeenth session) and lost above (0.37-0.87x: issue- and latency-bound). Its
// bands kernel (3x3 stride 1, where a band fits) won all 19 of its shapes on an H100 (1.08-3.16x,
// up to 2^27.3), and KernelBench's v0 (batch 128, 2^25.6) in GPU time (52 us against the floor's
// ~98) and per Python training step (0.24 against 0.33 ms; eighteenth session).
bool small_backward_beats_floor(const ConvParams& p) {
  constexpr int64_t kMaxMultiplyAdds = int64_t{1} << 22;
  constexpr int64_t kMaxBandsMultiplyAdds = int64_t{1} << 28;  // the largest measured, rounded up
  const int64_t positions = p.batch * p.out_height * p.out_width;
  const int64_t per_position = p.out_channels * p.in_channels * p.kernel_h * p.kernel_w;
  const int64_t limit =
      small_backward_bands::applies(p) ? kMaxBandsMultiplyAdds : kMaxMultiplyAdds;
  return positions <= limit / std::max<int64_t>(1, per_position);
}

// Where the floor's g pass sums grad_bias (activation_bias_grad.cu) instead of ATen's reduction
// over g: everywhere it applies. Predicted from traffic (the pass reads what the plain g pass
// reads; ATen's reduction, one more read of g and in channels_last bfloat16 the largest kernel
// of a training step, goes away) and measured by benchmarks/crossover.py --directions
// bias_grad (benchmarks/NOTES.md, "Twelfth session").
bool bias_in_gradient_pass_beats_floor(const ConvParams& /*p*/) { return true; }

// The layouts and workspace of a call the fused kernels can take; false where they cannot (shape,
// or a tile beyond shared memory).
bool make_plan(const ConvParams& p, const DeviceLimits& limits, BackwardMask mask,
               FusedPlan& plan) {
  plan = FusedPlan{};
  plan.limits = limits;
  plan.dgrad = make_dgrad_layout(p);
  plan.wgrad = make_wgrad_layout(p, limits);
  const bool want_params = mask.grad_weight || mask.grad_bias;
  if ((mask.grad_input && plan.dgrad.shared_bytes > limits.max_shared_bytes) ||
      (want_params && plan.wgrad.shared_bytes > limits.max_shared_bytes)) {
    return false;
  }
  if (mask.grad_input) {
    plan.dgrad_workspace_bytes = (plan.dgrad.fragment_words * 4 + 15) / 16 * 16;
  }
  if (want_params) {
    plan.wgrad_workspace_bytes = (plan.wgrad.partial_slots * plan.wgrad.weight_size +
                                  int64_t{plan.wgrad.grid_x} * p.out_channels) *
                                 4;
  }
  plan.use = true;
  return true;
}

// The fused plan of a call, memoized per thread on (shape, device, gradients asked for): the
// launch after plan_backward finds it without recomputing the layouts.
cudaError_t fused_plan(const ConvParams& p, BackwardMask mask, bool& applies,
                       FusedPlan& plan) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  thread_local PlanMemo<FusedPlan> memo;
  const int64_t variant = (mask.grad_input ? 1 : 0) | (mask.grad_weight ? 2 : 0) |
                          (mask.grad_bias ? 4 : 0);
  applies = memo.get(plan_key(p, limits, variant), plan, [&](FusedPlan& made) {
    return make_plan(p, limits, mask, made);
  });
  return cudaSuccess;
}

BackwardMask mask_of(const ConvBackwardParams& bp) {
  BackwardMask mask;
  mask.grad_input = bp.grad_input != nullptr;
  mask.grad_weight = bp.grad_weight != nullptr;
  mask.grad_bias = bp.grad_bias != nullptr;
  return mask;
}

}  // namespace
}  // namespace backward

namespace backward {
namespace {

// The kernels of a valid call under `policy` (plan_backward below adds the floor's bias choice).
cudaError_t plan_kernels(const ConvBackwardParams& params, BackwardMask mask, bool allow_tf32,
                         PlanPolicy policy, BackwardPlan& plan) {
  const ConvParams& p = params.conv;
  if (p.batch * p.out_channels * p.out_height * p.out_width == 0 ||
      !(mask.grad_input || mask.grad_weight || mask.grad_bias)) {
    plan.kernel = BackwardKernel::kNone;
    return cudaSuccess;
  }
  plan.kernel = BackwardKernel::kFloor;
  // A one-launch family's plan: its kernel and the workspace it sizes for the gradients wanted.
  const auto take = [&](BackwardKernel kernel,
                        cudaError_t (*workspace_bytes)(const ConvParams&, bool, int64_t&)) {
    int64_t bytes = 0;
    const cudaError_t status = workspace_bytes(p, mask.grad_weight || mask.grad_bias, bytes);
    if (status == cudaSuccess) {
      plan.kernel = kernel;
      plan.workspace_bytes = bytes;
    }
    return status;
  };
  if (policy != PlanPolicy::kFloor && depthwise_backward::applies(p) &&
      (policy == PlanPolicy::kFused || backward::depthwise_beats_floor(p, mask.grad_input))) {
    return take(BackwardKernel::kDepthwise, depthwise_backward::workspace_bytes);
  }
  if (policy != PlanPolicy::kFloor && small_backward::applies(p) &&
      (policy == PlanPolicy::kFused || backward::small_backward_beats_floor(p))) {
    return take(BackwardKernel::kSmallProblem, small_backward::workspace_bytes);
  }
  // grad_output is read as float4 rows like y: the caller's tensor, possibly an offset view.
  if (policy == PlanPolicy::kFloor || !fast_path_shape_supported(p) ||
      !aligned_16(params.grad_output) ||
      (policy == PlanPolicy::kMeasured && !backward::fused_beats_floor(p, allow_tf32))) {
    return cudaSuccess;
  }
  bool applies = false;
  backward::FusedPlan fused;
  const cudaError_t status = backward::fused_plan(p, mask, applies, fused);
  if (status == cudaSuccess && applies) {
    plan.kernel = BackwardKernel::kFused;
    plan.workspace_bytes = fused.dgrad_workspace_bytes + fused.wgrad_workspace_bytes;
  }
  return status;
}

}  // namespace
}  // namespace backward

cudaError_t plan_backward(const ConvBackwardParams& params, BackwardMask mask, bool allow_tf32,
                          BackwardPlan& plan) {
  plan = BackwardPlan{};
  const ConvParams& p = params.conv;
  if (!valid_geometry(p)) {
    return cudaErrorInvalidValue;
  }
  const PlanPolicy policy = begin_plan();
  const cudaError_t status = backward::plan_kernels(params, mask, allow_tf32, policy, plan);
  // The pass takes fewer than 2^31 elements (launch.h); float64 was not measured.
  const int64_t elements = p.batch * p.out_channels * p.out_height * p.out_width;
  plan.floor_sums_bias = status == cudaSuccess && plan.kernel == BackwardKernel::kFloor &&
                         mask.grad_bias && policy != PlanPolicy::kFloor &&
                         elements < (int64_t{1} << 31) && p.dtype != DType::kFloat64 &&
                         (policy == PlanPolicy::kFused ||
                          backward::bias_in_gradient_pass_beats_floor(p));
  return status;
}

cudaError_t launch_planned_backward(const ConvBackwardParams& params, const BackwardPlan& plan,
                                    bool allow_tf32, cudaStream_t stream) {
  if (plan.kernel == BackwardKernel::kNone) {
    return cudaSuccess;
  }
  if (plan.kernel == BackwardKernel::kDepthwise) {
    if (params.workspace == nullptr && plan.workspace_bytes > 0) {
      return cudaErrorInvalidValue;
    }
    return depthwise_backward::launch(params, stream);
  }
  if (plan.kernel == BackwardKernel::kSmallProblem) {
    if (params.workspace == nullptr && plan.workspace_bytes > 0) {
      return cudaErrorInvalidValue;
    }
    return small_backward::launch(params, stream);
  }
  if (plan.kernel != BackwardKernel::kFused) {
    return cudaErrorNotSupported;  // the floor: the caller's convolution library runs it
  }
  bool applies = false;
  backward::FusedPlan fused;
  cudaError_t status = backward::fused_plan(params.conv, backward::mask_of(params), applies, fused);
  if (status != cudaSuccess) {
    return status;
  }
  if (!applies || (params.workspace == nullptr && plan.workspace_bytes > 0)) {
    return cudaErrorInvalidValue;
  }
  if (params.grad_input != nullptr) {
    status = backward::launch_dgrad(params, fused, !allow_tf32, stream);
    if (status != cudaSuccess) {
      return status;
    }
  }
  if (params.grad_weight != nullptr || params.grad_bias != nullptr) {
    ConvBackwardParams wgrad = params;
    wgrad.grad_input = nullptr;
    wgrad.workspace = static_cast<char*>(params.workspace) + fused.dgrad_workspace_bytes;
    status = backward::launch_wgrad(wgrad, fused, !allow_tf32, stream);
  }
  return status;
}

}  // namespace fusedconv
