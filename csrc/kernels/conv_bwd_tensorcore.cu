// Fused backward for the forward's fast-path configurations (float32, dense NCHW, stride 1,
// dilation 1, groups 1; DESIGN.md, "Kernels"). g = dL/dz = grad_y * f'(y) is formed on the fly
// from grad_y and the saved output y while they are staged in shared memory: it is never written
// to global memory. Precision 3xTF32 (tensorcore.cuh), or one TF32 product when allow_tf32.
//
// grad_input: owner-computes implicit GEMM, M = input pixels (256-pixel tiles of one image),
//   N = input channels (8 per n8 tile), K = output channels x taps against the flipped weights,
//   walked in chunks of 8 output channels. Each CTA writes only its own pixels: no atomics. A
//   prep kernel splits W once per call into B-fragment order in the workspace.
// grad_weight, grad_bias: M = output channels (64 per CTA), N = (tap, input channel) pairs of an
//   8-channel chunk, K = output pixels (128-pixel tiles). A persistent CTA accumulates its tiles
//   in registers and writes one partial per warp; a reduce kernel sums the partials in a fixed
//   order, so the result is bitwise identical from run to run. grad_bias is summed from the staged
//   g in the same pass.
#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/activation.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"
#include "fusedconv/tensorcore.cuh"

namespace fusedconv {
// A named namespace, not an anonymous one: load_inline compiles every .cu file as one translation
// unit, where this file's helpers would collide with the forward's.
namespace backward_detail {

using namespace tensorcore;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxCtasPerSm = 2;
constexpr int kPrepThreads = 256;
constexpr int kReduceThreads = 256;
constexpr int kMaxChunkChannels = 8;

// grad_input tiles: 8 warps x kMTiles m16 tiles of pixels; four (512-pixel tiles) where one n8
// tile of input channels leaves the registers for them. Taller tiles stage fewer halo rows of g
// per pixel: 7 rows for 4 (v0.1) instead of 5 for 2.
template <int kNTiles>
__host__ __device__ constexpr int dgrad_m_tiles() {
  return kNTiles == 1 ? 4 : 2;
}
// grad_weight tiles: 128 pixels; 64 output channels per CTA; a warp owns kWgradWarpMTiles m16
// tiles of channels and up to kWgradMaxNTiles n8 tiles ((tap, channel) columns) for its pixel
// group.
constexpr int kWgradTilePixels = 128;
constexpr int kWgradChannels = 64;
constexpr int kWgradMaxNTiles = 9;
// One m16 tile of channels per warp: the totals plus one tile's MMA accumulators (2 x 36
// registers) leave room for two CTAs per SM, so one CTA's staging overlaps the other's MMAs (two
// m16 tiles, at one CTA per SM, measured 1.64 ms on v0.1).
constexpr int kWgradWarpMTiles = 1;
constexpr int kWgradGPitch = kWgradTilePixels + 4;  // = 4 (mod 32): conflict-free A loads
// Partials of grad_weight are capped at this many floats; beyond it fewer CTAs run.
constexpr int64_t kMaxPartialFloats = int64_t{1} << 24;

struct DgradLayout {
  int channel_tiles;      // kNTiles: n8 tiles of input channels per CTA
  int tile_pixels;        // kWarps * 16 * dgrad_m_tiles<kNTiles>()
  int channel_blocks;     // gridDim.y
  int chunk_channels;     // output channels staged at a time: min(out_channels, 8)
  int chunks;
  int chunk_k_steps;      // ceil(taps * chunk_channels / 8)
  int tile_rows;          // g rows staged per tile: rows the tile spans + kernel_h - 1
  int tile_cols;          // in_width + kernel_w - 1
  int plane_pitch;        // = 8 (mod 32)
  int tiles_per_image;
  int64_t fragment_words;  // words of split weights (uint4 {big0, big1, small0, small1} per lane)
  int64_t shared_bytes;
};

struct WgradLayout {
  int channel_blocks;     // gridDim.y: blocks of 64 output channels
  int warps_m;            // warps along the channels: 1, 2 or 4 (ceil(out_channels / 16))
  int chunk_channels;     // input channels staged at a time: min(in_channels, 8)
  int chunks;
  int n_tiles;            // ceil(taps * chunk_channels / 8): (tap, channel) columns of a chunk
  int n_groups;           // ceil(n_tiles / kWgradMaxNTiles): gridDim.z = chunks * n_groups
  int tile_rows;          // x rows staged per tile: rows the tile spans + kernel_h - 1
  int tile_cols;          // out_width + kernel_w - 1
  int plane_pitch;        // = 4 (mod 32)
  int tiles_per_image;
  int64_t weight_size;    // out_channels * in_channels * taps
  int64_t partial_slots;  // gridDim.x * (8 / warps_m): one partial per (CTA column, warp group)
  int grid_x;
  int64_t shared_bytes;
};

// Columns a lane stages per batch of loads (grad_input's g rows): 160 columns per warp batch.
constexpr int kStageUnroll = 5;

// The activation-side split of one staged value straight into its two shared planes.
template <bool kThreeTf32>
__device__ __forceinline__ void split_activation(float value, uint32_t& big, uint32_t& small) {
  if (kThreeTf32) {
    uint32_t b, s;
    split_input(value, b, s);
    big = b;
    small = s;
  } else {
    big = to_tf32(value);
    small = 0u;
  }
}

// ---------------------------------------------------------------------------- grad_input

// W -> workspace in m16n8k8 B-fragment order of the grad_input GEMM: uint4 number
// (((block * chunks + chunk) * chunk_k_steps + step) * kNTiles + tile) * 32 + lane holds
// {big(k0), big(k1), small(k0), small(k1)} with k0 = step * 8 + lane % 4, k1 = k0 + 4 and
// n = lane / 4; column k of a chunk is tap k / chunk_channels, output channel k % chunk_channels.
template <int kNTiles, bool kThreeTf32>
__global__ void __launch_bounds__(kPrepThreads)
    split_dgrad_weights_kernel(const ConvParams p, const DgradLayout layout) {
  const float* __restrict__ weight = static_cast<const float*>(p.weight);
  uint32_t* __restrict__ fragments = static_cast<uint32_t*>(p.workspace);
  const int64_t taps = p.kernel_h * p.kernel_w;
  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       index < layout.fragment_words; index += int64_t{blockDim.x} * gridDim.x) {
    const int element = static_cast<int>(index & 3);
    const int lane = static_cast<int>((index >> 2) & 31);
    int64_t rest = index >> 7;
    const int n_tile = static_cast<int>(rest % kNTiles);
    rest /= kNTiles;
    const int step = static_cast<int>(rest % layout.chunk_k_steps);
    rest /= layout.chunk_k_steps;
    const int chunk = static_cast<int>(rest % layout.chunks);
    const int64_t block = rest / layout.chunks;
    const int64_t in_channel = (block * kNTiles + n_tile) * 8 + (lane >> 2);
    const int k = step * 8 + (lane & 3) + 4 * (element & 1);
    const int64_t tap = k / layout.chunk_channels;
    const int64_t out_channel = int64_t{chunk} * layout.chunk_channels + k % layout.chunk_channels;
    float value = 0.0f;
    if (in_channel < p.in_channels && tap < taps && out_channel < p.out_channels) {
      value = weight[out_channel * p.weight_strides.n + in_channel * p.weight_strides.c +
                     (tap / p.kernel_w) * p.weight_strides.h +
                     (tap % p.kernel_w) * p.weight_strides.w];
    }
    uint32_t big, small = 0u;
    if (kThreeTf32) {
      split_weight(value, big, small);
    } else {
      big = to_tf32(value);
    }
    fragments[index] = (element >> 1) == 0 ? big : small;
  }
}

// One CTA: input channels blockIdx.y * 8 * kNTiles ...; persistent over (image, 256-pixel tile)
// pairs of the input plane. For an input pixel (r, c) and tap (kh, kw) the output pixel is
// (r + pad_top - kh, c + pad_left - kw); the staged g tile starts kernel_h - 1 rows and
// kernel_w - 1 columns before the tile's first row shifted by the padding, so a tap's offset is
// (kernel_h - 1 - kh) * tile_cols + (kernel_w - 1 - kw): the flipped kernel.
template <int kNTiles, bool kThreeTf32>
__global__ void __launch_bounds__(kThreads, kMaxCtasPerSm)
    conv_hardswish_relu_dgrad_kernel(const ConvBackwardParams bp, const DgradLayout layout) {
  constexpr int kMTiles = dgrad_m_tiles<kNTiles>();
  constexpr int kPixelsPerWarp = kMTiles * 16;
  constexpr int kTilePixels = kWarps * kPixelsPerWarp;
  const ConvParams& p = bp.conv;
  extern __shared__ uint4 shared_raw[];
  int* tap_offset = reinterpret_cast<int*>(shared_raw);
  const int chunk_channels = layout.chunk_channels;
  const int pitch = layout.plane_pitch;
  uint32_t* tile_big = reinterpret_cast<uint32_t*>(tap_offset + layout.chunk_k_steps * 8);
  uint32_t* tile_small = tile_big + (chunk_channels + 1) * pitch;

  const float* __restrict__ grad_output = static_cast<const float*>(bp.grad_output);
  const float* __restrict__ output = static_cast<const float*>(p.output);
  float* __restrict__ grad_input = static_cast<float*>(bp.grad_input);
  const uint4* __restrict__ fragments = static_cast<const uint4*>(bp.workspace);

  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_h = static_cast<int>(p.kernel_h);
  const int kernel_w = static_cast<int>(p.kernel_w);
  for (int k = threadIdx.x; k < layout.chunk_k_steps * 8; k += kThreads) {
    const int tap = k / chunk_channels;
    tap_offset[k] = tap < taps ? (k % chunk_channels) * pitch +
                                     (kernel_h - 1 - tap / kernel_w) * layout.tile_cols +
                                     (kernel_w - 1 - tap % kernel_w)
                               : chunk_channels * pitch;  // the all-zero plane
  }
  for (int index = threadIdx.x; index < pitch; index += kThreads) {
    tile_big[chunk_channels * pitch + index] = 0u;
    tile_small[chunk_channels * pitch + index] = 0u;
  }

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int group = lane >> 2;
  const int thread_in_group = lane & 3;
  const int in_width = static_cast<int>(p.in_width);
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int64_t plane_size = p.in_height * p.in_width;
  const int64_t out_plane_size = p.out_height * p.out_width;
  const int64_t total_tiles = p.batch * layout.tiles_per_image;
  const int64_t block_fragments =
      int64_t{blockIdx.y} * layout.chunks * layout.chunk_k_steps * kNTiles * 32;
  const int channel_base = blockIdx.y * kNTiles * 8;

  for (int64_t tile_index = blockIdx.x; tile_index < total_tiles; tile_index += gridDim.x) {
    const int64_t n = tile_index / layout.tiles_per_image;
    const int64_t first_pixel = (tile_index % layout.tiles_per_image) * kTilePixels;
    const int first_row = static_cast<int>(first_pixel / in_width);
    // First staged g row / column, in output coordinates.
    const int first_out_row = first_row + static_cast<int>(p.pad_top) - (kernel_h - 1);
    const int first_out_col = static_cast<int>(p.pad_left) - (kernel_w - 1);

    // A-fragment rows of this thread: pixels warp * 32 + m * 16 + group (+ 8).
    int pixel_offset[kMTiles][2];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t pixel =
            first_pixel + warp * kPixelsPerWarp + m * 16 + half * 8 + group;
        const int local =
            pixel < plane_size ? static_cast<int>(pixel - int64_t{first_row} * in_width) : 0;
        const int row = local / in_width;
        pixel_offset[m][half] = row * layout.tile_cols + (local - row * in_width);
      }
    }

    // The MMA accumulates one chunk (at most 3 * chunk_k_steps MMAs) into `acc`, which is then
    // added into `total` with round-to-nearest float32 adds: the tensor core's own accumulation
    // truncates, and over the 216 MMAs of v0.1's K = 576 that bias alone measured 4e-6 relative
    // error (1.1e-5 at K = 1600).
    float total[kMTiles][kNTiles][4];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        total[m][j][0] = total[m][j][1] = total[m][j][2] = total[m][j][3] = 0.0f;
      }
    }

    const int64_t image_offset = n * out_plane_size * p.out_channels;
    for (int chunk = 0; chunk < layout.chunks; ++chunk) {
      __syncthreads();  // every warp is done with the previous chunk's planes
      for (int channel_row = warp; channel_row < chunk_channels * layout.tile_rows;
           channel_row += kWarps) {
        const int channel = channel_row / layout.tile_rows;
        const int row = channel_row - channel * layout.tile_rows;
        const int out_channel = chunk * chunk_channels + channel;
        const int out_row = first_out_row + row;
        const bool row_inside =
            out_channel < p.out_channels && out_row >= 0 && out_row < out_height;
        const int64_t source_row =
            image_offset +
            (row_inside ? out_channel * out_plane_size + int64_t{out_row} * out_width : 0);
        const float* grad_row = grad_output + source_row;
        const float* y_row = output + source_row;
        uint32_t* big_row = tile_big + channel * pitch + row * layout.tile_cols;
        uint32_t* small_row = tile_small + channel * pitch + row * layout.tile_cols;
        // grad_y and y straight into registers (rows start at any 4-byte offset, so no 16-byte
        // copies), g formed and split there, then stored: no raw copy in shared memory and no
        // second pass. kStageUnroll columns per lane and batch keep loads in flight and, for
        // v0.1's 130 staged columns, 81% of the lanes busy.
        for (int col_base = 0; col_base < layout.tile_cols; col_base += 32 * kStageUnroll) {
          float grad_y[kStageUnroll], y[kStageUnroll];
#pragma unroll
          for (int u = 0; u < kStageUnroll; ++u) {
            const int out_col = first_out_col + col_base + u * 32 + lane;
            const bool inside = row_inside && out_col >= 0 && out_col < out_width &&
                                col_base + u * 32 + lane < layout.tile_cols;
            grad_y[u] = inside ? __ldg(grad_row + out_col) : 0.0f;
            y[u] = inside ? __ldg(y_row + out_col) : 0.0f;
          }
#pragma unroll
          for (int u = 0; u < kStageUnroll; ++u) {
            const int col = col_base + u * 32 + lane;
            if (col < layout.tile_cols) {
              split_activation<kThreeTf32>(HardSwishReLU<float>::backward(grad_y[u], y[u]),
                                           big_row[col], small_row[col]);
            }
          }
        }
      }
      __syncthreads();

      const int64_t chunk_fragments =
          block_fragments + int64_t{chunk} * layout.chunk_k_steps * kNTiles * 32;
      float acc[kMTiles][kNTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;
        }
      }
      for (int k_step = 0; k_step < layout.chunk_k_steps; ++k_step) {
        const int offset_low = tap_offset[k_step * 8 + thread_in_group];
        const int offset_high = tap_offset[k_step * 8 + thread_in_group + 4];
        uint32_t a_big[kMTiles][4], a_small[kMTiles][4];
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          a_big[m][0] = tile_big[pixel_offset[m][0] + offset_low];
          a_big[m][1] = tile_big[pixel_offset[m][1] + offset_low];
          a_big[m][2] = tile_big[pixel_offset[m][0] + offset_high];
          a_big[m][3] = tile_big[pixel_offset[m][1] + offset_high];
          if (kThreeTf32) {
            a_small[m][0] = tile_small[pixel_offset[m][0] + offset_low];
            a_small[m][1] = tile_small[pixel_offset[m][1] + offset_low];
            a_small[m][2] = tile_small[pixel_offset[m][0] + offset_high];
            a_small[m][3] = tile_small[pixel_offset[m][1] + offset_high];
          }
        }
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          const uint4 b = __ldg(fragments + chunk_fragments + (k_step * kNTiles + j) * 32 + lane);
#pragma unroll
          for (int m = 0; m < kMTiles; ++m) {
            if (kThreeTf32) {
              mma_tf32(acc[m][j], a_small[m][0], a_small[m][1], a_small[m][2], a_small[m][3],
                       b.x, b.y);
              mma_tf32(acc[m][j], a_big[m][0], a_big[m][1], a_big[m][2], a_big[m][3], b.z, b.w);
            }
            mma_tf32(acc[m][j], a_big[m][0], a_big[m][1], a_big[m][2], a_big[m][3], b.x, b.y);
          }
        }
      }
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            total[m][j][e] += acc[m][j][e];
          }
        }
      }
    }

    // Accumulator element e of (m, j): pixel warp * 32 + m * 16 + group + 8 * (e / 2), input
    // channel j * 8 + 2 * thread_in_group + e % 2.
    float* grad_image = grad_input + n * p.in_channels * plane_size;
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t pixel =
              first_pixel + warp * kPixelsPerWarp + m * 16 + group + 8 * (e >> 1);
          const int channel = channel_base + j * 8 + 2 * thread_in_group + (e & 1);
          if (pixel < plane_size && channel < p.in_channels) {
            grad_image[channel * plane_size + pixel] = total[m][j][e];
          }
        }
      }
    }
  }
}

int dgrad_channel_tiles(int64_t in_channels) {
  return in_channels <= 8 ? 1 : (in_channels <= 16 ? 2 : 4);
}

DgradLayout make_dgrad_layout(const ConvParams& p) {
  DgradLayout layout{};
  layout.channel_tiles = dgrad_channel_tiles(p.in_channels);
  layout.tile_pixels = kWarps * 16 * (layout.channel_tiles == 1 ? dgrad_m_tiles<1>()
                                                                 : dgrad_m_tiles<2>());
  layout.channel_blocks = static_cast<int>((p.in_channels + layout.channel_tiles * 8 - 1) /
                                           (layout.channel_tiles * 8));
  layout.chunk_channels =
      static_cast<int>(p.out_channels < kMaxChunkChannels ? p.out_channels : kMaxChunkChannels);
  layout.chunks =
      static_cast<int>((p.out_channels + layout.chunk_channels - 1) / layout.chunk_channels);
  layout.chunk_k_steps =
      static_cast<int>((p.kernel_h * p.kernel_w * layout.chunk_channels + 7) / 8);
  layout.tile_rows =
      static_cast<int>(spanned_rows(p.in_width, layout.tile_pixels) + p.kernel_h - 1);
  layout.tile_cols = static_cast<int>(p.in_width + p.kernel_w - 1);
  layout.plane_pitch = padded_pitch(int64_t{layout.tile_rows} * layout.tile_cols, 8);
  layout.tiles_per_image =
      static_cast<int>((p.in_height * p.in_width + layout.tile_pixels - 1) / layout.tile_pixels);
  layout.fragment_words = int64_t{layout.channel_blocks} * layout.chunks * layout.chunk_k_steps *
                          layout.channel_tiles * 32 * 4;
  layout.shared_bytes = int64_t{layout.chunk_k_steps} * 8 * 4 +
                        2 * (int64_t{layout.chunk_channels} + 1) * layout.plane_pitch * 4;
  return layout;
}

// ---------------------------------------------------------------------------- grad_weight

// One CTA: output channels blockIdx.y * 64 ..., input-channel chunk and column group from
// blockIdx.z; persistent over (image, 128-pixel tile) pairs of the output plane, accumulating
// in registers. Warp w works on m16 channel tile w % warps_m and pixel group w / warps_m of every
// tile. For output pixel (r, c) and tap (kh, kw) the input pixel is (r - pad_top + kh,
// c - pad_left + kw): the staged x tile is the forward's.
template <bool kThreeTf32>
__global__ void __launch_bounds__(kThreads, kMaxCtasPerSm)
    conv_hardswish_relu_wgrad_kernel(const ConvBackwardParams bp, const WgradLayout layout) {
  const ConvParams& p = bp.conv;
  extern __shared__ uint4 shared_raw[];
  int* pixel_offset = reinterpret_cast<int*>(shared_raw);  // kWgradTilePixels entries
  // The CTA's bias sums, one per channel, each updated by one warp only (deterministic).
  float* bias_sums = reinterpret_cast<float*>(pixel_offset + kWgradTilePixels);
  const int chunk_channels = layout.chunk_channels;
  const int pitch = layout.plane_pitch;
  uint32_t* x_big = reinterpret_cast<uint32_t*>(bias_sums + kWgradChannels);
  uint32_t* x_small = x_big + (chunk_channels + 1) * pitch;
  uint32_t* g_big = x_small + (chunk_channels + 1) * pitch;
  uint32_t* g_small = g_big + kWgradChannels * kWgradGPitch;
  float* staged_x = reinterpret_cast<float*>(x_big);

  const float* __restrict__ input = static_cast<const float*>(p.input);
  const float* __restrict__ grad_output = static_cast<const float*>(bp.grad_output);
  const float* __restrict__ output = static_cast<const float*>(p.output);
  const bool want_weight = bp.grad_weight != nullptr;
  const bool want_bias = bp.grad_bias != nullptr && blockIdx.z == 0;
  const int chunk = blockIdx.z / layout.n_groups;
  const int n_group = blockIdx.z % layout.n_groups;
  const int channel_base = blockIdx.y * kWgradChannels;

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int group = lane >> 2;
  const int thread_in_group = lane & 3;
  const int m_half = warp % layout.warps_m;
  const int pixel_group = warp / layout.warps_m;
  const int pixel_groups = kWarps / layout.warps_m;
  const int group_pixels = kWgradTilePixels / pixel_groups;

  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);
  // B-fragment column of this thread in n tile j: (tap, channel) = divmod(n, chunk_channels)
  // with n = (n_group * kWgradMaxNTiles + j) * 8 + group; its offset in the staged x tile
  // relative to the pixel's own. Padding columns read the all-zero plane.
  int column_offset[kWgradMaxNTiles];
#pragma unroll
  for (int j = 0; j < kWgradMaxNTiles; ++j) {
    const int column = (n_group * kWgradMaxNTiles + j) * 8 + group;
    const int tap = column / chunk_channels;
    const int channel = column - tap * chunk_channels;
    column_offset[j] = tap < taps && chunk * chunk_channels + channel < p.in_channels
                           ? channel * pitch + (tap / kernel_w) * layout.tile_cols +
                                 tap % kernel_w
                           : chunk_channels * pitch;
  }
  const int n_tiles_here =
      layout.n_tiles - n_group * kWgradMaxNTiles < kWgradMaxNTiles
          ? layout.n_tiles - n_group * kWgradMaxNTiles
          : kWgradMaxNTiles;
  for (int index = threadIdx.x; index < pitch; index += kThreads) {
    x_big[chunk_channels * pitch + index] = 0u;
    x_small[chunk_channels * pitch + index] = 0u;
  }

  // The MMA accumulates one tile (a few k steps) into `acc`, then round-to-nearest float32 adds
  // move it into `total`: accumulating a CTA's ~2000 pixels inside the tensor core, whose adds
  // truncate, measured 1.2e-5 relative error on v0.1's grad_weight (eager: 1.2e-6).
  float total[kWgradWarpMTiles][kWgradMaxNTiles][4];
#pragma unroll
  for (int m = 0; m < kWgradWarpMTiles; ++m) {
#pragma unroll
    for (int j = 0; j < kWgradMaxNTiles; ++j) {
      total[m][j][0] = total[m][j][1] = total[m][j][2] = total[m][j][3] = 0.0f;
    }
  }
  for (int index = threadIdx.x; index < kWgradChannels; index += kThreads) {
    bias_sums[index] = 0.0f;
  }

  const int out_width = static_cast<int>(p.out_width);
  const int64_t out_plane_size = p.out_height * p.out_width;
  const int64_t total_tiles = p.batch * layout.tiles_per_image;
  const bool vector_loads = (out_plane_size & 3) == 0 &&
                             (reinterpret_cast<uintptr_t>(grad_output) & 15) == 0 &&
                             (reinterpret_cast<uintptr_t>(output) & 15) == 0;

  for (int64_t tile_index = blockIdx.x; tile_index < total_tiles; tile_index += gridDim.x) {
    const int64_t n = tile_index / layout.tiles_per_image;
    const int64_t first_pixel = (tile_index % layout.tiles_per_image) * kWgradTilePixels;
    const int first_row = static_cast<int>(first_pixel / out_width);
    __syncthreads();  // every warp is done with the previous tile
    for (int index = threadIdx.x; index < kWgradTilePixels; index += kThreads) {
      const int64_t pixel = first_pixel + index;
      const int local =
          pixel < out_plane_size ? static_cast<int>(pixel - int64_t{first_row} * out_width) : 0;
      const int row = local / out_width;
      pixel_offset[index] = row * layout.tile_cols + (local - row * out_width);
    }
    // The x rows the tile needs (the forward's staging), this chunk's channels; the copies are
    // in flight while g is formed below.
    if (want_weight) {
      const float* input_image = input + n * p.in_channels * p.in_height * p.in_width;
      for (int channel_row = warp; channel_row < chunk_channels * layout.tile_rows;
           channel_row += kWarps) {
        const int channel = channel_row / layout.tile_rows;
        const int row = channel_row - channel * layout.tile_rows;
        const int in_channel = chunk * chunk_channels + channel;
        const int in_row = first_row + row - static_cast<int>(p.pad_top);
        const bool row_inside = in_channel < p.in_channels && in_row >= 0 && in_row < p.in_height;
        const float* source_row =
            input_image +
            (row_inside ? (int64_t{in_channel} * p.in_height + in_row) * p.in_width : 0);
        float* destination_row = staged_x + channel * pitch + row * layout.tile_cols;
        for (int col = lane; col < layout.tile_cols; col += 32) {
          const int in_col = col - static_cast<int>(p.pad_left);
          const bool inside = row_inside && in_col >= 0 && in_col < p.in_width;
          copy_async_4(destination_row + col, inside ? source_row + in_col : input_image,
                       inside ? 4 : 0);
        }
      }
    }
    // g's channels x pixels (the tile's pixels are contiguous in every output plane), loaded into
    // registers, formed, split and stored; warp w owns channels w + 8 i and sums them into the
    // bias sums.
    const int64_t grad_image = n * p.out_channels * out_plane_size;
#pragma unroll 2
    for (int i = 0; i < kWgradChannels / kWarps; ++i) {
      const int channel = warp + kWarps * i;
      const int64_t out_channel = channel_base + channel;
      const int64_t plane = grad_image + out_channel * out_plane_size + first_pixel;
      float grad_y[4], y[4];
      int column[4];
      if (vector_loads) {
        const bool inside = out_channel < p.out_channels && first_pixel + lane * 4 < out_plane_size;
        const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const float4 grad4 =
            inside ? __ldg(reinterpret_cast<const float4*>(grad_output + plane) + lane) : zero;
        const float4 y4 =
            inside ? __ldg(reinterpret_cast<const float4*>(output + plane) + lane) : zero;
        grad_y[0] = grad4.x, grad_y[1] = grad4.y, grad_y[2] = grad4.z, grad_y[3] = grad4.w;
        y[0] = y4.x, y[1] = y4.y, y[2] = y4.z, y[3] = y4.w;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          column[q] = lane * 4 + q;
        }
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          column[q] = lane + 32 * q;
          const bool inside =
              out_channel < p.out_channels && first_pixel + column[q] < out_plane_size;
          grad_y[q] = inside ? __ldg(grad_output + plane + column[q]) : 0.0f;
          y[q] = inside ? __ldg(output + plane + column[q]) : 0.0f;
        }
      }
      float channel_sum = 0.0f;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float g = HardSwishReLU<float>::backward(grad_y[q], y[q]);
        channel_sum += g;
        const int index = channel * kWgradGPitch + column[q];
        split_activation<kThreeTf32>(g, g_big[index], g_small[index]);
      }
      if (want_bias) {
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
          channel_sum += __shfl_xor_sync(0xffffffffu, channel_sum, offset);
        }
        if (lane == 0) {
          bias_sums[channel] += channel_sum;
        }
      }
    }
    copy_async_wait_all();
    __syncthreads();
    if (!want_weight) {
      continue;
    }
    for (int index = threadIdx.x; index < chunk_channels * pitch; index += kThreads) {
      uint32_t big, small = 0u;
      if (kThreeTf32) {
        split_input(staged_x[index], big, small);
      } else {
        big = to_tf32(staged_x[index]);
      }
      x_big[index] = big;
      x_small[index] = small;
    }
    __syncthreads();

    float acc[kWgradWarpMTiles][kWgradMaxNTiles][4];
#pragma unroll
    for (int m = 0; m < kWgradWarpMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kWgradMaxNTiles; ++j) {
        acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;
      }
    }
    for (int k_step = 0; k_step < group_pixels / 8; ++k_step) {
      const int k0 = pixel_group * group_pixels + k_step * 8 + thread_in_group;
      const int pixel_low = pixel_offset[k0];
      const int pixel_high = pixel_offset[k0 + 4];
      uint32_t a_big[kWgradWarpMTiles][4], a_small[kWgradWarpMTiles][4];
#pragma unroll
      for (int m = 0; m < kWgradWarpMTiles; ++m) {
        const int row = (m_half * kWgradWarpMTiles + m) * 16 + group;
        a_big[m][0] = g_big[row * kWgradGPitch + k0];
        a_big[m][1] = g_big[(row + 8) * kWgradGPitch + k0];
        a_big[m][2] = g_big[row * kWgradGPitch + k0 + 4];
        a_big[m][3] = g_big[(row + 8) * kWgradGPitch + k0 + 4];
        if (kThreeTf32) {
          a_small[m][0] = g_small[row * kWgradGPitch + k0];
          a_small[m][1] = g_small[(row + 8) * kWgradGPitch + k0];
          a_small[m][2] = g_small[row * kWgradGPitch + k0 + 4];
          a_small[m][3] = g_small[(row + 8) * kWgradGPitch + k0 + 4];
        }
      }
#pragma unroll
      for (int j = 0; j < kWgradMaxNTiles; ++j) {
        if (j < n_tiles_here) {
          const uint32_t b_big0 = x_big[column_offset[j] + pixel_low];
          const uint32_t b_big1 = x_big[column_offset[j] + pixel_high];
          uint32_t b_small0 = 0u, b_small1 = 0u;
          if (kThreeTf32) {
            b_small0 = x_small[column_offset[j] + pixel_low];
            b_small1 = x_small[column_offset[j] + pixel_high];
          }
#pragma unroll
          for (int m = 0; m < kWgradWarpMTiles; ++m) {
            if (kThreeTf32) {
              mma_tf32(acc[m][j], a_small[m][0], a_small[m][1], a_small[m][2], a_small[m][3],
                       b_big0, b_big1);
              mma_tf32(acc[m][j], a_big[m][0], a_big[m][1], a_big[m][2], a_big[m][3], b_small0,
                       b_small1);
            }
            mma_tf32(acc[m][j], a_big[m][0], a_big[m][1], a_big[m][2], a_big[m][3], b_big0,
                     b_big1);
          }
        }
      }
    }
#pragma unroll
    for (int m = 0; m < kWgradWarpMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kWgradMaxNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          total[m][j][e] += acc[m][j][e];
        }
      }
    }
  }

  float* partials = static_cast<float*>(bp.workspace);
  if (want_weight) {
    // Accumulator element e of (m, j): output channel (m_half * kWgradWarpMTiles + m) * 16 + group + 8 (e / 2),
    // column n = (n_group * 9 + j) * 8 + 2 * thread_in_group + e % 2 of the chunk.
    float* slot = partials + (int64_t{blockIdx.x} * pixel_groups + pixel_group) *
                                 layout.weight_size;
#pragma unroll
    for (int m = 0; m < kWgradWarpMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kWgradMaxNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t out_channel =
              channel_base + (m_half * kWgradWarpMTiles + m) * 16 + group + 8 * (e >> 1);
          const int column =
              (n_group * kWgradMaxNTiles + j) * 8 + 2 * thread_in_group + (e & 1);
          const int tap = column / chunk_channels;
          const int64_t in_channel = int64_t{chunk} * chunk_channels + column % chunk_channels;
          if (j < n_tiles_here && out_channel < p.out_channels && tap < taps &&
              in_channel < p.in_channels) {
            slot[(out_channel * p.in_channels + in_channel) * taps + tap] = total[m][j][e];
          }
        }
      }
    }
  }
  if (want_bias) {
    float* bias_partials = partials + layout.partial_slots * layout.weight_size;
    __syncthreads();
    for (int channel = threadIdx.x; channel < kWgradChannels; channel += kThreads) {
      if (channel_base + channel < p.out_channels) {
        bias_partials[int64_t{blockIdx.x} * p.out_channels + channel_base + channel] =
            bias_sums[channel];
      }
    }
  }
}

// grad_weight[i] = sum over the partial slots, grad_bias[c] over the CTA columns, in a fixed
// order: a block owns 32 outputs (one per lane); warp w sums slots w, w + 8, ...; warp 0 adds the
// eight warp sums in warp order.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_wgrad_partials_kernel(const ConvBackwardParams bp, const WgradLayout layout) {
  __shared__ float warp_sums[kReduceThreads / 32][32];
  const float* __restrict__ partials = static_cast<const float*>(bp.workspace);
  const float* __restrict__ bias_partials = partials + layout.partial_slots * layout.weight_size;
  const int64_t out_channels = bp.conv.out_channels;
  const int64_t weight_outputs = bp.grad_weight != nullptr ? layout.weight_size : 0;
  const int64_t bias_outputs = bp.grad_bias != nullptr ? out_channels : 0;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t index = blockIdx.x * int64_t{32} + lane;
  float sum = 0.0f;
  if (index < weight_outputs) {
    for (int64_t slot = warp; slot < layout.partial_slots; slot += kReduceThreads / 32) {
      sum += partials[slot * layout.weight_size + index];
    }
  } else if (index < weight_outputs + bias_outputs) {
    for (int64_t column = warp; column < layout.grid_x; column += kReduceThreads / 32) {
      sum += bias_partials[column * out_channels + (index - weight_outputs)];
    }
  }
  warp_sums[warp][lane] = sum;
  __syncthreads();
  if (warp != 0) {
    return;
  }
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kReduceThreads / 32; ++w) {
    total += warp_sums[w][lane];
  }
  if (index < weight_outputs) {
    static_cast<float*>(bp.grad_weight)[index] = total;
  } else if (index < weight_outputs + bias_outputs) {
    static_cast<float*>(bp.grad_bias)[index - weight_outputs] = total;
  }
}

WgradLayout make_wgrad_layout(const ConvParams& p, const DeviceLimits& limits) {
  WgradLayout layout{};
  layout.channel_blocks =
      static_cast<int>((p.out_channels + kWgradChannels - 1) / kWgradChannels);
  layout.warps_m = p.out_channels <= 16 ? 1 : (p.out_channels <= 32 ? 2 : 4);
  layout.chunk_channels =
      static_cast<int>(p.in_channels < kMaxChunkChannels ? p.in_channels : kMaxChunkChannels);
  layout.chunks =
      static_cast<int>((p.in_channels + layout.chunk_channels - 1) / layout.chunk_channels);
  layout.n_tiles = static_cast<int>((p.kernel_h * p.kernel_w * layout.chunk_channels + 7) / 8);
  layout.n_groups = (layout.n_tiles + kWgradMaxNTiles - 1) / kWgradMaxNTiles;
  layout.tile_rows =
      static_cast<int>(spanned_rows(p.out_width, kWgradTilePixels) + p.kernel_h - 1);
  layout.tile_cols = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.plane_pitch = padded_pitch(int64_t{layout.tile_rows} * layout.tile_cols, 4);
  layout.tiles_per_image = static_cast<int>(
      (p.out_height * p.out_width + kWgradTilePixels - 1) / kWgradTilePixels);
  layout.weight_size = p.out_channels * p.in_channels * p.kernel_h * p.kernel_w;
  layout.shared_bytes =
      int64_t{kWgradTilePixels + kWgradChannels} * 4 +
      (2 * (int64_t{layout.chunk_channels} + 1) * layout.plane_pitch +
       2 * int64_t{kWgradChannels} * kWgradGPitch) * 4;
  // Persistent grid: the CTAs that fit on every SM at once, shared among the (channel block,
  // chunk, column group) combinations, never more columns than tiles, and partials capped.
  const int64_t per_sm = ctas_per_sm(limits, layout.shared_bytes, kMaxCtasPerSm);
  const int64_t combinations = int64_t{layout.channel_blocks} * layout.chunks * layout.n_groups;
  int64_t grid_x = (limits.sm_count * per_sm + combinations - 1) / combinations;
  const int64_t total_tiles = p.batch * layout.tiles_per_image;
  grid_x = grid_x > total_tiles ? total_tiles : grid_x;
  const int64_t pixel_groups = kWarps / layout.warps_m;
  const int64_t affordable = kMaxPartialFloats / (pixel_groups * layout.weight_size);
  grid_x = grid_x > affordable ? affordable : grid_x;
  layout.grid_x = static_cast<int>(grid_x < 1 ? 1 : grid_x);
  layout.partial_slots = layout.grid_x * pixel_groups;
  return layout;
}

// ---------------------------------------------------------------------------- dispatch

struct BackwardPlan {
  bool use = false;
  DgradLayout dgrad{};
  WgradLayout wgrad{};
  DeviceLimits limits{};
  int64_t dgrad_workspace_bytes = 0;  // split weights, at the start of the workspace
  int64_t wgrad_workspace_bytes = 0;  // partials, after them (16-byte aligned)
};

cudaError_t plan_backward(const ConvBackwardParams& bp, BackwardPlan& plan) {
  plan = BackwardPlan{};
  // grad_output is read as float4 rows like y: the caller's tensor, possibly an offset view.
  if (!fast_path_shape_supported(bp.conv) || !aligned_16(bp.grad_output)) {
    return cudaSuccess;
  }
  const cudaError_t status = device_limits(plan.limits);
  if (status != cudaSuccess) {
    return status;
  }
  plan.dgrad = make_dgrad_layout(bp.conv);
  plan.wgrad = make_wgrad_layout(bp.conv, plan.limits);
  const bool want_input = bp.grad_input != nullptr;
  const bool want_params = bp.grad_weight != nullptr || bp.grad_bias != nullptr;
  if ((want_input && plan.dgrad.shared_bytes > plan.limits.max_shared_bytes) ||
      (want_params && plan.wgrad.shared_bytes > plan.limits.max_shared_bytes)) {
    return cudaSuccess;
  }
  if (want_input) {
    plan.dgrad_workspace_bytes = (plan.dgrad.fragment_words * 4 + 15) / 16 * 16;
  }
  if (want_params) {
    plan.wgrad_workspace_bytes =
        (plan.wgrad.partial_slots * plan.wgrad.weight_size +
         int64_t{plan.wgrad.grid_x} * bp.conv.out_channels) * 4;
  }
  plan.use = true;
  return cudaSuccess;
}

unsigned int prep_blocks(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned int>(blocks < 1024 ? (blocks < 1 ? 1 : blocks) : 1024);
}

template <int kNTiles, bool kThreeTf32>
cudaError_t launch_dgrad(const ConvBackwardParams& bp, const BackwardPlan& plan,
                         cudaStream_t stream) {
  constexpr auto kernel = conv_hardswish_relu_dgrad_kernel<kNTiles, kThreeTf32>;
  cudaError_t status = opt_in_shared_memory<kernel>(plan.limits);
  if (status != cudaSuccess) {
    return status;
  }
  ConvParams prep = bp.conv;
  prep.workspace = bp.workspace;
  split_dgrad_weights_kernel<kNTiles, kThreeTf32>
      <<<prep_blocks(plan.dgrad.fragment_words, kPrepThreads), kPrepThreads, 0, stream>>>(
          prep, plan.dgrad);
  status = cudaGetLastError();
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t total_tiles = bp.conv.batch * plan.dgrad.tiles_per_image;
  const int64_t per_sm = ctas_per_sm(plan.limits, plan.dgrad.shared_bytes, kMaxCtasPerSm);
  int64_t blocks = (plan.limits.sm_count * per_sm + plan.dgrad.channel_blocks - 1) /
                   plan.dgrad.channel_blocks;
  blocks = blocks > total_tiles ? total_tiles : blocks;
  const dim3 grid(static_cast<unsigned int>(blocks),
                  static_cast<unsigned int>(plan.dgrad.channel_blocks));
  kernel<<<grid, kThreads, static_cast<size_t>(plan.dgrad.shared_bytes), stream>>>(bp,
                                                                                 plan.dgrad);
  return cudaGetLastError();
}

template <bool kThreeTf32>
cudaError_t launch_dgrad_tiles(const ConvBackwardParams& bp, const BackwardPlan& plan,
                               cudaStream_t stream) {
  switch (plan.dgrad.channel_tiles) {
    case 1:
      return launch_dgrad<1, kThreeTf32>(bp, plan, stream);
    case 2:
      return launch_dgrad<2, kThreeTf32>(bp, plan, stream);
    default:
      return launch_dgrad<4, kThreeTf32>(bp, plan, stream);
  }
}

template <bool kThreeTf32>
cudaError_t launch_wgrad(const ConvBackwardParams& bp, const BackwardPlan& plan,
                         cudaStream_t stream) {
  constexpr auto kernel = conv_hardswish_relu_wgrad_kernel<kThreeTf32>;
  cudaError_t status = opt_in_shared_memory<kernel>(plan.limits);
  if (status != cudaSuccess) {
    return status;
  }
  const WgradLayout& layout = plan.wgrad;
  const dim3 grid(static_cast<unsigned int>(layout.grid_x),
                  static_cast<unsigned int>(layout.channel_blocks),
                  static_cast<unsigned int>(layout.chunks * layout.n_groups));
  kernel<<<grid, kThreads, static_cast<size_t>(layout.shared_bytes), stream>>>(bp, layout);
  status = cudaGetLastError();
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t outputs = (bp.grad_weight != nullptr ? layout.weight_size : 0) +
                          (bp.grad_bias != nullptr ? bp.conv.out_channels : 0);
  reduce_wgrad_partials_kernel<<<static_cast<unsigned int>((outputs + 31) / 32),
                                 kReduceThreads, 0, stream>>>(bp, layout);
  return cudaGetLastError();
}

}  // namespace backward_detail

using backward_detail::BackwardPlan;

cudaError_t backward_workspace_bytes(const ConvBackwardParams& params, bool& fast,
                                     int64_t& bytes) {
  BackwardPlan plan;
  const cudaError_t status = backward_detail::plan_backward(params, plan);
  fast = plan.use;  // false: the caller takes its composite path
  bytes = plan.dgrad_workspace_bytes + plan.wgrad_workspace_bytes;
  return status;
}

cudaError_t launch_conv_hardswish_relu_backward(const ConvBackwardParams& params,
                                                bool allow_tf32, cudaStream_t stream) {
  BackwardPlan plan;
  cudaError_t status = backward_detail::plan_backward(params, plan);
  if (status != cudaSuccess) {
    return status;
  }
  if (!plan.use || (params.workspace == nullptr &&
                    plan.dgrad_workspace_bytes + plan.wgrad_workspace_bytes > 0)) {
    return cudaErrorInvalidValue;
  }
  if (params.grad_input != nullptr) {
    status = allow_tf32 ? backward_detail::launch_dgrad_tiles<false>(params, plan, stream)
                        : backward_detail::launch_dgrad_tiles<true>(params, plan, stream);
    if (status != cudaSuccess) {
      return status;
    }
  }
  if (params.grad_weight != nullptr || params.grad_bias != nullptr) {
    ConvBackwardParams wgrad = params;
    wgrad.grad_input = nullptr;
    wgrad.workspace = static_cast<char*>(params.workspace) + plan.dgrad_workspace_bytes;
    status = allow_tf32 ? backward_detail::launch_wgrad<false>(wgrad, plan, stream)
                        : backward_detail::launch_wgrad<true>(wgrad, plan, stream);
  }
  return status;
}

}  // namespace fusedconv
