// CUDA registrations: device guard, current stream, the forward plan (a fused kernel, or the
// floor path: PyTorch's convolution plus one activation pass), launch, and a checked launch
// result. Built only where CUDA is available; the schema and validation live in ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <string>

#include "fusedconv/launch.h"
#include "op_common.h"

namespace fusedconv {
namespace {

// The floor path: PyTorch's convolution (floor_convolution) and the in-place activation pass,
// which adds the bias too: ATen's cuDNN path adds it in a separate pass of its own, so the
// convolution runs without it (up to 2^31 output elements: the pass's channel index is 32-bit).
at::Tensor floor_forward_cuda(const ForwardCall& call, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              bool allow_tf32, cudaStream_t stream) {
  const ConvParams& conv = call.params;
  const bool bias_in_pass = call.bias.defined() && conv.batch * conv.out_channels *
                                                           conv.out_height * conv.out_width <
                                                       (int64_t{1} << 31);
  at::Tensor z =
      floor_convolution(call.input, call.weight, bias_in_pass ? at::Tensor() : call.bias, stride,
                        padding, dilation, groups, allow_tf32);
  ActivationParams params{z.numel(), conv.dtype, z.data_ptr()};
  if (bias_in_pass) {
    params.bias = call.bias.data_ptr();
    params.channels = z.size(1);
    // floor_convolution returns z dense: NCHW, or else channels_last.
    params.channel_stride = z.is_contiguous() ? z.size(2) * z.size(3) : 1;
  }
  C10_CUDA_CHECK(launch_hardswish_relu_inplace(params, stream));
  return z;
}

at::Tensor conv2d_hardswish_relu_cuda(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups,
                                      c10::optional<bool> allow_tf32_choice) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const bool allow_tf32 = resolve_allow_tf32(allow_tf32_choice);
  ForwardCall call = prepare_forward(input, weight, bias, stride, padding, dilation, groups);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(input.get_device()).stream();
  ForwardPlan plan;
  C10_CUDA_CHECK(plan_forward(call.params, allow_tf32, plan));
  if (plan.kernel == ForwardKernel::kFloor) {
    return floor_forward_cuda(call, stride, padding, dilation, groups, allow_tf32, stream);
  }
  allocate_output(call);
  at::Tensor workspace;  // freed on return: stream-ordered reuse by the caching allocator
  if (plan.workspace_bytes > 0) {
    workspace = at::empty({plan.workspace_bytes}, input.options().dtype(at::kByte));
    call.params.workspace = workspace.data_ptr();
  }
  C10_CUDA_CHECK(launch_planned(call.params, plan, allow_tf32, stream));
  return call.output;
}

// A backward call's description for the planner: shapes and the saved tensors' pointers. The
// fused kernels read grad_output in y's dense layout (NCHW, or channels_last for the depthwise
// ones): the tensor itself where it is one (its pointer: a view with a storage offset may not be
// 16-byte aligned, and then the NCHW plan says floor), else a dense copy made only once the plan
// is fused (a fresh allocation, aligned: planned as null). The floor reads grad_output as it
// comes: no copy.
ConvBackwardParams backward_params(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& weight, const at::Tensor& output,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups) {
  validate_backward(grad_output, input, weight, output, stride, padding, dilation, groups);
  ConvBackwardParams params{};
  params.conv = conv_params(input, weight, at::Tensor(), output, stride, padding, dilation, groups);
  params.grad_output = grad_output.is_contiguous(output.suggest_memory_format())
                           ? grad_output.data_ptr()
                           : nullptr;
  return params;
}

BackwardMask backward_mask(std::array<bool, 3> output_mask) {
  BackwardMask mask;
  mask.grad_input = output_mask[0];
  mask.grad_weight = output_mask[1];
  mask.grad_bias = output_mask[2];
  return mask;
}

// The floor backward with grad_bias summed in its g pass (plan.floor_sums_bias): ATen's
// convolution backward is then asked for grad_input / grad_weight only.
std::tuple<at::Tensor, at::Tensor, at::Tensor> floor_backward_summing_bias(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  ActivationGradCall call = prepare_activation_grad(grad_output, output);
  at::Tensor grad_bias = at::empty({weight.size(0)}, output.options());
  call.params.grad_bias = grad_bias.data_ptr();
  const bool convolution_grads = output_mask[0] || output_mask[1];
  if (!convolution_grads) {
    call.params.grad_input = nullptr;  // g is not read again: the pass does not store it
  }
  call.params.channels = output.size(1);
  // prepare_activation_grad's layout (where both name one order, either description is right).
  call.params.channel_stride = output.suggest_memory_format() == at::MemoryFormat::ChannelsLast
                                   ? 1
                                   : output.size(2) * output.size(3);
  int64_t bytes = 0;
  C10_CUDA_CHECK(hardswish_relu_bias_grad_workspace_bytes(call.params, bytes));
  const at::Tensor workspace = at::empty({bytes}, output.options().dtype(at::kByte));
  call.params.workspace = workspace.data_ptr();
  C10_CUDA_CHECK(launch_hardswish_relu_bias_grad(
      call.params, at::cuda::getCurrentCUDAStream(output.get_device()).stream()));
  std::tuple<at::Tensor, at::Tensor, at::Tensor> grads;
  if (convolution_grads) {
    grads = convolution_backward_of(call.grad_input, input, weight, stride, padding, dilation,
                                    groups, {output_mask[0], output_mask[1], false});
  }
  std::get<2>(grads) = grad_bias;
  return grads;
}

// The fused backward kernels where the plan says so (launch.h), the floor path (composite)
// elsewhere and for empty outputs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_hardswish_relu_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask,
    c10::optional<bool> allow_tf32_choice) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const bool allow_tf32 = resolve_allow_tf32(allow_tf32_choice);
  ConvBackwardParams params =
      backward_params(grad_output, input, weight, output, stride, padding, dilation, groups);
  BackwardPlan plan;
  C10_CUDA_CHECK(plan_backward(params, backward_mask(output_mask), allow_tf32, plan));
  if (plan.floor_sums_bias) {
    return backward_outputs(floor_backward_summing_bias(grad_output, input, weight, output, stride,
                                                        padding, dilation, groups, output_mask),
                            input, weight);
  }
  if (plan.kernel != BackwardKernel::kFused && plan.kernel != BackwardKernel::kDepthwise &&
      plan.kernel != BackwardKernel::kSmallProblem) {
    return backward_outputs(backward_composite(grad_output, input, weight, output, stride,
                                               padding, dilation, groups, output_mask,
                                               /*differentiable=*/false),
                            input, weight);
  }
  at::Tensor grad_input = output_mask[0] ? at::empty_like(input) : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), weight.options())
                                          : at::empty({0}, input.options());
  at::Tensor grad_bias = output_mask[2] ? at::empty({weight.size(0)}, input.options())
                                        : at::empty({0}, input.options());
  at::Tensor workspace;  // freed on return: stream-ordered reuse by the caching allocator
  if (plan.workspace_bytes > 0) {
    workspace = at::empty({plan.workspace_bytes}, input.options().dtype(at::kByte));
  }
  // In y's layout; no copy where it is dense already.
  const at::Tensor dense_grad_output = grad_output.contiguous(output.suggest_memory_format());
  params.grad_output = dense_grad_output.data_ptr();
  params.grad_input = output_mask[0] ? grad_input.data_ptr() : nullptr;
  params.grad_weight = output_mask[1] ? grad_weight.data_ptr() : nullptr;
  params.grad_bias = output_mask[2] ? grad_bias.data_ptr() : nullptr;
  params.workspace = workspace.defined() ? workspace.data_ptr() : nullptr;
  C10_CUDA_CHECK(launch_planned_backward(
      params, plan, allow_tf32, at::cuda::getCurrentCUDAStream(input.get_device()).stream()));
  return backward_outputs(std::make_tuple(grad_input, grad_weight, grad_bias), input, weight);
}

at::Tensor hardswish_relu_grad_cuda(const at::Tensor& grad_output, const at::Tensor& output) {
  const c10::cuda::CUDAGuard device_guard(output.device());
  ActivationGradCall call = prepare_activation_grad(grad_output, output);
  C10_CUDA_CHECK(launch_hardswish_relu_grad(
      call.params, at::cuda::getCurrentCUDAStream(output.get_device()).stream()));
  return call.grad_input;
}

// Test and benchmark hooks (the leading underscore: not API). The plan a call would get, by
// name, without running it.
std::string forward_kernel_name(ForwardKernel kernel) {
  switch (kernel) {
    case ForwardKernel::kNone:
      return "none";
    case ForwardKernel::kDepthwise:
      return "depthwise";
    case ForwardKernel::kGrouped:
      return "grouped";
    case ForwardKernel::kChannelsLastGemm:
      return "channels_last_gemm";
    case ForwardKernel::kSmallProblem:
      return "small_problem";
    case ForwardKernel::kWgmma:
      return "wgmma";
    case ForwardKernel::kMmaSync:
      return "mma_sync";
    default:
      return "floor";
  }
}

std::string plan_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              c10::optional<bool> allow_tf32_choice) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const ForwardCall call = prepare_forward(input, weight, bias, stride, padding, dilation, groups);
  ForwardPlan plan;
  C10_CUDA_CHECK(plan_forward(call.params, resolve_allow_tf32(allow_tf32_choice), plan));
  return forward_kernel_name(plan.kernel);
}

std::string plan_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, const at::Tensor& output,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups,
                               std::array<bool, 3> output_mask,
                               c10::optional<bool> allow_tf32_choice) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const ConvBackwardParams params =
      backward_params(grad_output, input, weight, output, stride, padding, dilation, groups);
  BackwardPlan plan;
  C10_CUDA_CHECK(plan_backward(params, backward_mask(output_mask),
                               resolve_allow_tf32(allow_tf32_choice), plan));
  switch (plan.kernel) {
    case BackwardKernel::kNone:
      return "none";
    case BackwardKernel::kFused:
      return "fused";
    case BackwardKernel::kDepthwise:
      return "depthwise";
    case BackwardKernel::kSmallProblem:
      return "small_problem";
    default:
      return plan.floor_sums_bias ? "floor_summing_bias" : "floor";
  }
}

// A three-way switch of launch.h by name: sets it and returns the previous name, or with no
// name only returns the current one. `what` names the argument in the error.
template <typename Choice>
std::string switch_op(const char* op, const char* what, const char* const (&names)[3],
                      c10::optional<c10::string_view> name, Choice (*get)(),
                      Choice (*set)(Choice)) {
  if (!name.has_value()) {
    return names[static_cast<int>(get())];
  }
  for (int i = 0; i < 3; ++i) {
    if (*name == names[i]) {
      return names[static_cast<int>(set(static_cast<Choice>(i)))];
    }
  }
  TORCH_CHECK_VALUE(false, op, ": expected ", what, " to be '", names[0], "', '", names[1],
                    "' or '", names[2], "', got '", std::string(*name), "'");
}

// The planners' policy (launch.h).
std::string plan_policy_op(c10::optional<c10::string_view> policy) {
  return switch_op("_plan_policy", "policy", kPlanPolicyNames, policy, &plan_policy,
                   &set_plan_policy);
}

// Where the depthwise candidate kernels run (launch.h).
std::string depthwise_candidates_op(c10::optional<c10::string_view> choice) {
  return switch_op("_depthwise_candidates", "choice", kDepthwiseCandidatesNames, choice,
                   &depthwise_candidates, &set_depthwise_candidates);
}

// Where the channels_last wgmma forward runs (launch.h).
std::string channels_last_wgmma_op(c10::optional<c10::string_view> choice) {
  return switch_op("_channels_last_wgmma", "choice", kChannelsLastWgmmaNames, choice,
                   &channels_last_wgmma, &set_channels_last_wgmma);
}

int64_t plan_count_op() { return plan_count(); }

}  // namespace
}  // namespace fusedconv

TORCH_LIBRARY_FRAGMENT(fusedconv, m) {
  // Test and benchmark hooks of the CUDA planners (not API): the kernel a forward or backward
  // call would run, the planners' policy, the depthwise candidates' and channels_last wgmma's
  // switches, and how many plans this process has made.
  m.def(
      "_plan(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, bool? allow_tf32=None) -> str");
  m.def(
      "_plan_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor output, "
      "int[2] stride, int[4] padding, int[2] dilation, int groups, bool[3] output_mask, "
      "bool? allow_tf32=None) -> str");
  m.def("_plan_policy(str? policy=None) -> str", &fusedconv::plan_policy_op);
  m.def("_depthwise_candidates(str? choice=None) -> str",
        &fusedconv::depthwise_candidates_op);
  m.def("_channels_last_wgmma(str? choice=None) -> str", &fusedconv::channels_last_wgmma_op);
  m.def("_plan_count() -> int", &fusedconv::plan_count_op);
}

TORCH_LIBRARY_IMPL(fusedconv, CUDA, m) {
  m.impl("_plan", &fusedconv::plan_forward_cuda);
  m.impl("_plan_backward", &fusedconv::plan_backward_cuda);
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_cuda);
  m.impl("hardswish_relu_grad", &fusedconv::hardswish_relu_grad_cuda);
  m.impl("conv2d_hardswish_relu_backward", &fusedconv::conv2d_hardswish_relu_backward_cuda);
}
