// The forward's dispatch rule, its one home: which kernel runs a call, and the workspace it
// needs. In order:
//   1. small problems (at most 16 output channels and 32 inputs per output position): the
//      small-problem kernels (DMMA / FFMA), one launch, no workspace;
//   2. on Hopper, more than 16 output channels: the wgmma kernels, where their tile fits;
//   3. the mma.sync tensor-core kernel (float32 dense NCHW, any stride and dilation), where its
//      tile fits;
//   4. otherwise the floor: the operator library runs PyTorch's own convolution plus one fused
//      activation pass (csrc/torch/ops_cuda.cpp). Callers without PyTorch launch the generic
//      direct convolution instead (exact, slow).
// Each family's own `applies` says what it can run; the order and the crossovers are here.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/plan_memo.h"
#include "forward/families.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace {

// Process-wide opt-out of the Hopper kernel (FUSEDCONV_DISABLE_WGMMA=1, read once): for A/B
// timing against the mma.sync kernel, and a way around it should it misbehave on some setup.
bool wgmma_disabled() {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_WGMMA");
  return disabled;
}

// Process-wide opt-out of the mma.sync kernel (FUSEDCONV_DISABLE_MMA_SYNC=1, read once): its
// calls take the floor path instead, for A/B timing of the crossover between the two.
bool mma_sync_disabled() {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_MMA_SYNC");
  return disabled;
}

// Up to 16 output channels the mma.sync kernel's 16-channel tiles win: one wgmma block pads
// them to 64 (measured crossover: 32 output channels run faster on wgmma; benchmarks/NOTES.md).
constexpr int64_t kMinWgmmaOutChannels = 17;

}  // namespace

cudaError_t plan_forward(const ConvParams& params, bool allow_tf32, ForwardPlan& plan) {
  plan = ForwardPlan{};
  if (params.batch * params.out_channels * params.out_height * params.out_width == 0) {
    plan.kernel = ForwardKernel::kNone;
    return cudaSuccess;
  }
  if (small_problem::applies(params)) {
    plan.kernel = ForwardKernel::kSmallProblem;
    return cudaSuccess;
  }
  bool applies = false;
  if (!wgmma_disabled() && params.out_channels >= kMinWgmmaOutChannels) {
    const cudaError_t status =
        wgmma::forward_applies(params, allow_tf32, applies, plan.workspace_bytes);
    if (status != cudaSuccess || applies) {
      plan.kernel = ForwardKernel::kWgmma;
      return status;
    }
  }
  if (mma_sync_disabled()) {
    plan.kernel = ForwardKernel::kFloor;
    return cudaSuccess;
  }
  const cudaError_t status = mma_sync::forward_applies(params, applies, plan.workspace_bytes);
  plan.kernel = applies ? ForwardKernel::kMmaSync : ForwardKernel::kFloor;
  return status;
}

cudaError_t launch_planned(const ConvParams& params, const ForwardPlan& plan, bool allow_tf32,
                           cudaStream_t stream) {
  switch (plan.kernel) {
    case ForwardKernel::kNone:
      return cudaSuccess;  // an empty output
    case ForwardKernel::kSmallProblem:
      return small_problem::launch(params, stream);
    case ForwardKernel::kWgmma:
      return wgmma::launch(params, allow_tf32, stream);
    case ForwardKernel::kMmaSync:
      return mma_sync::launch(params, allow_tf32, stream);
    default:
      return generic::launch(params, stream);
  }
}

cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes) {
  ForwardPlan plan;
  const cudaError_t status = plan_forward(params, allow_tf32, plan);
  bytes = plan.workspace_bytes;
  return status;
}

cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream) {
  ForwardPlan plan;
  const cudaError_t status = plan_forward(params, allow_tf32, plan);
  return status != cudaSuccess ? status : launch_planned(params, plan, allow_tf32, stream);
}

}  // namespace fusedconv
