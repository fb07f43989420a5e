// Entry points of the CUDA kernels: one launcher per kernel family. Launchers never throw; they
// return the launch's cudaError_t and the caller (csrc/torch/) turns it into a Python exception.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))) for any configuration ConvParams can describe.
cudaError_t launch_conv_hardswish_relu_generic(const ConvParams& params, cudaStream_t stream);

// The forward entry point, in order: the small-problem kernels below where they apply; on
// Hopper the wgmma kernel below where it applies; the mma.sync tensor-core kernel (float32, dense
// NCHW, groups 1, any stride and dilation, staged tile within the device's shared memory;
// 3xTF32, or one TF32 product when allow_tf32) where it applies; the generic kernel above
// everywhere else. params.workspace must point to forward_workspace_bytes(params, allow_tf32)
// bytes of device memory (split weights: the mma.sync path's, unless its CTAs split them into
// shared memory themselves, or the streamed wgmma kernel's); that size is 0 where another kernel
// runs. Both read the current device.
cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes);
cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream);

// The small-problem forward (conv_fwd_direct.cu): FP64 tensor-core MMAs on compute capability 8.0
// and 9.0 (unless FUSEDCONV_DISABLE_DMMA=1), float32 FFMA elsewhere. Applies to float32 dense
// NCHW, groups 1, any stride and dilation, at most 16 output channels, in_channels x kernel_h x
// kernel_w <= 32 and batch x output plane below 2^31 (KernelBench's v0). Float32 accuracy or
// better in either precision mode; needs no workspace.
bool direct_forward_applies(const ConvParams& params);
cudaError_t launch_conv_hardswish_relu_direct(const ConvParams& params, cudaStream_t stream);

// The Hopper forward (conv_fwd_wgmma.cu): `applies` says whether it takes `params` on the current
// device (compute capability 9.0, an extension built with sm_90a code, stride 1 and dilation 1
// on dense NCHW, more than 16 output channels, and a tile within shared memory for one of its
// variants: resident weights, up to 32 k steps of 8 input channels x one tap, float32, float16 or
// bfloat16 (those two in TF32 mode, which is exact for them); or streamed weights, up to 128
// output channels, float32). params.workspace must then point to
// `workspace_bytes` bytes of device memory (0 for the resident variant, the split weights for
// the streamed one). launch_conv_hardswish_relu dispatches to it after the small-problem kernel.
cudaError_t wgmma_forward_applies(const ConvParams& params, bool allow_tf32, bool& applies,
                                  int64_t& workspace_bytes);
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
