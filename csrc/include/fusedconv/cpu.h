// The fused CPU path (OpenMP, no PyTorch): same semantics as the CUDA kernels, float32 and float64
// (float64 so that torch.autograd.gradcheck can run on the CPU).
#pragma once

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))). Returns false, computing nothing, for a dtype other than
// float32 / float64 or a geometry valid_geometry (params.h) refuses; the torch layer validates
// both first.
bool conv_hardswish_relu_cpu(const ConvParams& params);

// data = relu(hardswish(data)) in place, `numel` contiguous elements (the floor path's pass after
// PyTorch's convolution). Same dtype rule.
bool hardswish_relu_inplace_cpu(const ActivationParams& params);

// grad_input = grad_output * f'(output). Same dtype rule.
bool hardswish_relu_grad_cpu(const ActivationGradParams& params);

}  // namespace fusedconv
