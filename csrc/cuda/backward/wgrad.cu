// Fused backward, grad_weight and grad_bias (backward_plan.cu has the whole design): M = output
// channels (64 per CTA), N = (tap, input channel) pairs of an 8-channel chunk, K = output pixels
// (128-pixel tiles). A persistent CTA accumulates its tiles in registers and writes one partial per
// warp; a reduce kernel sums the partials in a fixed order, so the result is bitwise identical from
// run to run. grad_bias is summed from the staged g in the same pass.
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

constexpr int kReduceThreads = 256;
// grad_weight tiles: 128 pixels; 64 output channels per CTA; a warp owns kWarpMTiles m16
// tiles of channels and up to kMaxNTiles n8 tiles ((tap, channel) columns) for its pixel
// group.
constexpr int kTilePixels = 128;
constexpr int kBlockChannels = 64;
constexpr int kMaxNTiles = 9;
// One m16 tile of channels per warp: the totals plus one tile's MMA accumulators (2 x 36
// registers) leave room for two CTAs per SM, so one CTA's staging overlaps the other's MMAs (two
// m16 tiles, at one CTA per SM, measured 1.64 ms on v0.1).
constexpr int kWarpMTiles = 1;
constexpr int kGPitch = kTilePixels + 4;  // = 4 (mod 32): conflict-free A loads
// Partials of grad_weight are capped at this many floats; beyond it fewer CTAs run.
constexpr int64_t kMaxPartialFloats = int64_t{1} << 24;

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
  int* pixel_offset = reinterpret_cast<int*>(shared_raw);  // kTilePixels entries
  // The CTA's bias sums, one per channel, each updated by one warp only (deterministic).
  float* bias_sums = reinterpret_cast<float*>(pixel_offset + kTilePixels);
  const int chunk_channels = layout.chunk_channels;
  const int pitch = layout.plane_pitch;
  uint32_t* x_big = reinterpret_cast<uint32_t*>(bias_sums + kBlockChannels);
  uint32_t* x_small = x_big + (chunk_channels + 1) * pitch;
  uint32_t* g_big = x_small + (chunk_channels + 1) * pitch;
  uint32_t* g_small = g_big + kBlockChannels * kGPitch;
  float* staged_x = reinterpret_cast<float*>(x_big);

  const float* __restrict__ input = static_cast<const float*>(p.input);
  const float* __restrict__ grad_output = static_cast<const float*>(bp.grad_output);
  const float* __restrict__ output = static_cast<const float*>(p.output);
  const bool want_weight = bp.grad_weight != nullptr;
  const bool want_bias = bp.grad_bias != nullptr && blockIdx.z == 0;
  const int chunk = blockIdx.z / layout.n_groups;
  const int n_group = blockIdx.z % layout.n_groups;
  const int channel_base = blockIdx.y * kBlockChannels;

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int group = lane >> 2;
  const int thread_in_group = lane & 3;
  const int m_half = warp % layout.warps_m;
  const int pixel_group = warp / layout.warps_m;
  const int pixel_groups = kWarps / layout.warps_m;
  const int group_pixels = kTilePixels / pixel_groups;

  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);
  // B-fragment column of this thread in n tile j: (tap, channel) = divmod(n, chunk_channels)
  // with n = (n_group * kMaxNTiles + j) * 8 + group; its offset in the staged x tile
  // relative to the pixel's own. Padding columns read the all-zero plane.
  int column_offset[kMaxNTiles];
#pragma unroll
  for (int j = 0; j < kMaxNTiles; ++j) {
    const int column = (n_group * kMaxNTiles + j) * 8 + group;
    const int tap = column / chunk_channels;
    const int channel = column - tap * chunk_channels;
    column_offset[j] = tap < taps && chunk * chunk_channels + channel < p.in_channels
                           ? channel * pitch + (tap / kernel_w) * layout.tile_cols +
                                 tap % kernel_w
                           : chunk_channels * pitch;
  }
  const int n_tiles_here =
      layout.n_tiles - n_group * kMaxNTiles < kMaxNTiles
          ? layout.n_tiles - n_group * kMaxNTiles
          : kMaxNTiles;
  for (int index = threadIdx.x; index < pitch; index += kThreads) {
    x_big[chunk_channels * pitch + index] = 0u;
    x_small[chunk_channels * pitch + index] = 0u;
  }

  // The MMA accumulates one tile (a few k steps) into `acc`, then round-to-nearest float32 adds
  // move it into `total`: accumulating a CTA's ~2000 pixels inside the tensor core, whose adds
  // truncate, measured 1.2e-5 relative error on v0.1's grad_weight (eager: 1.2e-6).
  float total[kWarpMTiles][kMaxNTiles][4];
  fill(total, 0.0f);
  for (int index = threadIdx.x; index < kBlockChannels; index += kThreads) {
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
    const int64_t first_pixel = (tile_index % layout.tiles_per_image) * kTilePixels;
    const int first_row = static_cast<int>(first_pixel / out_width);
    __syncthreads();  // every warp is done with the previous tile
    for (int index = threadIdx.x; index < kTilePixels; index += kThreads) {
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
    for (int i = 0; i < kBlockChannels / kWarps; ++i) {
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
        const int index = channel * kGPitch + column[q];
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
      uint32_t big, small;
      split_activation<kThreeTf32>(staged_x[index], big, small);
      x_big[index] = big;
      x_small[index] = small;
    }
    __syncthreads();

    float acc[kWarpMTiles][kMaxNTiles][4];
    fill(acc, 0.0f);
    for (int k_step = 0; k_step < group_pixels / 8; ++k_step) {
      const int k0 = pixel_group * group_pixels + k_step * 8 + thread_in_group;
      const int pixel_low = pixel_offset[k0];
      const int pixel_high = pixel_offset[k0 + 4];
      uint32_t a_big[kWarpMTiles][4], a_small[kWarpMTiles][4];
#pragma unroll
      for (int m = 0; m < kWarpMTiles; ++m) {
        const int row = (m_half * kWarpMTiles + m) * 16 + group;
        a_big[m][0] = g_big[row * kGPitch + k0];
        a_big[m][1] = g_big[(row + 8) * kGPitch + k0];
        a_big[m][2] = g_big[row * kGPitch + k0 + 4];
        a_big[m][3] = g_big[(row + 8) * kGPitch + k0 + 4];
        if (kThreeTf32) {
          a_small[m][0] = g_small[row * kGPitch + k0];
          a_small[m][1] = g_small[(row + 8) * kGPitch + k0];
          a_small[m][2] = g_small[row * kGPitch + k0 + 4];
          a_small[m][3] = g_small[(row + 8) * kGPitch + k0 + 4];
        }
      }
#pragma unroll
      for (int j = 0; j < kMaxNTiles; ++j) {
        if (j < n_tiles_here) {
          const uint32_t b_big0 = x_big[column_offset[j] + pixel_low];
          const uint32_t b_big1 = x_big[column_offset[j] + pixel_high];
          uint32_t b_small0 = 0u, b_small1 = 0u;
          if (kThreeTf32) {
            b_small0 = x_small[column_offset[j] + pixel_low];
            b_small1 = x_small[column_offset[j] + pixel_high];
          }
#pragma unroll
          for (int m = 0; m < kWarpMTiles; ++m) {
            mma_three_tf32<kThreeTf32>(acc[m][j], a_big[m], a_small[m], b_big0, b_big1, b_small0,
                                       b_small1);
          }
        }
      }
    }
    add_into(total, acc);
  }

  float* partials = static_cast<float*>(bp.workspace);
  if (want_weight) {
    // Accumulator element e of (m, j): output channel (m_half * kWarpMTiles + m) * 16 + group
    // + 8 (e / 2), column n = (n_group * 9 + j) * 8 + 2 * thread_in_group + e % 2 of the chunk.
    float* slot = partials + (int64_t{blockIdx.x} * pixel_groups + pixel_group) *
                                 layout.weight_size;
#pragma unroll
    for (int m = 0; m < kWarpMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < kMaxNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t out_channel =
              channel_base + (m_half * kWarpMTiles + m) * 16 + group + 8 * (e >> 1);
          const int column =
              (n_group * kMaxNTiles + j) * 8 + 2 * thread_in_group + (e & 1);
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
    for (int channel = threadIdx.x; channel < kBlockChannels; channel += kThreads) {
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

}  // namespace

WgradLayout make_wgrad_layout(const ConvParams& p, const DeviceLimits& limits) {
  WgradLayout layout{};
  layout.channel_blocks =
      static_cast<int>((p.out_channels + kBlockChannels - 1) / kBlockChannels);
  layout.warps_m = p.out_channels <= 16 ? 1 : (p.out_channels <= 32 ? 2 : 4);
  layout.chunk_channels =
      static_cast<int>(p.in_channels < kMaxChunkChannels ? p.in_channels : kMaxChunkChannels);
  layout.chunks =
      static_cast<int>((p.in_channels + layout.chunk_channels - 1) / layout.chunk_channels);
  layout.n_tiles = static_cast<int>((p.kernel_h * p.kernel_w * layout.chunk_channels + 7) / 8);
  layout.n_groups = (layout.n_tiles + kMaxNTiles - 1) / kMaxNTiles;
  layout.tile_rows =
      static_cast<int>(spanned_rows(p.out_width, kTilePixels) + p.kernel_h - 1);
  layout.tile_cols = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.plane_pitch = padded_pitch(int64_t{layout.tile_rows} * layout.tile_cols, 4);
  layout.tiles_per_image = static_cast<int>(
      (p.out_height * p.out_width + kTilePixels - 1) / kTilePixels);
  layout.weight_size = p.out_channels * p.in_channels * p.kernel_h * p.kernel_w;
  layout.shared_bytes =
      int64_t{kTilePixels + kBlockChannels} * 4 +
      (2 * (int64_t{layout.chunk_channels} + 1) * layout.plane_pitch +
       2 * int64_t{kBlockChannels} * kGPitch) * 4;
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

namespace {

template <bool kThreeTf32>
cudaError_t launch_wgrad_with(const ConvBackwardParams& bp, const FusedPlan& plan,
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

}  // namespace

cudaError_t launch_wgrad(const ConvBackwardParams& bp, const FusedPlan& plan, bool three_tf32,
                         cudaStream_t stream) {
  return three_tf32 ? launch_wgrad_with<true>(bp, plan, stream)
                    : launch_wgrad_with<false>(bp, plan, stream);
}

}  // namespace backward
}  // namespace fusedconv
