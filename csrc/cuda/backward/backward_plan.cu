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
// This file plans a call (whether the fused kernels take it, and their workspace) and launches
// dgrad.cu's and wgrad.cu's kernels for the gradients asked for.
#include <cuda_runtime.h>

#include <cstdint>

#include "backward/backward_plan.h"
#include "common/configuration.h"
#include "common/device_limits.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace backward {
namespace {

cudaError_t plan(const ConvBackwardParams& bp, BackwardPlan& plan) {
  plan = BackwardPlan{};
  // grad_output is read as float4 rows like y: the caller's tensor, possibly an offset view.
  if (!fast_path_shape_supported(bp.conv) || !aligned_16(bp.grad_output)) {
    return cudaSuccess;
  }
  const cudaError_t status = device_limits(plan.limits);
  if (status != cudaSuccess) {
    return status;
  }
  plan.dgrad = make_dgrad_layout(bp.conv);
  plan.wgrad = make_wgrad_layout(bp.conv, plan.limits);
  const bool want_input = bp.grad_input != nullptr;
  const bool want_params = bp.grad_weight != nullptr || bp.grad_bias != nullptr;
  if ((want_input && plan.dgrad.shared_bytes > plan.limits.max_shared_bytes) ||
      (want_params && plan.wgrad.shared_bytes > plan.limits.max_shared_bytes)) {
    return cudaSuccess;
  }
  if (want_input) {
    plan.dgrad_workspace_bytes = (plan.dgrad.fragment_words * 4 + 15) / 16 * 16;
  }
  if (want_params) {
    plan.wgrad_workspace_bytes =
        (plan.wgrad.partial_slots * plan.wgrad.weight_size +
         int64_t{plan.wgrad.grid_x} * bp.conv.out_channels) * 4;
  }
  plan.use = true;
  return cudaSuccess;
}

}  // namespace
}  // namespace backward

cudaError_t backward_workspace_bytes(const ConvBackwardParams& params, bool& fast,
                                     int64_t& bytes) {
  backward::BackwardPlan plan;
  const cudaError_t status = backward::plan(params, plan);
  fast = plan.use;  // false: the caller takes its composite path
  bytes = plan.dgrad_workspace_bytes + plan.wgrad_workspace_bytes;
  return status;
}

cudaError_t launch_conv_hardswish_relu_backward(const ConvBackwardParams& params,
                                                bool allow_tf32, cudaStream_t stream) {
  backward::BackwardPlan plan;
  cudaError_t status = backward::plan(params, plan);
  if (status != cudaSuccess) {
    return status;
  }
  if (!plan.use || (params.workspace == nullptr &&
                    plan.dgrad_workspace_bytes + plan.wgrad_workspace_bytes > 0)) {
    return cudaErrorInvalidValue;
  }
  if (params.grad_input != nullptr) {
    status = backward::launch_dgrad(params, plan, !allow_tf32, stream);
    if (status != cudaSuccess) {
      return status;
    }
  }
  if (params.grad_weight != nullptr || params.grad_bias != nullptr) {
    ConvBackwardParams wgrad = params;
    wgrad.grad_input = nullptr;
    wgrad.workspace = static_cast<char*>(params.workspace) + plan.dgrad_workspace_bytes;
    status = backward::launch_wgrad(wgrad, plan, !allow_tf32, stream);
  }
  return status;
}

}  // namespace fusedconv
