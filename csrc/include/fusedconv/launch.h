// Entry points of the CUDA kernels: one launcher per kernel family. Launchers never throw; they
// return the launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))) for any configuration ConvParams can describe.
cudaError_t launch_conv_hardswish_relu_generic(const ConvParams& params, cudaStream_t stream);

// The forward entry point: on Hopper the wgmma kernel below where it applies, else the mma.sync
// tensor-core kernel (float32, dense NCHW, stride 1, dilation 1, groups 1, staged weights and
// tile within the device's shared memory; 3xTF32, or one TF32 product when allow_tf32) where it
// applies, the generic kernel above everywhere else. params.workspace must point to
// forward_workspace_bytes(params, allow_tf32) bytes of device memory (the mma.sync path's split
// weights); that size is 0 where another kernel runs. Both read the current device.
cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes);
cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream);

// The Hopper forward (conv_fwd_wgmma.cu): `applies` says whether it takes `params` on the current
// device (compute capability 9.0, an extension built with sm_90a code, the tensor-core shape
// rule, more than 16 output channels, at most 32 k steps of 8 input channels x one tap, a tile
// within shared memory). Needs no workspace. launch_conv_hardswish_relu dispatches to it first.
cudaError_t wgmma_forward_applies(const ConvParams& params, bool allow_tf32, bool& applies);
cudaError_t launch_conv_hardswish_relu_wgmma(const ConvParams& params, bool allow_tf32,
                                             cudaStream_t stream);

// The fused backward (conv_bwd_tensorcore.cu) for the forward's tensor-core configurations with a
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
