// Epilogue of the wgmma forward for channels_last output: bias + activation on a unit's
// accumulators, transposed through the consumer group's shared buffer so that each store writes
// a position's 64 channels (256 bytes of float32) whole; consecutive positions of an output row,
// and the rows of an item, are consecutive in memory.
#pragma once

#include <cstdint>

#include "forward/wgmma/epilogue.cuh"
#include "forward/wgmma/traits.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

#if FUSEDCONV_WGMMA_DEVICE

// Named barriers 5, 6, 7: consumer 0's, 1's, 2's epilogue (1 is the producer's, 2-4 the turns').
constexpr int kFirstEpilogueBarrier = 5;

__device__ __forceinline__ void epilogue_group_sync(int consumer) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(kFirstEpilogueBarrier + consumer), "n"(kGroupThreads)
               : "memory");
}

// One 16-byte store of kPerStore consecutive outputs, rounded from float32 to the storage type.
template <typename Storage>
__device__ __forceinline__ void store_vector(Storage* destination, const float* values) {
  if constexpr (sizeof(Storage) == 4) {
    *reinterpret_cast<float4*>(destination) = *reinterpret_cast<const float4*>(values);
  } else {
    const float4 low = *reinterpret_cast<const float4*>(values);
    const float4 high = *reinterpret_cast<const float4*>(values + 4);
    *reinterpret_cast<uint4*>(destination) = make_uint4(
        StorageTraits<Storage>::store_pair(low.x, low.y),
        StorageTraits<Storage>::store_pair(low.z, low.w),
        StorageTraits<Storage>::store_pair(high.x, high.y),
        StorageTraits<Storage>::store_pair(high.z, high.w));
  }
}

// Epilogue of one unit (64 output channels x 128 staged positions) by a consumer group, in two
// halves of 64 positions (fragment columns 8 j .. 8 j + 7, j < 8, then j >= 8):
//   1. each thread writes its fragments' values (channels warp * 16 + lane / 4 (+ 8), positions
//      8 j + 2 (lane % 4) (+ 1): wgmma's fragment order) to buffer row position, column channel;
//   2. each warp stores 16 of the rows: per instruction 2 positions of float32 (16 lanes x 16
//      bytes each) or 4 of a 2-byte type, skipping dropped columns and rows past the item.
// `group_buffer`: the group's 64 x kChannelsLastPitch floats.
template <typename Storage>
__device__ __forceinline__ void store_unit_channels_last(const ConvParams& p, const Layout& layout,
                                                         const float (&acc)[64],
                                                         const EpilogueWarp& ew, int consumer,
                                                         const EpilogueUnit& unit) {
  constexpr int kPerStore = 16 / static_cast<int>(sizeof(Storage));  // channels per store
  constexpr int kLanesPerPosition = kBlockChannels / kPerStore;
  constexpr int kPositionsPerStore = 32 / kLanesPerPosition;
  constexpr int kHalf = kUnitPositions / 2;
  constexpr int kRowsPerWarp = kHalf / 4;
  float* tile = ew.buffer;
  const int warp = ew.warp;
  const int lane = ew.lane;
  const int out_width = static_cast<int>(p.out_width);
  const int64_t out_channels = p.out_channels;
  const int row_pitch = layout.row_pitch;
  const int first_channel = unit.block * kBlockChannels;
  const int fragment_channel = warp * 16 + (lane >> 2);
  const float bias_low = ew.bias[first_channel + fragment_channel];
  const float bias_high = ew.bias[first_channel + fragment_channel + 8];
  const int lane_channel = (lane % kLanesPerPosition) * kPerStore;
  const int64_t channel = first_channel + lane_channel;
  // Whole 16-byte stores where every channel count keeps them aligned (the output is 16-byte
  // aligned: unit_stride_dense_channels_last); else one element at a time.
  const bool vector_stores = out_channels % kPerStore == 0;
  Storage* item_output =
      static_cast<Storage*>(p.output) +
      ((unit.image * p.out_height + unit.first_out_row) * out_width) * out_channels + channel;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    epilogue_group_sync(consumer);  // the group's last reads of the buffer are done
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int channel_half = 0; channel_half < 2; ++channel_half) {
        const float* pair = acc + 4 * (8 * half + j) + 2 * channel_half;
        const float bias = channel_half == 0 ? bias_low : bias_high;
        float* column = tile + (8 * j + 2 * (lane & 3)) * kChannelsLastPitch + fragment_channel +
                        8 * channel_half;
        column[0] = HardSwishReLU<float>::value(pair[0] + bias);
        column[kChannelsLastPitch] = HardSwishReLU<float>::value(pair[1] + bias);
      }
    }
    epilogue_group_sync(consumer);
#pragma unroll
    for (int store = 0; store < kRowsPerWarp / kPositionsPerStore; ++store) {
      const int row_in_half =
          warp * kRowsPerWarp + store * kPositionsPerStore + lane / kLanesPerPosition;
      const int position = unit.first_position + kHalf * half + row_in_half;
      // position / row_pitch exactly (positions stay far below 2^21).
      const int row = __float2int_rz((position + 0.5f) * layout.inverse_row_pitch);
      const int col = position - row * row_pitch;
      if (col >= out_width || row >= unit.rows_here) {
        continue;
      }
      const float* source = tile + row_in_half * kChannelsLastPitch + lane_channel;
      Storage* destination = item_output + (int64_t{row} * out_width + col) * out_channels;
      if (vector_stores && channel < out_channels) {
        store_vector(destination, source);
      } else if (!vector_stores) {
#pragma unroll
        for (int e = 0; e < kPerStore; ++e) {
          if (channel + e < out_channels) {
            destination[e] = StorageTraits<Storage>::store(source[e]);
          }
        }
      }
    }
  }
}

// A unit's epilogue in the output's layout: per warp for NCHW (epilogue.cuh), per consumer
// group for channels_last (above; `ew.buffer` is then the group's buffer).
template <bool kChannelsLast, typename Storage>
__device__ __forceinline__ void store_unit_in_layout(const ConvParams& p, const Layout& layout,
                                                     const float (&acc)[64],
                                                     const EpilogueWarp& ew, int consumer,
                                                     const EpilogueUnit& unit) {
  if constexpr (kChannelsLast) {
    store_unit_channels_last<Storage>(p, layout, acc, ew, consumer, unit);
  } else {
    store_unit<Storage>(p, layout, acc, ew, unit);
  }
}

#endif  // FUSEDCONV_WGMMA_DEVICE

}  // namespace wgmma
}  // namespace fusedconv
