// Backward of the activation alone: grad_z = grad_y * f'(y), f' recovered from the output y
// (docs/DESIGN.md's table), so the pre-activation is never stored. The convolution's own
// backward runs after this on grad_z.
#include <cuda_runtime.h>

#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace activation_grad {
namespace {

constexpr int kThreads = 256;

template <typename Storage>
__global__ void __launch_bounds__(kThreads)
    hardswish_relu_grad_kernel(const ActivationGradParams p) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  const Storage* __restrict__ grad_output = static_cast<const Storage*>(p.grad_output);
  const Storage* __restrict__ output = static_cast<const Storage*>(p.output);
  Storage* __restrict__ grad_input = static_cast<Storage*>(p.grad_input);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < p.numel;
       i += int64_t{blockDim.x} * gridDim.x) {
    grad_input[i] = Traits::store(
        HardSwishReLU<Acc>::backward(Traits::load(grad_output[i]), Traits::load(output[i])));
  }
}

}  // namespace
}  // namespace activation_grad

cudaError_t launch_hardswish_relu_grad(const ActivationGradParams& params, cudaStream_t stream) {
  if (params.numel == 0) {
    return cudaSuccess;
  }
  constexpr int kThreads = activation_grad::kThreads;
  const unsigned int blocks = grid_stride_blocks(params.numel, kThreads);
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    activation_grad::hardswish_relu_grad_kernel<Storage><<<blocks, kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  });
}

}  // namespace fusedconv
