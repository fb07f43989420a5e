// Producer warpgroup of the wgmma forward: cp.async of an item's raw input rows, NCHW or
// channels_last (double buffered, one stage ahead), then one pass that zero-pads, splits every
// value into TF32 parts and writes a stage's K-major planes (kernels.cuh describes the planes).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "forward/wgmma/traits.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

#if FUSEDCONV_WGMMA_DEVICE

constexpr int kProducerBarrier = 1;  // named barrier of warpgroup 0 (0 is __syncthreads)

__device__ __forceinline__ void producer_sync() {
  asm volatile("bar.sync %0, %1;\n" ::"n"(kProducerBarrier), "n"(kGroupThreads) : "memory");
}

// Producer: cp.async of the raw input rows of `item` (those inside the image) of input channels
// first_channel .. first_channel + channels - 1 into `raw`, laid out
// [channel][staged row][raw_pitch], in the input's storage type.
template <typename Storage>
__device__ __forceinline__ void copy_raw_rows(const ConvParams& p, const Layout& layout,
                                              int64_t item, int first_channel, int channels,
                                              Storage* raw, int thread) {
  const int64_t image = item_image(layout, item);
  const int first_row = item_first_out_row(layout, item, static_cast<int>(image)) -
                        static_cast<int>(p.pad_top);
  const int height = static_cast<int>(p.in_height);
  const int width = static_cast<int>(p.in_width);
  const int row_begin = first_row < 0 ? -first_row : 0;
  const int row_end = height - first_row < layout.staged_rows ? height - first_row
                                                               : layout.staged_rows;
  const int rows = row_end - row_begin;
  if (rows <= 0) {
    return;
  }
  const Storage* source = static_cast<const Storage*>(p.input) +
                          (image * p.in_channels + first_channel) * height * width;
  // Quotients through float reciprocals (exact: indices stay below 2^21, wgmma_plan.cu):
  // the integer division subroutine cost more than the copies.
  const float inverse_rows = __frcp_rn(static_cast<float>(rows));
  // Elements per copy: 16 bytes where rows are 16-byte multiples, else 4 bytes (one float, or a
  // pair of 2-byte elements where the width is even), else one 2-byte element by a plain copy
  // (odd widths: below cp.async's 4-byte minimum; visible to the other producer threads after
  // the producer's barrier, like the rest).
  constexpr int kPer16Bytes = 16 / static_cast<int>(sizeof(Storage));
  constexpr int kPer4Bytes = 4 / static_cast<int>(sizeof(Storage));
  const int per_copy =
      width % kPer16Bytes == 0 ? kPer16Bytes : (width % kPer4Bytes == 0 ? kPer4Bytes : 1);
  const int line_items = width / per_copy;
  const float inverse_line_items = __frcp_rn(static_cast<float>(line_items));
  const int total = channels * rows * line_items;
  for (int index = thread; index < total; index += kGroupThreads) {
    const int line = __float2int_rz((index + 0.5f) * inverse_line_items);
    const int item_in_line = index - line * line_items;
    const int channel = __float2int_rz((line + 0.5f) * inverse_rows);
    const int row = row_begin + line - channel * rows;
    const int col = per_copy * item_in_line;
    Storage* destination = raw + (channel * layout.staged_rows + row) * layout.raw_pitch + col;
    const Storage* from = source + (channel * height + first_row + row) * width + col;
    if (per_copy == kPer16Bytes) {
      copy_async_16(destination, from, 16);
    } else if (per_copy == kPer4Bytes) {
      copy_async_4(destination, from, 4);
    } else {
      *destination = *from;
    }
  }
}

// Producer, channels_last input: cp.async of the raw rows of `item` (those inside the image) of
// input channels first_channel .. first_channel + channels - 1 into `raw`, laid out
// [staged row][column][raw_pixel], in the input's storage type. With every channel in the chunk
// (raw_pixel == in_channels) the rows are one contiguous range of the input, copied as such;
// otherwise each pixel's chunk is copied on its own.
template <typename Storage>
__device__ __forceinline__ void copy_raw_pixels(const ConvParams& p, const Layout& layout,
                                                int64_t item, int first_channel, int channels,
                                                Storage* raw, int thread) {
  const int64_t image = item_image(layout, item);
  const int first_row = item_first_out_row(layout, item, static_cast<int>(image)) -
                        static_cast<int>(p.pad_top);
  const int height = static_cast<int>(p.in_height);
  const int width = static_cast<int>(p.in_width);
  const int in_channels = static_cast<int>(p.in_channels);
  const int row_begin = first_row < 0 ? -first_row : 0;
  const int row_end = height - first_row < layout.staged_rows ? height - first_row
                                                               : layout.staged_rows;
  const int rows = row_end - row_begin;
  if (rows <= 0) {
    return;
  }
  const Storage* source = static_cast<const Storage*>(p.input) +
                          ((image * height + first_row + row_begin) * width) * in_channels +
                          first_channel;
  Storage* destination = raw + row_begin * layout.raw_pitch;
  constexpr int kPer16Bytes = 16 / static_cast<int>(sizeof(Storage));
  constexpr int kPer4Bytes = 4 / static_cast<int>(sizeof(Storage));
  const int raw_pixel = layout.raw_pixel;
  if (raw_pixel == in_channels) {
    // Copies as wide as the rows' length allows (every row starts on such a boundary: the input
    // is 16-byte aligned, applies).
    const int row_elements = width * in_channels;
    const int per_copy = row_elements % kPer16Bytes == 0
                             ? kPer16Bytes
                             : (row_elements % kPer4Bytes == 0 ? kPer4Bytes : 1);
    const int copies = rows * row_elements / per_copy;
    for (int index = thread; index < copies; index += kGroupThreads) {
      const int offset = index * per_copy;
      if (per_copy == kPer16Bytes) {
        copy_async_16(destination + offset, source + offset, 16);
      } else if (per_copy == kPer4Bytes) {
        copy_async_4(destination + offset, source + offset, 4);
      } else {
        destination[offset] = source[offset];
      }
    }
    return;
  }
  // A chunk of each pixel: copies as wide as the chunk, its start and the pixels' pitch allow.
  const bool vectors16 = channels % kPer16Bytes == 0 && in_channels % kPer16Bytes == 0 &&
                         first_channel % kPer16Bytes == 0;
  const bool vectors4 = channels % kPer4Bytes == 0 && in_channels % kPer4Bytes == 0 &&
                        first_channel % kPer4Bytes == 0;
  const int per_copy = vectors16 ? kPer16Bytes : (vectors4 ? kPer4Bytes : 1);
  const int pieces = channels / per_copy;
  // Quotients through float reciprocals (exact: indices stay below 2^21, wgmma_plan.cu).
  const float inverse_pieces = __frcp_rn(static_cast<float>(pieces));
  const int total = rows * width * pieces;
  for (int index = thread; index < total; index += kGroupThreads) {
    const int pixel = __float2int_rz((index + 0.5f) * inverse_pieces);
    const int offset = (index - pixel * pieces) * per_copy;
    Storage* to = destination + pixel * raw_pixel + offset;
    const Storage* from = source + int64_t{pixel} * in_channels + offset;
    if (per_copy == kPer16Bytes) {
      copy_async_16(to, from, 16);
    } else if (per_copy == kPer4Bytes) {
      copy_async_4(to, from, 4);
    } else {
      *to = *from;
    }
  }
}

// The producer's copy of one stage's raw rows, in the input's layout.
template <bool kChannelsLast, typename Storage>
__device__ __forceinline__ void copy_raw(const ConvParams& p, const Layout& layout, int64_t item,
                                         int first_channel, int channels, Storage* raw,
                                         int thread) {
  if constexpr (kChannelsLast) {
    copy_raw_pixels(p, layout, item, first_channel, channels, raw, thread);
  } else {
    copy_raw_rows(p, layout, item, first_channel, channels, raw, thread);
  }
}

// Four consecutive raw values (a channels_last pixel's 4-channel group) in one shared-memory load:
// 16 bytes of float32, 8 of a 2-byte type (the group starts on such a boundary: callers check).
template <typename Storage>
__device__ __forceinline__ void load_group(const Storage* raw, float (&values)[4]) {
  if constexpr (sizeof(Storage) == 4) {
    const float4 group = *reinterpret_cast<const float4*>(raw);
    values[0] = group.x;
    values[1] = group.y;
    values[2] = group.z;
    values[3] = group.w;
  } else {
    const uint2 group = *reinterpret_cast<const uint2*>(raw);
    const uint32_t words[2] = {group.x, group.y};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      Storage element;
      const uint16_t bits = static_cast<uint16_t>(words[e >> 1] >> (16 * (e & 1)));
      memcpy(&element, &bits, 2);
      values[e] = StorageTraits<Storage>::load(element);
    }
  }
}

// Producer: raw rows of `channels` input channels -> a stage's K-major planes, zero outside the
// image and past those channels, every position of every plane written (the consumers' dropped
// columns read them too).
// kGroups > 0 fixes the number of 4-channel groups at compile time (2: in_channels <= 8, the
// KernelBench shapes), 0 reads it from the layout. Layout fields are copied to registers first:
// read through the reference they were reloaded from parameter space in the loop, and the
// run-time group loop cost ~4x the instructions of the unrolled one (ncu: the producer, not
// the MMAs, set the pace at 0.31 ms). kBatch positions per thread and pass (below): 4, or 1
// where a stage has at most one position per thread (the 1x1 stages: with 4, three of every
// four batch slots were empty but still cost their predicated loads).
// float16 and bfloat16 values are exact in TF32 (their significands have at most 11 bits), so
// their small parts are zero and one TF32 product per multiply is exact.
// kChannelsLast: the raw rows are copy_raw_pixels' (a pixel's channels contiguous, read four at a
// time where raw_pixel is a multiple of 4), else copy_raw_rows' (one row per channel).
template <bool kThreeTf32, bool kChannelsLast, int kGroups, int kBatch, typename Storage>
__device__ __forceinline__ void stage_planes(const ConvParams& p, const Layout& layout,
                                             int64_t item, int channels, const Storage* raw,
                                             float* stage, int thread) {
  const int first_row = item_first_out_row(layout, item, item_image(layout, item)) -
                        static_cast<int>(p.pad_top);
  const int height = static_cast<int>(p.in_height);
  const int width = static_cast<int>(p.in_width);
  const int pad_left = static_cast<int>(p.pad_left);
  const int groups = kGroups > 0 ? kGroups : layout.channel_groups;
  const int positions = layout.plane_positions;
  const int row_pitch = layout.row_pitch;
  const int raw_pitch = layout.raw_pitch;
  const int staged_rows = layout.staged_rows;
  const float inverse_row_pitch = layout.inverse_row_pitch;
  const int plane_words = positions * 4;
  // Raw elements from one column to the next, and from one channel to the next.
  const int column_step = kChannelsLast ? layout.raw_pixel : 1;
  const int channel_step = kChannelsLast ? 1 : staged_rows * raw_pitch;
  const bool group_loads = kChannelsLast && layout.raw_pixel % 4 == 0;
  float* small_planes = stage + groups * plane_words;
  // kBatch positions per thread and pass, all their raw values loaded before any is split or
  // stored: one warp per scheduler does this work, and position by position its shared-memory
  // round trips serialized (ncu: the producer busy throughout, consumers waiting on it).
  for (int base = thread; base < positions; base += kBatch * kGroupThreads) {
    // Where each position's raw values are and how many of its channels are real (none outside
    // the image), once for all channel groups: per group, the run-time group loop of the 1x1 /
    // 32-channel stages spent most of the producer's instructions on it (ncu: consumers waiting
    // on `full` in 38% of samples).
    int source_offset[kBatch];
    int present[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int position = base + b * kGroupThreads;
      // position / row_pitch exactly (positions stay far below 2^21).
      const int row = __float2int_rz((position + 0.5f) * inverse_row_pitch);
      const int col = position - row * row_pitch - pad_left;
      const bool inside = position < positions && row < staged_rows && first_row + row >= 0 &&
                          first_row + row < height && col >= 0 && col < width;
      present[b] = inside ? channels : 0;
      source_offset[b] = inside ? row * raw_pitch + col * column_step : 0;
    }
#pragma unroll
    for (int group = 0; group < (kGroups > 0 ? kGroups : groups); ++group) {
      float values[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (group_loads && 4 * group + 4 <= present[b]) {
          load_group(raw + source_offset[b] + 4 * group, values[b]);
          continue;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int channel = 4 * group + e;
          values[b][e] = channel < present[b]
                             ? StorageTraits<Storage>::load(
                                   raw[source_offset[b] + channel * channel_step])
                             : 0.0f;
        }
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int position = base + b * kGroupThreads;
        if (position >= positions) {
          break;
        }
        uint32_t big[4], small[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (kThreeTf32) {
            split_input(values[b][e], big[e], small[e]);
          } else {
            big[e] = to_tf32(values[b][e]);
          }
        }
        const int word = group * plane_words + 4 * position;
        *reinterpret_cast<uint4*>(stage + word) = make_uint4(big[0], big[1], big[2], big[3]);
        if (kThreeTf32) {
          *reinterpret_cast<uint4*>(small_planes + word) =
              make_uint4(small[0], small[1], small[2], small[3]);
        }
      }
    }
  }
}

#endif  // FUSEDCONV_WGMMA_DEVICE

}  // namespace wgmma
}  // namespace fusedconv
