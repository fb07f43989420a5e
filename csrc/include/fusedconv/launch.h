// The CUDA library's entry points, torch-free: workspace queries and launchers of the forward,
// the fused backward and the activation gradient. Launchers never throw; they return the
// launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))) for any configuration ConvParams can describe, on the
// kernel family the dispatch rule picks (csrc/cuda/forward/forward_plan.cu): 3xTF32 for
// float32, or one TF32 product where allow_tf32. params.workspace must point to
// forward_workspace_bytes(params, allow_tf32) bytes of device memory (split weights: the mma.sync
// path's, unless its CTAs split them into shared memory themselves, or the streamed wgmma
// kernel's); that size is 0 where another kernel runs. Both read the current device.
cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes);
cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream);

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
