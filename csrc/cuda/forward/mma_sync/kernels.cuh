// The mma.sync forward (sm_80 and later): NCHW, groups 1, any stride and dilation, an implicit
// GEMM on tensor cores (docs/DESIGN.md, "Kernels"). M = output channels (weights), N =
// output pixels, K = input channels x taps, walked in chunks of up to 8 input channels; inside a
// chunk K runs tap-major, channel-minor, so for Cin = 8 each k8 step is one tap (CUTLASS's
// "FixedChannels" idea, NCHW).
//
// Precision: 3xTF32 by default. Each float32 operand is split into a TF32 big part and a TF32
// small part (x - big) and the product taken as small*big + big*small + big*big (small*small is
// below float32 rounding): ~7e-7 relative error against float64 on KernelBench's v0.1. One TF32
// product (big parts rounded to nearest) is the opt-in fast mode (~3e-4). float16 and bfloat16
// (Storage) take one TF32 product in either mode: their values are TF32 values, so the products
// are exact and only the float32 accumulation rounds, once more at the store.
//
// Two launches: a small prep kernel splits the weights once per call into a workspace, in mma
// A-fragment order, so the main kernel reads each fragment with one 16-byte load (L1-resident: all
// warps of an SM read the same fragments). Up to 16 output channels with small weights (16 x 8 x 3
// x 3, say; KernelBench's v0 itself takes the FFMA kernel) take one launch instead: each CTA splits
// its few fragments (9 KB for 16 x 8 x 3 x 3) into shared memory itself, which saves the prep
// kernel, its launch gap and the workspace allocation. The main kernel is a persistent grid; a CTA
// of 8 warps owns 16 * kMTiles output channels (blockIdx.y) and loops over (image, 256-pixel tile)
// pairs. Pixels are the flattened (row, col) index of the output plane, so a tile's outputs are
// contiguous in NCHW memory and narrow images waste no lanes. Per tile and channel chunk the input
// rows the tile needs (with the kernel's halo and zero padding) are staged in shared memory by
// cp.async and split once per element; each warp computes the CTA's channels x 32 pixels,
// accumulating over chunks, then applies bias + activation and stores. Stride and dilation only
// change offsets: output pixel (row, col) reads staged column col * stride_w of staged row row *
// stride_h, and tap (r, s) adds (r * dilation_h, s * dilation_w), so a strided tile stages every
// input row and column between the ones it reads (at most stride - 1 unused rows per output row,
// cheap next to a generic kernel).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "forward/mma_sync/layout.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace mma_sync {

// Split weights in m16n8k8 A-fragment order: word
// ((((block * chunks + chunk) * chunk_k_steps + step) * kMTiles + tile) * 32 + lane) * 4 + e
// holds row g + 8 * (e & 1), column t + 4 * (e >> 1) of that fragment (g = lane / 4,
// t = lane % 4); column k of a chunk is tap k / chunk_channels, channel k % chunk_channels.
// One word, `index` of all channel blocks' words; small = 0 in single-TF32 mode. 32-bit index
// math (the layout keeps fragment_words below 2^31): 64-bit divisions are subroutines of ~100
// instructions, which showed on v0, where every CTA splits its own words.
template <typename Storage, int kMTiles, bool kThreeTf32>
__device__ __forceinline__ void split_weight_word(const ConvParams& p,
                                                  const Layout& layout, uint32_t index,
                                                  uint32_t& big, uint32_t& small) {
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
  const uint32_t element = index & 3u;
  const uint32_t lane = (index >> 2) & 31u;
  uint32_t rest = index >> 7;
  const uint32_t m_tile = rest % kMTiles;
  rest /= kMTiles;
  const uint32_t k_steps = static_cast<uint32_t>(layout.chunk_k_steps);
  const uint32_t step = rest % k_steps;
  rest /= k_steps;
  const uint32_t chunks = static_cast<uint32_t>(layout.chunks);
  const uint32_t chunk = rest % chunks;
  const uint32_t block = rest / chunks;
  const uint32_t chunk_channels = static_cast<uint32_t>(layout.chunk_channels);
  const uint32_t kernel_w = static_cast<uint32_t>(p.kernel_w);
  const int64_t channel =
      int64_t{block} * kMTiles * 16 + m_tile * 16 + (lane >> 2) + 8 * (element & 1);
  const uint32_t k = step * 8 + (lane & 3) + 4 * (element >> 1);
  const uint32_t tap = k / chunk_channels;
  const int64_t in_channel = int64_t{chunk} * chunk_channels + (k - tap * chunk_channels);
  float value = 0.0f;
  if (channel < p.out_channels && tap < p.kernel_h * p.kernel_w && in_channel < p.in_channels) {
    const uint32_t tap_row = tap / kernel_w;
    value = StorageTraits<Storage>::load(
        weight[channel * p.weight_strides.n + in_channel * p.weight_strides.c +
               tap_row * p.weight_strides.h + (tap - tap_row * kernel_w) * p.weight_strides.w]);
  }
  split_weight_operand<kThreeTf32>(value, big, small);
}

// Weights -> workspace: every channel block's fragments, big parts then small parts.
template <typename Storage, int kMTiles, bool kThreeTf32>
__global__ void __launch_bounds__(kPrepThreads)
    split_weights_kernel(const ConvParams p, const Layout layout) {
  uint32_t* __restrict__ big_parts = static_cast<uint32_t*>(p.workspace);
  uint32_t* __restrict__ small_parts = big_parts + layout.fragment_words;
  const uint32_t words = static_cast<uint32_t>(layout.fragment_words);
  for (uint32_t index = blockIdx.x * blockDim.x + threadIdx.x; index < words;
       index += blockDim.x * gridDim.x) {
    split_weight_word<Storage, kMTiles, kThreeTf32>(p, layout, index, big_parts[index],
                                                    small_parts[index]);
  }
}

// Two neighbouring outputs, the first at an address aligned for the pair.
__device__ __forceinline__ void store_pair(float* destination, float first, float second) {
  *reinterpret_cast<float2*>(destination) = make_float2(first, second);
}
template <typename Storage>
__device__ __forceinline__ void store_pair(Storage* destination, float first, float second) {
  *reinterpret_cast<uint32_t*>(destination) = StorageTraits<Storage>::store_pair(first, second);
}

// A fragment: a plain shared-memory load, or a read-only global load (L1-resident).
template <bool kShared>
__device__ __forceinline__ uint4 load_fragment(const uint4* address) {
  return kShared ? *address : __ldg(address);
}

// Stages `count` columns of a 16-bit row as float32 (TF32 values, so no split follows), lanes
// along the row: column c holds source[c - pad_left], zero outside the row's `width` elements
// and on rows outside the image (`row_inside`).
template <typename Storage>
__device__ __forceinline__ void stage_row_16bit(float* destination, const Storage* source,
                                                int count, int pad_left, int width,
                                                bool row_inside, int lane) {
#pragma unroll 4
  for (int col = lane; col < count; col += 32) {
    const int in_col = col - pad_left;
    const bool inside = row_inside && in_col >= 0 && in_col < width;
    destination[col] = inside ? StorageTraits<Storage>::load(source[in_col]) : 0.0f;
  }
}

template <typename Storage, int kMTiles, bool kThreeTf32, bool kSharedWeights>
__global__ void __launch_bounds__(kThreads, max_ctas_per_sm<kMTiles>())
    conv_hardswish_relu_mma_sync_kernel(const ConvParams p, const Layout layout) {
  static_assert(!kThreeTf32 || std::is_same<Storage, float>::value,
                "16-bit operands are TF32 values: one product is exact");
  constexpr bool kFloat32 = std::is_same<Storage, float>::value;
  extern __shared__ uint4 shared_raw[];
  // With kSharedWeights, this CTA's channel block's fragments come first (big, then small).
  const int64_t shared_fragment_words = kSharedWeights ? block_fragment_words(layout) : 0;
  int* tap_offset = reinterpret_cast<int*>(shared_raw + shared_fragment_words / 4 * 2);
  float* tile = reinterpret_cast<float*>(tap_offset + layout.chunk_k_steps * 8);
  const int tile_words = (layout.chunk_channels + 1) * layout.plane_pitch;
  uint32_t* tile_big = reinterpret_cast<uint32_t*>(tile);
  uint32_t* tile_small = tile_big + tile_words;
  // With layout.chunk_totals, each chunk's MMA sums move into float32 totals here
  // (thread-private words, conflict-free): the tensor core's own accumulation truncates, and over
  // the 375 MMAs of a 33-channel 5x5 problem that bias measured 1.05e-5 relative error. One chunk
  // (v0.1), or few k steps in all, needs no totals and no extra shared memory.
  float* chunk_totals = reinterpret_cast<float*>(tile_small + tile_words);

  const Storage* __restrict__ input = static_cast<const Storage*>(p.input);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  Storage* __restrict__ output = static_cast<Storage*>(p.output);
  const uint4* big_fragments = static_cast<const uint4*>(p.workspace);
  const uint4* small_fragments = big_fragments + layout.fragment_words / 4;
  int64_t block_fragments = int64_t{blockIdx.y} * block_fragment_words(layout) / 4;
  // With kSharedWeights the split itself happens while the first tile's input is in flight.
  bool weights_pending = kSharedWeights;
  if (kSharedWeights) {
    big_fragments = shared_raw;
    small_fragments = shared_raw + shared_fragment_words / 4;
    block_fragments = 0;
  }

  const int chunk_channels = layout.chunk_channels;
  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);
  const int channel_base = blockIdx.y * kMTiles * 16;
  const int stride_h = static_cast<int>(p.stride_h);
  const int stride_w = static_cast<int>(p.stride_w);

  // Offset of each k of a chunk inside the staged tile, relative to the pixel's own offset.
  // Padding k (tap >= taps) reads the extra all-zero plane, so a NaN in the input cannot leak
  // through 0 * NaN; channels past in_channels in the last chunk are staged as zeros.
  for (int k = threadIdx.x; k < layout.chunk_k_steps * 8; k += kThreads) {
    const int tap = k / chunk_channels;
    tap_offset[k] = tap < taps ? (k % chunk_channels) * layout.plane_pitch +
                                     (tap / kernel_w) * static_cast<int>(p.dilation_h) *
                                         layout.tile_cols +
                                     (tap % kernel_w) * static_cast<int>(p.dilation_w)
                               : chunk_channels * layout.plane_pitch;
  }
  for (int index = threadIdx.x; index < layout.plane_pitch; index += kThreads) {
    tile_big[chunk_channels * layout.plane_pitch + index] = 0u;
    tile_small[chunk_channels * layout.plane_pitch + index] = 0u;
  }

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int group = lane >> 2;
  const int thread_in_group = lane & 3;
  const int out_width = static_cast<int>(p.out_width);
  const int64_t plane_size = p.out_height * p.out_width;
  const int64_t total_tiles = p.batch * layout.tiles_per_image;

  for (int64_t tile_index = blockIdx.x; tile_index < total_tiles; tile_index += gridDim.x) {
    const int64_t n = tile_index / layout.tiles_per_image;
    const int64_t first_pixel = (tile_index % layout.tiles_per_image) * kTilePixels;
    const int first_row = static_cast<int>(first_pixel / out_width);

    // This thread's B-fragment columns: pixel warp * 32 + j * 8 + group of the tile.
    int pixel_offset[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t pixel = first_pixel + warp * kPixelsPerWarp + j * 8 + group;
      const int local =
          pixel < plane_size ? static_cast<int>(pixel - int64_t{first_row} * out_width) : 0;
      const int row = local / out_width;
      pixel_offset[j] = row * stride_h * layout.tile_cols + (local - row * out_width) * stride_w;
    }

    float acc[kMTiles][4][4];
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
      const int channel = channel_base + i * 16 + group;
      const float bias_low = (bias != nullptr && channel < p.out_channels)
                                 ? StorageTraits<Storage>::load(bias[channel])
                                 : 0.0f;
      const float bias_high = (bias != nullptr && channel + 8 < p.out_channels)
                                  ? StorageTraits<Storage>::load(bias[channel + 8])
                                  : 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[i][j][0] = acc[i][j][1] = bias_low;
        acc[i][j][2] = acc[i][j][3] = bias_high;
      }
    }

    const Storage* input_image = input + n * p.input_strides.n;
    for (int chunk = 0; chunk < layout.chunks; ++chunk) {
      __syncthreads();  // every warp is done with the previous chunk's planes
      // Stage rows first_row - pad_top ... of this chunk's channels, zero outside the image and
      // past in_channels: in float32 all of it in flight at once (cp.async), 16-bit rows by
      // plain loads. A warp copies one (channel, row) at a time, lanes along the row.
      for (int channel_row = warp; channel_row < chunk_channels * layout.tile_rows;
           channel_row += kWarps) {
        const int channel = channel_row / layout.tile_rows;
        const int row = channel_row - channel * layout.tile_rows;
        const int in_channel = chunk * chunk_channels + channel;
        const int in_row = first_row * stride_h + row - static_cast<int>(p.pad_top);
        const bool row_inside = in_channel < p.in_channels && in_row >= 0 && in_row < p.in_height;
        const Storage* source_row =
            input_image +
            (row_inside ? in_channel * p.input_strides.c + in_row * p.input_strides.h : 0);
        float* destination_row = tile + channel * layout.plane_pitch + row * layout.tile_cols;
        const int pad_left = static_cast<int>(p.pad_left);
        if (kFloat32) {
          for (int col = lane; col < layout.tile_cols; col += 32) {
            const int in_col = col - pad_left;
            const bool inside = row_inside && in_col >= 0 && in_col < p.in_width;
            copy_async_4(destination_row + col, inside ? source_row + in_col : input_image,
                         inside ? 4 : 0);
          }
        } else {
          stage_row_16bit(destination_row, source_row, layout.tile_cols, pad_left,
                          static_cast<int>(p.in_width), row_inside, lane);
        }
      }
      if (kSharedWeights && weights_pending) {
        // Overlaps the first staging's latency; visible to every warp after the
        // __syncthreads below, before the first MMA.
        uint32_t* shared_big = reinterpret_cast<uint32_t*>(shared_raw);
        uint32_t* shared_small = shared_big + shared_fragment_words;
        const uint32_t first_word = blockIdx.y * static_cast<uint32_t>(shared_fragment_words);
        for (int index = threadIdx.x; index < shared_fragment_words; index += kThreads) {
          split_weight_word<Storage, kMTiles, kThreeTf32>(p, layout, first_word + index,
                                                          shared_big[index], shared_small[index]);
        }
        weights_pending = false;
      }
      copy_async_wait_all();
      __syncthreads();
      if (kFloat32) {
        // Split every staged element once here rather than once per tap in the MMA loop.
        for (int index = threadIdx.x; index < chunk_channels * layout.plane_pitch;
             index += kThreads) {
          uint32_t big, small;
          split_input(tile[index], big, small);
          tile_big[index] = big;
          tile_small[index] = small;
        }
        __syncthreads();
      }

      const int64_t chunk_fragments =
          block_fragments + int64_t{chunk} * layout.chunk_k_steps * kMTiles * 32;
      for (int k_step = 0; k_step < layout.chunk_k_steps; ++k_step) {
        const int offset_low = tap_offset[k_step * 8 + thread_in_group];
        const int offset_high = tap_offset[k_step * 8 + thread_in_group + 4];
        uint32_t b_big[4][2], b_small[4][2];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          b_big[j][0] = tile_big[pixel_offset[j] + offset_low];
          b_big[j][1] = tile_big[pixel_offset[j] + offset_high];
          if (kThreeTf32) {
            b_small[j][0] = tile_small[pixel_offset[j] + offset_low];
            b_small[j][1] = tile_small[pixel_offset[j] + offset_high];
          }
        }
#pragma unroll
        for (int i = 0; i < kMTiles; ++i) {
          const int64_t fragment = chunk_fragments + (k_step * kMTiles + i) * 32 + lane;
          const uint4 a_big = load_fragment<kSharedWeights>(big_fragments + fragment);
          const uint4 a_small = kThreeTf32
                                    ? load_fragment<kSharedWeights>(small_fragments + fragment)
                                    : a_big;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            mma_three_tf32<kThreeTf32>(acc[i][j], a_big, a_small, b_big[j][0], b_big[j][1],
                                       b_small[j][0], b_small[j][1]);
          }
        }
      }
      if (layout.chunk_totals && chunk + 1 < layout.chunks) {
#pragma unroll
        for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float& slot = chunk_totals[((i * 4 + j) * 4 + e) * kThreads + threadIdx.x];
              slot = chunk == 0 ? acc[i][j][e] : slot + acc[i][j][e];
              acc[i][j][e] = 0.0f;
            }
          }
        }
      }
    }
    if (layout.chunk_totals) {
#pragma unroll
      for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[i][j][e] += chunk_totals[((i * 4 + j) * 4 + e) * kThreads + threadIdx.x];
          }
        }
      }
    }

    // Epilogue: activation on the accumulators, stores of two neighbouring pixels per register
    // pair (one 8-byte float2 or 4-byte 16-bit pair where an even plane size keeps it aligned).
    const bool paired_stores = (plane_size & 1) == 0;
    Storage* output_image = output + n * p.output_strides.n;
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int channel = channel_base + i * 16 + group + 8 * half;
        if (channel >= p.out_channels) {
          continue;
        }
        Storage* output_plane = output_image + channel * p.output_strides.c;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t pixel =
              first_pixel + warp * kPixelsPerWarp + j * 8 + 2 * thread_in_group;
          const float first = HardSwishReLU<float>::value(acc[i][j][2 * half]);
          const float second = HardSwishReLU<float>::value(acc[i][j][2 * half + 1]);
          if (paired_stores && pixel + 1 < plane_size) {
            store_pair(output_plane + pixel, first, second);
          } else {
            if (pixel < plane_size) {
              output_plane[pixel] = StorageTraits<Storage>::store(first);
            }
            if (pixel + 1 < plane_size) {
              output_plane[pixel + 1] = StorageTraits<Storage>::store(second);
            }
          }
        }
      }
    }
  }
}

}  // namespace mma_sync
}  // namespace fusedconv
