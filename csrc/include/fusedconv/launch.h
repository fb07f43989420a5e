// The CUDA library's entry points, torch-free: the planners and launchers of the forward, the
// fused backward and the activation passes. Launchers never throw; they return the
// launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {

// How the planners choose (process-wide; FUSEDCONV_PLAN in the environment sets the start value,
// torch.ops.fusedconv._plan_policy changes it for tests and benchmarks):
//   kMeasured: a fused kernel only inside its measured crossover, where it beat the floor
//              (docs/DESIGN.md, "The dispatch rule"); the default.
//   kFused:    a fused kernel wherever one applies (the kernels' own tests, crossover sweeps).
//   kFloor:    never a fused kernel (A/B timing against the floor).
enum class PlanPolicy : int { kMeasured, kFused, kFloor };
// The names of PlanPolicy and DepthwiseCandidates (below) in their order: FUSEDCONV_PLAN,
// FUSEDCONV_DEPTHWISE_CANDIDATES and the ops that set them.
constexpr const char* kPlanPolicyNames[3] = {"measured", "fused", "floor"};
constexpr const char* kDepthwiseCandidatesNames[3] = {"measured", "all", "none"};
PlanPolicy plan_policy();
PlanPolicy set_plan_policy(PlanPolicy policy);  // returns the previous policy
// The depthwise candidate kernels: NCHW by vector rows (csrc/cuda/common/depthwise_rows.cuh:
// forward, grad_input, weight pass), channels_last filters staged in shared memory
// (common/staged_filters.cuh: the forward's vector kernel and grad_input), the channels_last
// weight pass by sliding rows, and NCHW forward and grad_input by whole planes in shared memory
// (common/depthwise_planes_domain.h). kMeasured (the default) runs each where the measured rule
// (common/depthwise_candidates.h) says it beats the kernel it replaces, kAll wherever it applies,
// kNone never. FUSEDCONV_DEPTHWISE_CANDIDATES=measured|all|none sets the start value (any
// other value reads as measured), torch.ops.fusedconv._depthwise_candidates changes it (tests,
// A/B benchmarks). Read at each depthwise launch, and by the depthwise crossovers where a
// candidate is what beats the floor (neither is memoized).
enum class DepthwiseCandidates : int { kMeasured, kAll, kNone };
DepthwiseCandidates depthwise_candidates();
DepthwiseCandidates set_depthwise_candidates(DepthwiseCandidates choice);  // returns the previous
// The channels_last wgmma forward (Hopper, stride 1) as a candidate for the calls of the
// channels_last GEMM and the floor (csrc/cuda/forward/forward_plan.cu): kMeasured (the default)
// where its measured rule says it beats them, kAll wherever it applies, kNone never (the
// channels_last GEMM's tests: their subject is that kernel). Under the fused policy a
// channels_last call that no other fused kernel takes still runs the wgmma kernel unless kNone.
// FUSEDCONV_CHANNELS_LAST_WGMMA=measured|all|none sets the start value,
// torch.ops.fusedconv._channels_last_wgmma changes it (tests, A/B benchmarks); read at each plan.
enum class ChannelsLastWgmma : int { kMeasured, kAll, kNone };
constexpr const char* kChannelsLastWgmmaNames[3] = {"measured", "all", "none"};
ChannelsLastWgmma channels_last_wgmma();
ChannelsLastWgmma set_channels_last_wgmma(ChannelsLastWgmma choice);  // returns the previous
// How many plans (forward and backward) this process has made: the test that each op call plans
// exactly once reads it before and after a call.
int64_t plan_count();

// Which kernel a forward call runs (csrc/cuda/forward/forward_plan.cu, the dispatch rule):
// a fused family, kNone for an empty output, or kFloor where the floor runs instead (the
// operator library's PyTorch convolution plus hardswish_relu_inplace; this torch-free library has
// no convolution of its own there, and launch_planned returns cudaErrorNotSupported).
enum class ForwardKernel : int {
  kNone,
  kDepthwise,
  kGrouped,
  kChannelsLastGemm,
  kSmallProblem,
  kWgmma,
  kMmaSync,
  kFloor
};

struct ForwardPlan {
  ForwardKernel kernel = ForwardKernel::kNone;
  // Device scratch the kernel needs in params.workspace (split weights: the mma.sync path's,
  // unless its CTAs split them into shared memory themselves, or the streamed wgmma kernel's).
  int64_t workspace_bytes = 0;
};

// Plans a call on the current device once; launch_planned then runs it (3xTF32 for float32, or
// one TF32 product where allow_tf32) with params.workspace holding plan.workspace_bytes.
// cudaErrorInvalidValue for a geometry valid_geometry (params.h) refuses; so for plan_backward.
cudaError_t plan_forward(const ConvParams& params, bool allow_tf32, ForwardPlan& plan);
cudaError_t launch_planned(const ConvParams& params, const ForwardPlan& plan, bool allow_tf32,
                           cudaStream_t stream);

// y = relu(hardswish(y + bias)) in place over `numel` contiguous elements of params.dtype (the
// floor path's one pass after PyTorch's convolution; any dense memory format). A bias needs
// numel < 2^31 (cudaErrorInvalidValue otherwise): the channel index uses 32-bit division.
cudaError_t launch_hardswish_relu_inplace(const ActivationParams& params, cudaStream_t stream);

// Which gradients a backward call computes.
struct BackwardMask {
  bool grad_input = false, grad_weight = false, grad_bias = false;
};

// Which kernels a backward call runs (csrc/cuda/backward/backward_plan.cu): the fused backward,
// the depthwise or the small-problem one, kNone for an empty output or no gradient asked for, or
// kFloor (the operator library's g = grad_output * f'(y) pass and PyTorch's convolution
// backward).
enum class BackwardKernel : int { kNone, kFused, kDepthwise, kSmallProblem, kFloor };

struct BackwardPlan {
  BackwardKernel kernel = BackwardKernel::kNone;
  int64_t workspace_bytes = 0;  // device scratch the fused kernels need in params.workspace
  // kFloor only: the g pass sums grad_bias (launch_hardswish_relu_bias_grad) and the
  // convolution backward is asked for grad_input / grad_weight alone.
  bool floor_sums_bias = false;
};

// Plans a backward call on the current device once, from its shapes, grad_output's pointer (the
// fused kernels read it as 16-byte rows; null for a dense copy yet to be made, which any fresh
// allocation aligns) and the gradients asked for. launch_planned_backward
// computes exactly the gradients whose pointers are non-null, deterministically run to run; it
// reuses the plan's layouts from a per-thread memo of the last shape planned.
cudaError_t plan_backward(const ConvBackwardParams& params, BackwardMask mask, bool allow_tf32,
                          BackwardPlan& plan);
cudaError_t launch_planned_backward(const ConvBackwardParams& params, const BackwardPlan& plan,
                                    bool allow_tf32, cudaStream_t stream);

// grad_input = grad_output * f'(output).
cudaError_t launch_hardswish_relu_grad(const ActivationGradParams& params, cudaStream_t stream);

// The same pass with grad_bias summed in it (the floor backward where the plan says
// floor_sums_bias): params.grad_bias and params.workspace set, the workspace of the bytes the
// query returns for this shape on the current device; params.grad_input may be null (g not
// stored: grad_bias alone). The sums' order depends on the shape and the SM count only
// (bitwise identical run to run, whatever the pointers' alignment). Needs numel < 2^31 and
// numel a multiple of channels x channel_stride (cudaErrorInvalidValue otherwise).
cudaError_t hardswish_relu_bias_grad_workspace_bytes(const ActivationGradParams& params,
                                                     int64_t& bytes);
cudaError_t launch_hardswish_relu_bias_grad(const ActivationGradParams& params,
                                            cudaStream_t stream);

}  // namespace fusedconv
