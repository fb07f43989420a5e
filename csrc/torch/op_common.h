// What the CPU and CUDA registrations share: argument validation (every message names the argument
// and says what was expected and what came), output allocation, and the translation of tensors
// into the torch-free params structs the kernels take.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "fusedconv/params.h"

namespace fusedconv {

// allow_tf32 as the operators take it: True / False, or None for what PyTorch's own convolution
// does under the current flags (torch.backends.cudnn.allow_tf32 / cudnn.conv.fp32_precision).
bool resolve_allow_tf32(c10::optional<bool> allow_tf32);

// What validate_conv learned: the bias made contiguous (undefined when there is none) and the
// output's spatial size.
struct ValidatedConv {
  at::Tensor bias;
  int64_t out_height, out_width;
};

// Checks the forward's arguments; every message names the argument, the expectation and what came.
ValidatedConv validate_conv(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// The kernels' description of a call whose tensors exist (output allocated by the caller).
ConvParams conv_params(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups);

// A validated forward call: the tensors the kernel reads and writes (kept alive here) and their
// description for the kernel. The output is described (sizes, the memory format
// torch.nn.functional.conv2d would pick, its strides in params) before it is allocated.
struct ForwardCall {
  at::Tensor input, weight, bias, output;
  std::array<int64_t, 4> output_sizes;
  at::MemoryFormat output_format;
  ConvParams params;
};

// Validates the arguments of fusedconv::conv2d_hardswish_relu and fills in the params, with
// params.output null until allocate_output. `padding` holds (top, bottom, left, right).
ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Allocates call.output as described and points params.output at it (for the fused kernels; the
// floor path's convolution returns its own).
const at::Tensor& allocate_output(ForwardCall& call);

// The strides at::empty gives a (N, C, H, W) tensor in `format` (contiguous or channels_last).
std::array<int64_t, 4> dense_strides(at::IntArrayRef sizes, at::MemoryFormat format);

// `t`, or a copy of it, with exactly dense_strides(t.sizes(), format): the fake kernels'
// strides. Not contiguous(format): where a size is 1 (a depthwise weight's one input channel, a
// 1x1 plane) other strides satisfy the format too, and torch.compile checks the exact ones.
at::Tensor with_dense_strides(const at::Tensor& t, at::MemoryFormat format);

// PyTorch's own convolution (at::_convolution: cuDNN / oneDNN, with `allow_tf32` and PyTorch's
// benchmark / determinism / enable flags, the bias (validated, or undefined) inside the call;
// asymmetric padding padded explicitly), its output as ATen returns it. Differentiable.
at::Tensor aten_convolution(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            bool allow_tf32);

// The floor path's convolution, where no fused kernel applies: aten_convolution returned dense
// with the strides the fake kernel reports, ready for the in-place activation pass.
at::Tensor floor_convolution(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool allow_tf32);

// Checks fusedconv::conv2d_hardswish_relu_backward's arguments: the forward's, plus output and
// grad_output of the forward output's shape, device and dtype.
void validate_backward(const at::Tensor& grad_output, const at::Tensor& input,
                       const at::Tensor& weight, const at::Tensor& output,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                       int64_t groups);

// g = grad_output * f'(output): the element-wise op, or with `differentiable` differentiable
// ATen ops (double backward).
at::Tensor activation_grad(const at::Tensor& grad_output, const at::Tensor& output,
                           bool differentiable);

// ATen's convolution backward of g (any padding: asymmetric padding padded explicitly); entries
// not asked for by `mask` (input, weight, bias) are undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_of(
    const at::Tensor& grad_z, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> mask);

// Gradients any backend can compute: activation_grad, then convolution_backward_of.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_composite(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask, bool differentiable);

// The backward op's results as the fake kernel (fusedconv/ops.py) reports them: defined tensors
// only (the schema has no optional outputs: an entry not asked for is an empty tensor, which the
// autograd kernel turns back into "no gradient"), and grad_input / grad_weight in the forward
// output's memory format rule (channels_last where input or weight suggests it), whichever
// backend computed them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_outputs(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::Tensor& input,
    const at::Tensor& weight);

struct ActivationGradCall {
  at::Tensor grad_output, output, grad_input;
  ActivationGradParams params;
};

ActivationGradCall prepare_activation_grad(const at::Tensor& grad_output, const at::Tensor& output);

}  // namespace fusedconv
