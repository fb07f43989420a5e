// The floor path's one pass after PyTorch's convolution: y = relu(hardswish(z)) in place. Eager
// PyTorch makes two more passes here (hardswish, relu), so conv + this pass is never slower.
// Element-wise over the tensor's storage, so any dense memory format works. 16-byte vectors
// where the storage is 16-byte aligned (PyTorch's allocator gives that), scalars for the tail.
#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace activation_inplace {
namespace {

constexpr int kThreads = 256;

template <typename Storage>
__global__ void __launch_bounds__(kThreads)
    hardswish_relu_inplace_kernel(const ActivationParams p, int64_t vectors) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  constexpr int kPerVector = 16 / static_cast<int>(sizeof(Storage));
  Storage* __restrict__ data = static_cast<Storage*>(p.data);
  const int64_t stride = int64_t{blockDim.x} * gridDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t v = first; v < vectors; v += stride) {
    union {
      uint4 bits;
      Storage values[kPerVector];
    } chunk;
    chunk.bits = reinterpret_cast<const uint4*>(data)[v];
#pragma unroll
    for (int e = 0; e < kPerVector; ++e) {
      chunk.values[e] =
          Traits::store(HardSwishReLU<Acc>::value(Traits::load(chunk.values[e])));
    }
    reinterpret_cast<uint4*>(data)[v] = chunk.bits;
  }
  for (int64_t i = vectors * kPerVector + first; i < p.numel; i += stride) {
    data[i] = Traits::store(HardSwishReLU<Acc>::value(Traits::load(data[i])));
  }
}

}  // namespace
}  // namespace activation_inplace

cudaError_t launch_hardswish_relu_inplace(const ActivationParams& params, cudaStream_t stream) {
  if (params.numel == 0) {
    return cudaSuccess;
  }
  constexpr int kThreads = activation_inplace::kThreads;
  const bool aligned = (reinterpret_cast<uintptr_t>(params.data) & 15u) == 0;
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    constexpr int64_t kPerVector = 16 / static_cast<int64_t>(sizeof(Storage));
    const int64_t vectors = aligned ? params.numel / kPerVector : 0;
    const int64_t items = vectors > 0 ? vectors : params.numel;
    activation_inplace::hardswish_relu_inplace_kernel<Storage>
        <<<grid_stride_blocks(items, kThreads), kThreads, 0, stream>>>(params, vectors);
    return cudaGetLastError();
  });
}

}  // namespace fusedconv
