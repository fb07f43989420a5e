// Backward of the activation alone: grad_z = grad_y * f'(y), f' recovered from the output y
// (docs/DESIGN.md's table), so the pre-activation is never stored. The convolution's own
// backward runs after this on grad_z. Memory-bound: 16-byte vectors of all three tensors where
// their storage is 16-byte aligned (scalar loads of bfloat16 ran at a third of the bandwidth),
// scalars for the tail.
#include <cuda_runtime.h>

#include <cstdint>

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
    hardswish_relu_grad_kernel(const ActivationGradParams p, int64_t vectors) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  using Chunk = Vector16<Storage>;
  constexpr int kPerVector = Chunk::kCount;
  const Storage* __restrict__ grad_output = static_cast<const Storage*>(p.grad_output);
  const Storage* __restrict__ output = static_cast<const Storage*>(p.output);
  Storage* __restrict__ grad_input = static_cast<Storage*>(p.grad_input);
  const int64_t stride = int64_t{blockDim.x} * gridDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t v = first; v < vectors; v += stride) {
    Chunk grad, y;
    grad.bits = __ldg(reinterpret_cast<const uint4*>(grad_output) + v);
    y.bits = __ldg(reinterpret_cast<const uint4*>(output) + v);
#pragma unroll
    for (int e = 0; e < kPerVector; ++e) {
      grad.values[e] = Traits::store(HardSwishReLU<Acc>::backward(Traits::load(grad.values[e]),
                                                                  Traits::load(y.values[e])));
    }
    reinterpret_cast<uint4*>(grad_input)[v] = grad.bits;
  }
  for (int64_t i = vectors * kPerVector + first; i < p.numel; i += stride) {
    grad_input[i] = Traits::store(
        HardSwishReLU<Acc>::backward(Traits::load(grad_output[i]), Traits::load(output[i])));
  }
}

bool aligned_16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15u) == 0; }

}  // namespace
}  // namespace activation_grad

cudaError_t launch_hardswish_relu_grad(const ActivationGradParams& params, cudaStream_t stream) {
  if (params.numel == 0) {
    return cudaSuccess;
  }
  constexpr int kThreads = activation_grad::kThreads;
  const bool aligned = activation_grad::aligned_16(params.grad_output) &&
                       activation_grad::aligned_16(params.output) &&
                       activation_grad::aligned_16(params.grad_input);
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    constexpr int64_t kPerVector = 16 / static_cast<int64_t>(sizeof(Storage));
    const int64_t vectors = aligned ? params.numel / kPerVector : 0;
    const int64_t items = vectors > 0 ? vectors : params.numel;
    activation_grad::hardswish_relu_grad_kernel<Storage>
        <<<grid_stride_blocks(items, kThreads), kThreads, 0, stream>>>(params, vectors);
    return cudaGetLastError();
  });
}

}  // namespace fusedconv
