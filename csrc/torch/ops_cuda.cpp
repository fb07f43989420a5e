// CUDA registrations: device guard, current stream, the forward plan (a fused kernel, or the
// floor path: PyTorch's convolution plus one activation pass), launch, and a checked launch
// result. Built only where CUDA is available; the schema and validation live in ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "fusedconv/launch.h"
#include "op_common.h"

namespace fusedconv {
namespace {

// The floor path: PyTorch's convolution (floor_convolution) and the in-place activation pass.
at::Tensor floor_forward_cuda(const ForwardCall& call, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              bool allow_tf32, cudaStream_t stream) {
  at::Tensor z = floor_convolution(call.input, call.weight, call.bias, stride, padding, dilation,
                                   groups, allow_tf32);
  const ActivationParams params{z.numel(), call.params.dtype, z.data_ptr()};
  C10_CUDA_CHECK(launch_hardswish_relu_inplace(params, stream));
  return z;
}

at::Tensor conv2d_hardswish_relu_cuda(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, bool allow_tf32) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  ForwardCall call = prepare_forward(input, weight, bias, stride, padding, dilation, groups);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(input.get_device()).stream();
  ForwardPlan plan;
  C10_CUDA_CHECK(plan_forward(call.params, allow_tf32, plan));
  if (plan.kernel == ForwardKernel::kFloor) {
    return floor_forward_cuda(call, stride, padding, dilation, groups, allow_tf32, stream);
  }
  at::Tensor workspace;  // freed on return: stream-ordered reuse by the caching allocator
  if (plan.workspace_bytes > 0) {
    workspace = at::empty({plan.workspace_bytes}, input.options().dtype(at::kByte));
    call.params.workspace = workspace.data_ptr();
  }
  C10_CUDA_CHECK(launch_planned(call.params, plan, allow_tf32, stream));
  return call.output;
}

// The fused backward kernels where they apply (launch.h), the composite path elsewhere and for
// empty outputs. grad_output arrives in whatever layout autograd produced; the fused kernels read
// it in y's dense NCHW layout.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_hardswish_relu_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask, bool allow_tf32) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  validate_backward(grad_output, input, weight, output, stride, padding, dilation, groups);
  ConvBackwardParams params{};
  params.conv = conv_params(input, weight, at::Tensor(), output, stride, padding, dilation, groups);
  // The plan sees the grad_output the kernels would read: a dense view with a storage offset
  // may not be 16-byte aligned, and then the composite path runs.
  const at::Tensor dense_grad_output = grad_output.contiguous();
  params.grad_output = dense_grad_output.data_ptr();
  // Non-null placeholders for the plan; the real pointers are set once the tensors exist.
  static char wanted;
  params.grad_input = output_mask[0] ? &wanted : nullptr;
  params.grad_weight = output_mask[1] ? &wanted : nullptr;
  params.grad_bias = output_mask[2] ? &wanted : nullptr;
  bool fast = false;
  int64_t workspace_bytes = 0;
  if (output.numel() > 0) {
    C10_CUDA_CHECK(backward_workspace_bytes(params, fast, workspace_bytes));
  }
  if (!fast) {
    return fill_unrequested(backward_composite(grad_output, input, weight, output, stride,
                                               padding, dilation, groups, output_mask,
                                               /*differentiable=*/false),
                            input);
  }
  at::Tensor grad_input = output_mask[0] ? at::empty_like(input) : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), weight.options())
                                          : at::empty({0}, input.options());
  at::Tensor grad_bias =
      output_mask[2] ? at::empty({weight.size(0)}, input.options()) : at::empty({0}, input.options());
  at::Tensor workspace;  // freed on return: stream-ordered reuse by the caching allocator
  if (workspace_bytes > 0) {
    workspace = at::empty({workspace_bytes}, input.options().dtype(at::kByte));
  }
  params.grad_input = output_mask[0] ? grad_input.data_ptr() : nullptr;
  params.grad_weight = output_mask[1] ? grad_weight.data_ptr() : nullptr;
  params.grad_bias = output_mask[2] ? grad_bias.data_ptr() : nullptr;
  params.workspace = workspace.defined() ? workspace.data_ptr() : nullptr;
  C10_CUDA_CHECK(launch_conv_hardswish_relu_backward(
      params, allow_tf32, at::cuda::getCurrentCUDAStream(input.get_device()).stream()));
  return std::make_tuple(grad_input, grad_weight, grad_bias);
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
  m.impl("conv2d_hardswish_relu_backward", &fusedconv::conv2d_hardswish_relu_backward_cuda);
}
