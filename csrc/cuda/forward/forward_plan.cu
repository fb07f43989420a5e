// The forward's dispatch rule, its one home: which kernel family runs a call, and the workspace
// it needs. In order:
//   1. small problems (at most 16 output channels and 32 inputs per output position): the
//      small-problem kernels (DMMA / FFMA), one launch, no workspace;
//   2. on Hopper, more than 16 output channels: the wgmma kernels, where their tile fits;
//   3. the mma.sync tensor-core kernel (float32 dense NCHW, any stride and dilation), where its
//      tile fits;
//   4. the generic direct convolution (exact, every configuration).
// Each family's own `applies` says what it can run; the order and the crossovers are here.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/plan_memo.h"
#include "forward/families.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace {

enum class ForwardFamily { kNone, kSmallProblem, kWgmma, kMmaSync, kGeneric };

// Process-wide opt-out of the Hopper kernel (FUSEDCONV_DISABLE_WGMMA=1, read once): for A/B
// timing against the mma.sync kernel, and a way around it should it misbehave on some setup.
bool wgmma_disabled() {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_WGMMA");
  return disabled;
}

// Up to 16 output channels the mma.sync kernel's 16-channel tiles win: one wgmma block pads
// them to 64 (measured crossover: 32 output channels run faster on wgmma; benchmarks/NOTES.md).
constexpr int64_t kMinWgmmaOutChannels = 17;

cudaError_t choose_family(const ConvParams& params, bool allow_tf32, ForwardFamily& family,
                          int64_t& workspace_bytes) {
  family = ForwardFamily::kNone;
  workspace_bytes = 0;
  if (params.batch * params.out_channels * params.out_height * params.out_width == 0) {
    return cudaSuccess;
  }
  if (small_problem::applies(params)) {
    family = ForwardFamily::kSmallProblem;
    return cudaSuccess;
  }
  bool applies = false;
  if (!wgmma_disabled() && params.out_channels >= kMinWgmmaOutChannels) {
    const cudaError_t status =
        wgmma::forward_applies(params, allow_tf32, applies, workspace_bytes);
    if (status != cudaSuccess || applies) {
      family = ForwardFamily::kWgmma;
      return status;
    }
  }
  const cudaError_t status = mma_sync::forward_applies(params, applies, workspace_bytes);
  family = applies ? ForwardFamily::kMmaSync : ForwardFamily::kGeneric;
  return status;
}

}  // namespace

cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes) {
  ForwardFamily family;
  return choose_family(params, allow_tf32, family, bytes);
}

cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream) {
  ForwardFamily family;
  int64_t workspace_bytes = 0;
  const cudaError_t status = choose_family(params, allow_tf32, family, workspace_bytes);
  if (status != cudaSuccess) {
    return status;
  }
  switch (family) {
    case ForwardFamily::kNone:
      return cudaSuccess;  // an empty output
    case ForwardFamily::kSmallProblem:
      return small_problem::launch(params, stream);
    case ForwardFamily::kWgmma:
      return wgmma::launch(params, allow_tf32, stream);
    case ForwardFamily::kMmaSync:
      return mma_sync::launch(params, allow_tf32, stream);
    default:
      return generic::launch(params, stream);
  }
}

}  // namespace fusedconv
