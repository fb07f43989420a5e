// What the CPU and CUDA registrations share: argument validation (every message names the argument
// and says what was expected and what came), output allocation, and the translation of tensors
// into the torch-free params structs the kernels take.
#pragma once

#include <ATen/ATen.h>

#include "fusedconv/params.h"

namespace fusedconv {

// A validated forward call: the tensors the kernel reads and writes (kept alive here) and their
// description for the kernel.
struct ForwardCall {
  at::Tensor input, weight, bias, output;
  ConvParams params;
};

// Validates the arguments of fusedconv::conv2d_hardswish_relu, allocates the output in the memory
// format torch.nn.functional.conv2d would pick, and fills in the params. `padding` holds
// (top, bottom, left, right).
ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

struct ActivationGradCall {
  at::Tensor grad_output, output, grad_input;
  ActivationGradParams params;
};

ActivationGradCall prepare_activation_grad(const at::Tensor& grad_output, const at::Tensor& output);

}  // namespace fusedconv
