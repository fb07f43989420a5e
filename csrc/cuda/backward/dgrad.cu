// Fused backward, grad_input (backward_plan.cu has the whole design): an owner-computes implicit
// GEMM, M = input pixels (256-pixel tiles of one image), N = input channels (8 per n8 tile), K =
// output channels x taps against the flipped weights, walked in chunks of 8 output channels. g =
// grad_y * f'(y) is formed while staged, never written. Each CTA writes only its own pixels: no
// atomics. A prep kernel splits W once per call into B-fragment order in the workspace.
#include <cuda_runtime.h>

#include <cstdint>

#include "backward/backward_plan.h"
#include "common/accumulate.cuh"
#include "common/configuration.h"
#include "common/device_limits.h"
#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "fusedconv/activation.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace backward {
namespace {

constexpr int kPrepThreads = 256;

// grad_input tiles: 8 warps x kMTiles m16 tiles of pixels; four (512-pixel tiles) where one n8
// tile of input channels leaves the registers for them. Taller tiles stage fewer halo rows of g
// per pixel: 7 rows for 4 (v0.1) instead of 5 for 2.
template <int kNTiles>
__host__ __device__ constexpr int dgrad_m_tiles() {
  return kNTiles == 1 ? 4 : 2;
}
// Columns a lane stages per batch of loads (grad_input's g rows): 160 columns per warp batch.
constexpr int kStageUnroll = 5;

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
    uint32_t big, small;
    split_weight_operand<kThreeTf32>(value, big, small);
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
    fill(total, 0.0f);

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
      fill(acc, 0.0f);
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
            mma_three_tf32<kThreeTf32>(acc[m][j], a_big[m], a_small[m], b.x, b.y, b.z, b.w);
          }
        }
      }
      add_into(total, acc);
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

int channel_tiles_for(int64_t in_channels) {
  return in_channels <= 8 ? 1 : (in_channels <= 16 ? 2 : 4);
}

}  // namespace

DgradLayout make_dgrad_layout(const ConvParams& p) {
  DgradLayout layout{};
  layout.channel_tiles = channel_tiles_for(p.in_channels);
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

namespace {

template <int kNTiles, bool kThreeTf32>
cudaError_t launch_dgrad_with(const ConvBackwardParams& bp, const FusedPlan& plan,
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
cudaError_t launch_dgrad_tiles(const ConvBackwardParams& bp, const FusedPlan& plan,
                               cudaStream_t stream) {
  switch (plan.dgrad.channel_tiles) {
    case 1:
      return launch_dgrad_with<1, kThreeTf32>(bp, plan, stream);
    case 2:
      return launch_dgrad_with<2, kThreeTf32>(bp, plan, stream);
    default:
      return launch_dgrad_with<4, kThreeTf32>(bp, plan, stream);
  }
}

}  // namespace

cudaError_t launch_dgrad(const ConvBackwardParams& bp, const FusedPlan& plan, bool three_tf32,
                         cudaStream_t stream) {
  return three_tf32 ? launch_dgrad_tiles<true>(bp, plan, stream)
                    : launch_dgrad_tiles<false>(bp, plan, stream);
}

}  // namespace backward
}  // namespace fusedconv
