// Loads and stores between a storage type and its accumulator type. PyTorch builds extensions with
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__, so half and bfloat16 convert
// through the explicit intrinsics only. float16/bfloat16 accumulate in float32, float64 in float64.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {

template <typename Storage>
struct StorageTraits;

template <>
struct StorageTraits<float> {
  using Acc = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};

template <>
struct StorageTraits<double> {
  using Acc = double;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
};

template <>
struct StorageTraits<__half> {
  using Acc = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};

template <>
struct StorageTraits<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// 16 bytes of a storage type, moved as one uint4: the vectorised element-wise passes' and the
// depthwise vector kernel's loads and stores.
template <typename Storage>
union Vector16 {
  static constexpr int kCount = 16 / static_cast<int>(sizeof(Storage));
  uint4 bits;
  Storage values[kCount];
};

// Calls `body.template operator()<Storage>()` for the storage type that `dtype` names; returns
// cudaErrorInvalidValue for a dtype no kernel is built for (callers validate first, so this is a
// second line of defence, not an error path users see).
template <typename Body>
cudaError_t dispatch_dtype(DType dtype, Body&& body) {
  switch (dtype) {
    case DType::kFloat32:
      return body(float{});
    case DType::kFloat64:
      return body(double{});
    case DType::kFloat16:
      return body(__half{});
    case DType::kBFloat16:
      return body(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Grid for a grid-stride loop over `count` items: enough blocks to cover them, capped so the grid
// stays well inside gridDim.x's limit; the loop covers the rest (64-bit counts).
inline unsigned int grid_stride_blocks(int64_t count, int threads_per_block) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  int64_t blocks = (count + threads_per_block - 1) / threads_per_block;
  if (blocks > kMaxBlocks) {
    blocks = kMaxBlocks;
  }
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

}  // namespace fusedconv
