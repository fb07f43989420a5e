// The fused CPU path (OpenMP, no PyTorch): same semantics as the CUDA kernels, float32 and float64
// (float64 so that torch.autograd.gradcheck can run on the CPU).
#pragma once

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {

// y = relu(hardswish(conv2d(x, W, b))). Returns false, computing nothing, for a dtype other than
// float32 / float64; the torch layer validates dtypes first.
bool conv_hardswish_relu_cpu(const ConvParams& params);

// data = relu(hardswish(data)) in place over elements [begin, end) of the `numel` contiguous ones
// (the floor path's pass after PyTorch's convolution; params.bias is not read: oneDNN adds the
// bias inside the convolution). Serial: the caller splits [0, numel) over its thread pool (the
// torch layer: at::parallel_for). Same dtype rule.
bool hardswish_relu_inplace_cpu(const ActivationParams& params, int64_t begin, int64_t end);

// grad_input = grad_output * f'(output) over elements [begin, end). Serial, same dtype rule.
bool hardswish_relu_grad_cpu(const ActivationGradParams& params, int64_t begin, int64_t end);

}  // namespace fusedconv
