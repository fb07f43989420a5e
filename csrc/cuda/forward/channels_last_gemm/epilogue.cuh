// The channels_last GEMM's epilogue: bias and relu(hardswish) on a tile's fragments, rounded once
// into a staged tile in shared memory and stored in 16-byte row chunks (measured faster than
// stores straight from the fragments: benchmarks/NOTES.md, twenty-seventh session).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "forward/channels_last_gemm/traits.cuh"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace channels_last_gemm {
namespace {

// Two adjacent elements of the staged tile from two float32 values, rounded once.
template <typename Storage>
__device__ __forceinline__ void store_pair(Storage* destination, float a, float b) {
  if constexpr (sizeof(Storage) == 4) {
    *reinterpret_cast<float2*>(destination) = make_float2(a, b);
  } else {
    *reinterpret_cast<uint32_t*>(destination) = StorageTraits<Storage>::store_pair(a, b);
  }
}

// The epilogue of one tile: bias, relu(hardswish) and one rounding per fragment element into a
// staged tile (row pitch T::kStagedPitch: a warp's fragment writes hit 32 distinct banks), then
// 16-byte stores of whole runs of channels, consecutive threads on consecutive chunks of a row.
// Lane l holds rows l / 4 and l / 4 + 8 of each 16 x 8 fragment, channels 2 (l % 4) + {0, 1}.
template <typename Storage, typename T>
__device__ __forceinline__ void store_tile(const ConvParams& p, const Geometry& g,
                                           const Fragments<T>& acc, Storage* staged, int m0,
                                           int n0, int warp_m, int warp_n, int lane, int thread) {
  using Traits = StorageTraits<Storage>;
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  const int out_channels = static_cast<int>(p.out_channels);
#pragma unroll
  for (int j = 0; j < T::kWarpN / 8; ++j) {
    const int column = warp_n + j * 8 + 2 * (lane & 3);
    const bool present = bias != nullptr && n0 + column < out_channels;  // whole pairs: even
    const float bias0 = present ? Traits::load(bias[n0 + column]) : 0.0f;
    const float bias1 = present ? Traits::load(bias[n0 + column + 1]) : 0.0f;
#pragma unroll
    for (int i = 0; i < T::kWarpM / 16; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = warp_m + i * 16 + (lane >> 2) + half * 8;
        const float y0 = HardSwishReLU<float>::value(acc[i][j][2 * half] + bias0);
        const float y1 = HardSwishReLU<float>::value(acc[i][j][2 * half + 1] + bias1);
        store_pair(staged + row * T::kStagedPitch + column, y0, y1);
      }
    }
  }
  __syncthreads();
  constexpr int kRowChunks = T::kTileN / kVector<Storage>;
  Storage* __restrict__ output = static_cast<Storage*>(p.output);
#pragma unroll
  for (int i = 0; i < T::kTileM * kRowChunks / kThreads; ++i) {
    const int index = thread + i * kThreads;
    const int row = index / kRowChunks;
    const int column = (index % kRowChunks) * kVector<Storage>;
    const int m = m0 + row;
    if (m < g.positions && n0 + column < out_channels) {  // out_channels: whole chunks
      *reinterpret_cast<uint4*>(output + int64_t{m} * out_channels + n0 + column) =
          *reinterpret_cast<const uint4*>(staged + row * T::kStagedPitch + column);
    }
  }
  // The next writes of `staged` come after the main loop's next __syncthreads.
}

}  // namespace
}  // namespace channels_last_gemm
}  // namespace fusedconv
