// CUDA registrations: device guard, current stream, launch, and a checked launch result. Built
// only where CUDA is available; the schema and validation live in ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "fusedconv/launch.h"
#include "op_common.h"

namespace fusedconv {
namespace {

at::Tensor conv2d_hardswish_relu_cuda(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, bool allow_tf32) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  ForwardCall call = prepare_forward(input, weight, bias, stride, padding, dilation, groups);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(input.get_device()).stream();
  int64_t workspace_bytes = 0;
  C10_CUDA_CHECK(forward_workspace_bytes(call.params, workspace_bytes));
  at::Tensor workspace;  // freed on return: stream-ordered reuse by the caching allocator
  if (workspace_bytes > 0) {
    workspace = at::empty({workspace_bytes}, input.options().dtype(at::kByte));
    call.params.workspace = workspace.data_ptr();
  }
  C10_CUDA_CHECK(launch_conv_hardswish_relu(call.params, allow_tf32, stream));
  return call.output;
}

at::Tensor hardswish_relu_grad_cuda(const at::Tensor& grad_output, const at::Tensor& output) {
  const c10::cuda::CUDAGuard device_guard(output.device());
  ActivationGradCall call = prepare_activation_grad(grad_output, output);
  C10_CUDA_CHECK(launch_hardswish_relu_grad(
      call.params, at::cuda::getCurrentCUDAStream(output.get_device()).stream()));
  return call.grad_input;
}

}  // namespace
}  // namespace fusedconv

TORCH_LIBRARY_IMPL(fusedconv, CUDA, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_cuda);
  m.impl("hardswish_relu_grad", &fusedconv::hardswish_relu_grad_cuda);
}
