// The floor path's one pass after PyTorch's convolution: y = relu(hardswish(z + bias)) in place.
// Eager PyTorch makes three more passes here (cuDNN's convolution leaves the bias to a separate
// add, then hardswish, relu), so conv + this pass is never slower. Element-wise over the tensor's
// storage, so any dense memory format works; the bias channel follows from the element's index.
// 16-byte vectors where the storage is 16-byte aligned (PyTorch's allocator gives that), scalars
// for the tail.
#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace activation_inplace {
namespace {

constexpr int kThreads = 256;

// Element i's bias channel: (i / channel_stride) % channels, then stepped element by element.
struct BiasChannel {
  FastDivisor stride_divisor, channel_divisor;

  struct Cursor {
    uint32_t channel, within;  // within: position inside the run of one channel
  };

  __device__ __forceinline__ Cursor at(uint32_t index) const {
    const uint32_t run = stride_divisor.quotient(index);
    return {run - channel_divisor.quotient(run) * channel_divisor.divisor,
            index - run * stride_divisor.divisor};
  }

  __device__ __forceinline__ void next(Cursor& cursor) const {
    if (++cursor.within == stride_divisor.divisor) {
      cursor.within = 0;
      if (++cursor.channel == channel_divisor.divisor) {
        cursor.channel = 0;
      }
    }
  }
};

template <typename Storage, bool kHasBias>
__global__ void __launch_bounds__(kThreads)
    hardswish_relu_inplace_kernel(const ActivationParams p, const BiasChannel channels,
                                  int64_t vectors) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  constexpr int kPerVector = Vector16<Storage>::kCount;
  Storage* __restrict__ data = static_cast<Storage*>(p.data);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  const int64_t stride = int64_t{blockDim.x} * gridDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t v = first; v < vectors; v += stride) {
    Vector16<Storage> chunk;
    chunk.bits = reinterpret_cast<const uint4*>(data)[v];
    BiasChannel::Cursor cursor{};
    if (kHasBias) {
      cursor = channels.at(static_cast<uint32_t>(v * kPerVector));
    }
#pragma unroll
    for (int e = 0; e < kPerVector; ++e) {
      Acc z = Traits::load(chunk.values[e]);
      if (kHasBias) {
        z += Traits::load(bias[cursor.channel]);
        channels.next(cursor);
      }
      chunk.values[e] = Traits::store(HardSwishReLU<Acc>::value(z));
    }
    reinterpret_cast<uint4*>(data)[v] = chunk.bits;
  }
  for (int64_t i = vectors * kPerVector + first; i < p.numel; i += stride) {
    Acc z = Traits::load(data[i]);
    if (kHasBias) {
      z += Traits::load(bias[channels.at(static_cast<uint32_t>(i)).channel]);
    }
    data[i] = Traits::store(HardSwishReLU<Acc>::value(z));
  }
}

}  // namespace
}  // namespace activation_inplace

cudaError_t launch_hardswish_relu_inplace(const ActivationParams& params, cudaStream_t stream) {
  if (params.numel == 0) {
    return cudaSuccess;
  }
  const bool has_bias = params.bias != nullptr;
  if (has_bias && (params.numel >= (int64_t{1} << 31) || params.channels < 1 ||
                   params.channel_stride < 1)) {
    return cudaErrorInvalidValue;
  }
  constexpr int kThreads = activation_inplace::kThreads;
  const bool aligned = (reinterpret_cast<uintptr_t>(params.data) & 15u) == 0;
  activation_inplace::BiasChannel channels{
      FastDivisor::make(has_bias ? static_cast<uint32_t>(params.channel_stride) : 1u),
      FastDivisor::make(has_bias ? static_cast<uint32_t>(params.channels) : 1u)};
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    constexpr int64_t kPerVector = 16 / static_cast<int64_t>(sizeof(Storage));
    const int64_t vectors = aligned ? params.numel / kPerVector : 0;
    const int64_t items = vectors > 0 ? vectors : params.numel;
    const int blocks = grid_stride_blocks(items, kThreads);
    if (has_bias) {
      activation_inplace::hardswish_relu_inplace_kernel<Storage, true>
          <<<blocks, kThreads, 0, stream>>>(params, channels, vectors);
    } else {
      activation_inplace::hardswish_relu_inplace_kernel<Storage, false>
          <<<blocks, kThreads, 0, stream>>>(params, channels, vectors);
    }
    return cudaGetLastError();
  });
}

}  // namespace fusedconv
