// The CUDA library's entry points, torch-free: workspace queries and launchers of the forward,
// the fused backward and the activation gradient. Launchers never throw; they return the
// launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedconv/params.h"

namespace fusedconv {

// Which kernel a forward call runs (csrc/cuda/forward/forward_plan.cu, the dispatch rule):
// a fused family, kNone for an empty output, or kFloor where no fused kernel applies (the
// operator library then runs PyTorch's convolution plus hardswish_relu_inplace; launch_planned
// runs the exact but slow generic kernel there, for callers without PyTorch).
enum class ForwardKernel : int { kNone, kSmallProblem, kWgmma, kMmaSync, kFloor };

struct ForwardPlan {
  ForwardKernel kernel = ForwardKernel::kNone;
  // Device scratch the kernel needs in params.workspace (split weights: the mma.sync path's,
  // unless its CTAs split them into shared memory themselves, or the streamed wgmma kernel's).
  int64_t workspace_bytes = 0;
};

// Plans a call on the current device once; launch_planned then runs it (3xTF32 for float32, or
// one TF32 product where allow_tf32) with params.workspace holding plan.workspace_bytes.
cudaError_t plan_forward(const ConvParams& params, bool allow_tf32, ForwardPlan& plan);
cudaError_t launch_planned(const ConvParams& params, const ForwardPlan& plan, bool allow_tf32,
                           cudaStream_t stream);

// Both steps for callers that plan and launch separately (each plans again).
cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes);
cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream);

// y = relu(hardswish(y)) in place over `numel` contiguous elements of params.dtype (the floor
// path's one pass after PyTorch's convolution; any dense memory format).
cudaError_t launch_hardswish_relu_inplace(const ActivationParams& params, cudaStream_t stream);

// The fused backward (csrc/cuda/backward/) for the forward's tensor-core configurations with a
// non-empty output: `fast` says whether it takes `params`; where it does not, the caller computes
// the gradients another way. params.workspace must point to `bytes` bytes of device memory.
// Computes exactly the gradients whose pointers are non-null; deterministic run to run.
cudaError_t backward_workspace_bytes(const ConvBackwardParams& params, bool& fast,
                                     int64_t& bytes);
cudaError_t launch_conv_hardswish_relu_backward(const ConvBackwardParams& params,
                                                bool allow_tf32, cudaStream_t stream);

// grad_input = grad_output * f'(output).
cudaError_t launch_hardswish_relu_grad(const ActivationGradParams& params, cudaStream_t stream);

}  // namespace fusedconv
