// Entry points of the CUDA kernels: one launcher per kernel family. Launchers never throw; they
// return the launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))) for any configuration ConvParams can describe.
cudaError_t launch_conv_hardswish_relu_generic(const ConvParams& params, cudaStream_t stream);

// The tensor-core fast path (float32, NCHW, stride 1, dilation 1, groups 1, staged tile within
// the shared-memory budget). `three_tf32` selects float32 accuracy (3xTF32); false runs one TF32
// product (faster, ~3e-4 relative error). Call only where tensorcore_path_supports(params).
bool tensorcore_path_supports(const ConvParams& params);
cudaError_t launch_conv_hardswish_relu_tensorcore(const ConvParams& params, bool three_tf32,
                                                  cudaStream_t stream);

// grad_input = grad_output * f'(output).
cudaError_t launch_hardswish_relu_grad(const ActivationGradParams& params, cudaStream_t stream);

}  // namespace fusedconv
