// Fast fused forward for float32 NCHW, groups 1, any stride and dilation: implicit GEMM on tensor
// cores (DESIGN.md, "Kernels"). M = output channels (weights), N = output pixels, K = input
// channels x taps, walked in chunks of up to 8 input channels; inside a chunk K runs tap-major,
// channel-minor, so for Cin = 8 each k8 step is one tap (CUTLASS's "FixedChannels" idea, NCHW).
//
// Precision: 3xTF32 by default. Each float32 operand is split into a TF32 big part and a TF32
// small part (x - big) and the product taken as small*big + big*small + big*big (small*small is
// below float32 rounding): ~7e-7 relative error against float64 on KernelBench's v0.1. One TF32
// product (big parts rounded to nearest) is the opt-in fast mode (~3e-4).
//
// Two launches: a small prep kernel splits the weights once per call into a workspace, in mma
// A-fragment order, so the main kernel reads each fragment with one 16-byte load (L1-resident: all
// warps of an SM read the same fragments). Up to 16 output channels with small weights (16 x 8 x 3
// x 3, say; KernelBench's v0 itself takes the FFMA kernel) take one launch instead (DESIGN.md: "one
// launch, weights in shared memory"): each CTA splits its few fragments (9 KB for 16 x 8 x 3 x 3)
// into shared memory itself, which saves the prep kernel, its launch gap and the workspace
// allocation. The main kernel is a persistent grid; a CTA of 8 warps owns 16 * kMTiles output
// channels (blockIdx.y) and loops over (image, 256-pixel tile) pairs. Pixels are the flattened
// (row, col) index of the output plane, so a tile's outputs are contiguous in NCHW memory and
// narrow images waste no lanes. Per tile and channel chunk the input rows the tile needs (with the
// kernel's halo and zero padding) are staged in shared memory by cp.async and split once per
// element; each warp computes the CTA's channels x 32 pixels, accumulating over chunks, then
// applies bias + activation and stores. Stride and dilation only change offsets: output pixel (row,
// col) reads staged column col * stride_w of staged row row * stride_h, and tap (r, s) adds (r *
// dilation_h, s * dilation_w), so a strided tile stages every input row and column between the ones
// it reads (at most stride - 1 unused rows per output row, cheap next to a generic kernel).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "fusedconv/activation.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"
#include "fusedconv/tensorcore.cuh"

namespace fusedconv {
namespace {

using namespace tensorcore;

constexpr int kTcWarps = 8;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcPixelsPerWarp = 32;  // four n8 tiles
constexpr int kTcTilePixels = kTcWarps * kTcPixelsPerWarp;
// Input channels staged per chunk: 8 for kernels of 5 taps or more (v0.1: 3x3 x 8 channels, one
// tap per k8 step), more for small kernels, whose chunk of 8 channels is only one or two k8 steps
// of MMAs behind a whole stage-split-synchronise round: 1x1 with 128 input channels measured
// 0.46 ms in 16 such rounds per tile (eager: 0.27 ms). Halved while two CTAs would not fit.
int preferred_chunk_channels(int64_t taps) {
  return taps >= 5 ? 8 : (taps >= 3 ? 16 : (taps == 2 ? 32 : 64));
}
// Chunk totals (float32 sums of each chunk's MMA results, see the kernel) only past this many k8
// steps in all: up to 24 steps (72 MMAs per accumulator in 3xTF32; v0.1 has 27 at 7e-7 error)
// the tensor core's truncating accumulation stays far below the 1e-5 bound, and the totals' 64 KB
// of shared memory would halve the CTAs per SM of the 1x1 / 128-channel case.
constexpr int kMaxKStepsWithoutTotals = 24;
// CTAs of 8 warps per SM: two (registers capped at 128 per thread) with 32 or 64 channels per
// CTA; four (64 registers) with 16, whose accumulators are a quarter of the size, so small
// problems like KernelBench's v0 (512 tiles) run every tile at once instead of in two waves.
template <int kMTiles>
constexpr int max_ctas_per_sm() {
  return kMTiles == 1 ? 4 : 2;
}
constexpr int kPrepThreads = 256;

// Geometry of one launch, computed on the host.
struct TensorCoreLayout {
  int channel_tiles;     // kMTiles: 16-channel m16 tiles per CTA
  int channel_blocks;    // ceil(out_channels / (16 * channel_tiles)): gridDim.y
  int chunk_channels;    // input channels staged at a time (preferred_chunk_channels)
  int chunks;            // ceil(in_channels / chunk_channels)
  int chunk_k_steps;     // ceil(taps * chunk_channels / 8)
  int tile_rows;         // input rows staged per pixel tile: (output rows it spans - 1) *
                         // stride_h + (kernel_h - 1) * dilation_h + 1
  int tile_cols;         // (out_width - 1) * stride_w + (kernel_w - 1) * dilation_w + 1: the
                         // padded input row's columns any output reads
  int plane_pitch;       // words per staged channel, = 8 (mod 32) for conflict-free B loads;
                         // a chunk holds chunk_channels + 1 planes (the last all zero), once as
                         // raw float32 split in place to TF32 big parts, once as small parts
  int tiles_per_image;   // ceil(out_height * out_width / kTcTilePixels)
  int64_t fragment_words;  // words of big parts, all channel blocks (small parts follow)
  bool chunk_totals;       // several chunks, summed in float32 totals (kMaxKStepsWithoutTotals)
  bool shared_weights;     // each CTA splits its channel block's fragments into shared memory
                           // (no prep kernel, no workspace)
  int64_t shared_bytes;    // dynamic shared memory one CTA needs
};

// Up to this many bytes of split fragments per CTA (big and small parts), with one m16 tile per
// CTA, go to shared memory when the CTA's shared memory stays within the second bound: small
// problems only, whose four CTAs per SM must still fit (and every device's default 48 KB).
constexpr int64_t kMaxSharedWeightBytes = 16 * 1024;
constexpr int64_t kMaxSharedBytesWithWeights = 48 * 1024;

// Fragment words of one channel block (the layout's fragment_words / channel_blocks).
__host__ __device__ inline int64_t block_fragment_words(const TensorCoreLayout& layout) {
  return int64_t{layout.chunks} * layout.chunk_k_steps * layout.channel_tiles * 32 * 4;
}

// Split weights in m16n8k8 A-fragment order: word
// ((((block * chunks + chunk) * chunk_k_steps + step) * kMTiles + tile) * 32 + lane) * 4 + e
// holds row g + 8 * (e & 1), column t + 4 * (e >> 1) of that fragment (g = lane / 4,
// t = lane % 4); column k of a chunk is tap k / chunk_channels, channel k % chunk_channels.
// One word, `index` of all channel blocks' words; small = 0 in single-TF32 mode. 32-bit index
// math (the layout keeps fragment_words below 2^31): 64-bit divisions are subroutines of ~100
// instructions, which showed on v0, where every CTA splits its own words.
template <int kMTiles, bool kThreeTf32>
__device__ __forceinline__ void split_weight_word(const ConvParams& p,
                                                  const TensorCoreLayout& layout, uint32_t index,
                                                  uint32_t& big, uint32_t& small) {
  const float* __restrict__ weight = static_cast<const float*>(p.weight);
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
    value = weight[channel * p.weight_strides.n + in_channel * p.weight_strides.c +
                   tap_row * p.weight_strides.h + (tap - tap_row * kernel_w) * p.weight_strides.w];
  }
  small = 0u;
  if (kThreeTf32) {
    split_weight(value, big, small);
  } else {
    big = to_tf32(value);
  }
}

// Weights -> workspace: every channel block's fragments, big parts then small parts.
template <int kMTiles, bool kThreeTf32>
__global__ void __launch_bounds__(kPrepThreads)
    split_weights_kernel(const ConvParams p, const TensorCoreLayout layout) {
  uint32_t* __restrict__ big_parts = static_cast<uint32_t*>(p.workspace);
  uint32_t* __restrict__ small_parts = big_parts + layout.fragment_words;
  const uint32_t words = static_cast<uint32_t>(layout.fragment_words);
  for (uint32_t index = blockIdx.x * blockDim.x + threadIdx.x; index < words;
       index += blockDim.x * gridDim.x) {
    split_weight_word<kMTiles, kThreeTf32>(p, layout, index, big_parts[index], small_parts[index]);
  }
}

// A fragment: a plain shared-memory load, or a read-only global load (L1-resident).
template <bool kShared>
__device__ __forceinline__ uint4 load_fragment(const uint4* address) {
  return kShared ? *address : __ldg(address);
}

template <int kMTiles, bool kThreeTf32, bool kSharedWeights>
__global__ void __launch_bounds__(kTcThreads, max_ctas_per_sm<kMTiles>())
    conv_hardswish_relu_tensorcore_kernel(const ConvParams p, const TensorCoreLayout layout) {
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

  const float* __restrict__ input = static_cast<const float*>(p.input);
  const float* __restrict__ bias = static_cast<const float*>(p.bias);
  float* __restrict__ output = static_cast<float*>(p.output);
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
  for (int k = threadIdx.x; k < layout.chunk_k_steps * 8; k += kTcThreads) {
    const int tap = k / chunk_channels;
    tap_offset[k] = tap < taps ? (k % chunk_channels) * layout.plane_pitch +
                                     (tap / kernel_w) * static_cast<int>(p.dilation_h) *
                                         layout.tile_cols +
                                     (tap % kernel_w) * static_cast<int>(p.dilation_w)
                               : chunk_channels * layout.plane_pitch;
  }
  for (int index = threadIdx.x; index < layout.plane_pitch; index += kTcThreads) {
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
    const int64_t first_pixel = (tile_index % layout.tiles_per_image) * kTcTilePixels;
    const int first_row = static_cast<int>(first_pixel / out_width);

    // This thread's B-fragment columns: pixel warp * 32 + j * 8 + group of the tile.
    int pixel_offset[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t pixel = first_pixel + warp * kTcPixelsPerWarp + j * 8 + group;
      const int local =
          pixel < plane_size ? static_cast<int>(pixel - int64_t{first_row} * out_width) : 0;
      const int row = local / out_width;
      pixel_offset[j] = row * stride_h * layout.tile_cols + (local - row * out_width) * stride_w;
    }

    float acc[kMTiles][4][4];
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
      const int channel = channel_base + i * 16 + group;
      const float bias_low = (bias != nullptr && channel < p.out_channels) ? bias[channel] : 0.0f;
      const float bias_high =
          (bias != nullptr && channel + 8 < p.out_channels) ? bias[channel + 8] : 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[i][j][0] = acc[i][j][1] = bias_low;
        acc[i][j][2] = acc[i][j][3] = bias_high;
      }
    }

    const float* input_image = input + n * p.input_strides.n;
    for (int chunk = 0; chunk < layout.chunks; ++chunk) {
      __syncthreads();  // every warp is done with the previous chunk's planes
      // Stage rows first_row - pad_top ... of this chunk's channels, zero outside the image and
      // past in_channels: all of it in flight at once. A warp copies one (channel, row) at a
      // time, lanes along the row.
      for (int channel_row = warp; channel_row < chunk_channels * layout.tile_rows;
           channel_row += kTcWarps) {
        const int channel = channel_row / layout.tile_rows;
        const int row = channel_row - channel * layout.tile_rows;
        const int in_channel = chunk * chunk_channels + channel;
        const int in_row = first_row * stride_h + row - static_cast<int>(p.pad_top);
        const bool row_inside = in_channel < p.in_channels && in_row >= 0 && in_row < p.in_height;
        const float* source_row = input_image + (row_inside ? in_channel * p.input_strides.c +
                                                                  in_row * p.input_strides.h
                                                            : 0);
        float* destination_row = tile + channel * layout.plane_pitch + row * layout.tile_cols;
        for (int col = lane; col < layout.tile_cols; col += 32) {
          const int in_col = col - static_cast<int>(p.pad_left);
          const bool inside = row_inside && in_col >= 0 && in_col < p.in_width;
          copy_async_4(destination_row + col, inside ? source_row + in_col : input_image,
                       inside ? 4 : 0);
        }
      }
      if (kSharedWeights && weights_pending) {
        // Overlaps the first staging's latency; visible to every warp after the
        // __syncthreads below, before the first MMA.
        uint32_t* shared_big = reinterpret_cast<uint32_t*>(shared_raw);
        uint32_t* shared_small = shared_big + shared_fragment_words;
        const uint32_t first_word = blockIdx.y * static_cast<uint32_t>(shared_fragment_words);
        for (int index = threadIdx.x; index < shared_fragment_words; index += kTcThreads) {
          split_weight_word<kMTiles, kThreeTf32>(p, layout, first_word + index,
                                                 shared_big[index], shared_small[index]);
        }
        weights_pending = false;
      }
      copy_async_wait_all();
      __syncthreads();
      // Split every staged element once here rather than once per tap in the MMA loop.
      for (int index = threadIdx.x; index < chunk_channels * layout.plane_pitch;
           index += kTcThreads) {
        uint32_t big, small;
        split_input(tile[index], big, small);
        tile_big[index] = big;
        tile_small[index] = small;
      }
      __syncthreads();

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
          const uint4 a_hi = load_fragment<kSharedWeights>(big_fragments + fragment);
          if (kThreeTf32) {
            const uint4 a_lo = load_fragment<kSharedWeights>(small_fragments + fragment);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              mma_tf32(acc[i][j], a_lo, b_big[j][0], b_big[j][1]);
              mma_tf32(acc[i][j], a_hi, b_small[j][0], b_small[j][1]);
            }
          }
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            mma_tf32(acc[i][j], a_hi, b_big[j][0], b_big[j][1]);
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
              float& slot = chunk_totals[((i * 4 + j) * 4 + e) * kTcThreads + threadIdx.x];
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
            acc[i][j][e] += chunk_totals[((i * 4 + j) * 4 + e) * kTcThreads + threadIdx.x];
          }
        }
      }
    }

    // Epilogue: activation on the accumulators, stores of two neighbouring pixels per register
    // pair (float2 when the plane size keeps them 8-byte aligned).
    const bool paired_stores = (plane_size & 1) == 0;
    float* output_image = output + n * p.output_strides.n;
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int channel = channel_base + i * 16 + group + 8 * half;
        if (channel >= p.out_channels) {
          continue;
        }
        float* output_plane = output_image + channel * p.output_strides.c;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t pixel =
              first_pixel + warp * kTcPixelsPerWarp + j * 8 + 2 * thread_in_group;
          const float first = HardSwishReLU<float>::value(acc[i][j][2 * half]);
          const float second = HardSwishReLU<float>::value(acc[i][j][2 * half + 1]);
          if (paired_stores && pixel + 1 < plane_size) {
            *reinterpret_cast<float2*>(output_plane + pixel) = make_float2(first, second);
          } else {
            if (pixel < plane_size) {
              output_plane[pixel] = first;
            }
            if (pixel + 1 < plane_size) {
              output_plane[pixel + 1] = second;
            }
          }
        }
      }
    }
  }
}

int channel_tiles_for(int64_t out_channels) {
  return out_channels <= 16 ? 1 : (out_channels <= 32 ? 2 : 4);
}

TensorCoreLayout make_layout_with_chunk(const ConvParams& p, int chunk_channels) {
  TensorCoreLayout layout{};
  layout.channel_tiles = channel_tiles_for(p.out_channels);
  layout.channel_blocks = static_cast<int>((p.out_channels + layout.channel_tiles * 16 - 1) /
                                           (layout.channel_tiles * 16));
  layout.chunk_channels =
      static_cast<int>(p.in_channels < chunk_channels ? p.in_channels : chunk_channels);
  layout.chunks =
      static_cast<int>((p.in_channels + layout.chunk_channels - 1) / layout.chunk_channels);
  layout.chunk_k_steps =
      static_cast<int>((p.kernel_h * p.kernel_w * layout.chunk_channels + 7) / 8);
  const int64_t tile_rows = (spanned_rows(p.out_width, kTcTilePixels) - 1) * p.stride_h +
                            (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t tile_cols = (p.out_width - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  if (tile_rows * tile_cols > (int64_t{1} << 24)) {
    layout.shared_bytes = INT64_MAX;  // far beyond any shared memory; keeps the ints below safe
    return layout;
  }
  layout.tile_rows = static_cast<int>(tile_rows);
  layout.tile_cols = static_cast<int>(tile_cols);
  layout.plane_pitch = padded_pitch(int64_t{layout.tile_rows} * layout.tile_cols, 8);
  layout.tiles_per_image =
      static_cast<int>((p.out_height * p.out_width + kTcTilePixels - 1) / kTcTilePixels);
  layout.fragment_words = int64_t{layout.channel_blocks} * layout.chunks * layout.chunk_k_steps *
                          layout.channel_tiles * 32 * 4;
  layout.shared_bytes = int64_t{layout.chunk_k_steps} * 8 * 4 +
                        int64_t{2} * (layout.chunk_channels + 1) * layout.plane_pitch * 4;
  layout.chunk_totals = layout.chunks > 1 &&
                        int64_t{layout.chunks} * layout.chunk_k_steps > kMaxKStepsWithoutTotals;
  if (layout.chunk_totals) {
    layout.shared_bytes += int64_t{kTcThreads} * layout.channel_tiles * 16 * 4;
  }
  const int64_t shared_weight_bytes = 2 * block_fragment_words(layout) * 4;
  layout.shared_weights =
      layout.channel_tiles == 1 && shared_weight_bytes <= kMaxSharedWeightBytes &&
      layout.shared_bytes + shared_weight_bytes <= kMaxSharedBytesWithWeights;
  if (layout.shared_weights) {
    layout.shared_bytes += shared_weight_bytes;
  }
  return layout;
}

TensorCoreLayout make_layout(const ConvParams& p, const DeviceLimits& limits) {
  TensorCoreLayout layout =
      make_layout_with_chunk(p, preferred_chunk_channels(p.kernel_h * p.kernel_w));
  while (layout.chunk_channels > 8 && ctas_per_sm(limits, layout.shared_bytes, 2) < 2) {
    // Half the chunk, rounded up to whole k8 steps of channels.
    layout = make_layout_with_chunk(p, (layout.chunk_channels / 2 + 7) / 8 * 8);
  }
  return layout;
}

// Dispatch rule: the tensor-core kernel wherever its shape rule holds and one chunk's staged
// tile fits the device's shared memory; the generic direct convolution (exact float32, every
// configuration) everywhere else.
cudaError_t choose_tensorcore(const ConvParams& params, bool& use, TensorCoreLayout& layout,
                              DeviceLimits& limits) {
  use = false;
  if (!dense_float32_nchw(params)) {
    return cudaSuccess;
  }
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  thread_local PlanMemo<TensorCoreLayout> memo;
  use = memo.get(plan_key(params, limits, 0), layout, [&](TensorCoreLayout& planned) {
    planned = make_layout(params, limits);
    // fragment_words < 2^31: the weight split's 32-bit index math (and a workspace below 16 GB).
    return planned.shared_bytes <= limits.max_shared_bytes &&
           planned.fragment_words < (int64_t{1} << 31);
  });
  return cudaSuccess;
}

template <int kMTiles, bool kThreeTf32, bool kSharedWeights>
cudaError_t launch_with(const ConvParams& p, const TensorCoreLayout& layout,
                        const DeviceLimits& limits, cudaStream_t stream) {
  constexpr auto kernel =
      conv_hardswish_relu_tensorcore_kernel<kMTiles, kThreeTf32, kSharedWeights>;
  cudaError_t status = opt_in_shared_memory<kernel>(limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (!kSharedWeights) {
    if (p.workspace == nullptr) {
      return cudaErrorInvalidValue;
    }
    const int64_t prep_blocks = (layout.fragment_words + kPrepThreads - 1) / kPrepThreads;
    split_weights_kernel<kMTiles, kThreeTf32>
        <<<static_cast<unsigned int>(prep_blocks < 1024 ? prep_blocks : 1024), kPrepThreads, 0,
           stream>>>(p, layout);
    status = cudaGetLastError();
    if (status != cudaSuccess) {
      return status;
    }
  }
  // Persistent grid: as many CTAs as fit on every SM at once, shared among the channel blocks,
  // never more CTAs than tiles.
  const int64_t total_tiles = p.batch * layout.tiles_per_image;
  const int64_t per_sm = ctas_per_sm(limits, layout.shared_bytes, max_ctas_per_sm<kMTiles>());
  int64_t blocks = (limits.sm_count * per_sm + layout.channel_blocks - 1) / layout.channel_blocks;
  if (blocks > total_tiles) {
    blocks = total_tiles;
  }
  const dim3 grid(static_cast<unsigned int>(blocks),
                  static_cast<unsigned int>(layout.channel_blocks));
  kernel<<<grid, kTcThreads, static_cast<size_t>(layout.shared_bytes), stream>>>(p, layout);
  return cudaGetLastError();
}

cudaError_t launch_tensorcore(const ConvParams& params, const TensorCoreLayout& layout,
                              const DeviceLimits& limits, bool three_tf32, cudaStream_t stream) {
  switch (layout.channel_tiles) {
    case 1:
      if (layout.shared_weights) {
        return three_tf32 ? launch_with<1, true, true>(params, layout, limits, stream)
                          : launch_with<1, false, true>(params, layout, limits, stream);
      }
      return three_tf32 ? launch_with<1, true, false>(params, layout, limits, stream)
                        : launch_with<1, false, false>(params, layout, limits, stream);
    case 2:
      return three_tf32 ? launch_with<2, true, false>(params, layout, limits, stream)
                        : launch_with<2, false, false>(params, layout, limits, stream);
    default:
      return three_tf32 ? launch_with<4, true, false>(params, layout, limits, stream)
                        : launch_with<4, false, false>(params, layout, limits, stream);
  }
}

// Process-wide opt-out of the Hopper kernel (FUSEDCONV_DISABLE_WGMMA=1, read once): for A/B
// timing against the mma.sync kernel, and a way around it should it misbehave on some setup.
bool wgmma_disabled() {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_WGMMA");
  return disabled;
}

cudaError_t use_wgmma(const ConvParams& params, bool allow_tf32, bool& use,
                      int64_t& workspace_bytes) {
  use = false;
  workspace_bytes = 0;
  if (wgmma_disabled()) {
    return cudaSuccess;
  }
  return wgmma_forward_applies(params, allow_tf32, use, workspace_bytes);
}

}  // namespace

cudaError_t forward_workspace_bytes(const ConvParams& params, bool allow_tf32, int64_t& bytes) {
  bytes = 0;
  if (direct_forward_applies(params)) {
    return cudaSuccess;
  }
  bool wgmma = false;
  cudaError_t status = use_wgmma(params, allow_tf32, wgmma, bytes);
  if (status != cudaSuccess || wgmma) {
    return status;
  }
  bool use = false;
  TensorCoreLayout layout{};
  DeviceLimits limits{};
  status = choose_tensorcore(params, use, layout, limits);
  if (status == cudaSuccess && use && !layout.shared_weights) {
    bytes = 2 * layout.fragment_words * 4;  // big parts, then small parts
  }
  return status;
}

// Dispatch rule (launch.h): the small-problem kernels, else the Hopper wgmma kernel, else
// the mma.sync tensor-core kernel where its shape rule holds and its tile fits, else the generic
// kernel.
cudaError_t launch_conv_hardswish_relu(const ConvParams& params, bool allow_tf32,
                                       cudaStream_t stream) {
  if (params.batch * params.out_channels * params.out_height * params.out_width == 0) {
    return cudaSuccess;
  }
  if (direct_forward_applies(params)) {
    return launch_conv_hardswish_relu_direct(params, stream);
  }
  bool wgmma = false;
  int64_t wgmma_workspace_bytes = 0;
  cudaError_t status = use_wgmma(params, allow_tf32, wgmma, wgmma_workspace_bytes);
  if (status != cudaSuccess) {
    return status;
  }
  if (wgmma) {
    return launch_conv_hardswish_relu_wgmma(params, allow_tf32, stream);
  }
  bool use = false;
  TensorCoreLayout layout{};
  DeviceLimits limits{};
  status = choose_tensorcore(params, use, layout, limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (!use) {
    return launch_conv_hardswish_relu_generic(params, stream);
  }
  return launch_tensorcore(params, layout, limits, !allow_tf32, stream);
}

}  // namespace fusedconv
