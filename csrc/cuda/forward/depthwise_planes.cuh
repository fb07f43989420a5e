// Depthwise forward by blocks of whole planes in shared memory (a depthwise candidate, common/
// depthwise_candidates.h): dense NCHW, channel multiplier 1, input planes of up to
// kMaxPlaneElements, any kernel, stride, padding and dilation; float32 / float16 / bfloat16.
// For the small planes of a network's last stages (7x7 and 14x14), where the per-row kernel's
// strips of four columns are mostly partial and each of its loads touches a short row of many
// sectors: a CTA takes a block of consecutive (image, channel) planes, which in NCHW is one
// contiguous run of the input and one of the output. It stages the run with coalesced loads
// (as float), computes each output row from shared memory, stages the activated outputs and
// stores their run with coalesced stores. Taps, order and arithmetic are the per-row kernel's:
// the same bits. Consecutive threads take consecutive planes (the planes' pitches in shared
// memory are odd), so their shared accesses fall in distinct banks whatever the stride.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/depthwise_plane_blocks.cuh"
#include "common/depthwise_planes_domain.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_planes {

using plane_blocks::kBlockFloats;
using plane_blocks::kThreads;
using plane_blocks::odd;
constexpr int kColumns = 8;  // output columns a thread computes per item (unrolled geometries)

// A launch's blocks: planes per block and pitches, items (plane, output row, column chunk) for
// the unrolled geometries and (plane, output element) for the run-time one, plane fastest.
struct Block {
  int planes;  // planes per block
  int x_pitch, filter_pitch, y_pitch;
  int chunks;  // column chunks of kColumns per output row
  FastDivisor in_elements, out_elements, planes_divisor, chunks_divisor, out_width;
  int64_t total_planes;
};

inline int64_t floats_per_plane(const ConvParams& p) {
  return odd(p.in_height * p.in_width) + odd(p.kernel_h * p.kernel_w) +
         odd(p.out_height * p.out_width);
}

// The calls it takes, given a dense NCHW input and output (the caller's test): multiplier 1,
// planes of common/depthwise_planes_domain.h, a plane's input, filter and output within one
// block's shared memory, types accumulated in float.
inline bool applies(const ConvParams& p) {
  return p.out_channels == p.in_channels && element_bytes(p.dtype) <= 4 && forward_applies(p) &&
         p.kernel_h * p.kernel_w <= kBlockFloats && floats_per_plane(p) <= kBlockFloats;
}

// kKernel / kStride > 0: square kernel and stride known at compile time, dilation 1. 0: read at
// run time.
template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_planes_kernel(const ConvParams p, const Block b) {
  extern __shared__ float block_shared[];
  using Traits = StorageTraits<Storage>;
  const int channels = static_cast<int>(p.out_channels);
  const plane_blocks::BlockSpan span = plane_blocks::block_span(b.planes, b.total_planes,
                                                                channels);
  const int64_t first_plane = span.first_plane;
  const int planes = span.planes;
  const int first_channel = span.first_channel;
  const int kernel_h = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_w);
  const int taps = kernel_h * kernel_w;

  float* x_block = block_shared;
  float* filter_block = x_block + b.planes * b.x_pitch;
  float* y_block = filter_block + b.planes * b.filter_pitch;
  const Storage* __restrict__ x =
      static_cast<const Storage*>(p.input) + first_plane * b.in_elements.divisor;
  plane_blocks::stage_run(planes, b.in_elements, b.x_pitch, x_block, x);
  plane_blocks::stage_filters(static_cast<const Storage*>(p.weight), p.weight_strides, kernel_w,
                              taps, first_channel, channels, planes, b.filter_pitch,
                              filter_block);
  __syncthreads();

  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int pad_top = static_cast<int>(p.pad_top);
  const int pad_left = static_cast<int>(p.pad_left);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  const uint32_t rows_or_elements =
      kKernel > 0 ? static_cast<uint32_t>(p.out_height) * b.chunks : b.out_elements.divisor;
  const uint32_t items = rows_or_elements * static_cast<uint32_t>(b.planes);
  for (uint32_t item = threadIdx.x; item < items; item += kThreads) {
    uint32_t plane;
    const uint32_t within = b.planes_divisor.divide(item, plane);
    if (static_cast<int>(plane) >= planes) {
      continue;  // the last block's missing planes (the item count is a multiple of `planes`)
    }
    const int channel =
        plane_blocks::plane_channel(first_channel, static_cast<int>(plane), channels);
    const float bias_value = bias != nullptr ? Traits::load(bias[channel]) : 0.0f;
    const float* __restrict__ x_plane = x_block + plane * b.x_pitch;
    const float* __restrict__ filter = filter_block + plane * b.filter_pitch;
    float* __restrict__ y_plane = y_block + plane * b.y_pitch;
    if constexpr (kKernel > 0) {
      uint32_t chunk;
      const int out_row = static_cast<int>(b.chunks_divisor.divide(within, chunk));
      const int first_out_col = static_cast<int>(chunk) * kColumns;
      const int first_row = out_row * kStride - pad_top;
      const int first_col = first_out_col * kStride - pad_left;
      constexpr int kSpan = (kColumns - 1) * kStride + kKernel;
      float acc[kColumns];
#pragma unroll
      for (int o = 0; o < kColumns; ++o) {
        acc[o] = bias_value;
      }
#pragma unroll
      for (int r = 0; r < kKernel; ++r) {
        const int in_row = first_row + r;
        if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
          continue;  // padded rows skipped, as the per-row kernel does
        }
        const float* __restrict__ line = x_plane + in_row * in_width;
        float span[kSpan];
        bool inside[kSpan];
#pragma unroll
        for (int j = 0; j < kSpan; ++j) {
          const int col = first_col + j;
          inside[j] = static_cast<unsigned>(col) < static_cast<unsigned>(in_width);
          span[j] = inside[j] ? line[col] : 0.0f;
        }
#pragma unroll
        for (int s = 0; s < kKernel; ++s) {
          const float w = filter[r * kKernel + s];
#pragma unroll
          for (int o = 0; o < kColumns; ++o) {
            if (inside[o * kStride + s]) {  // padded taps skipped: inf x 0 must not be NaN
              acc[o] = fmaf(span[o * kStride + s], w, acc[o]);
            }
          }
        }
      }
#pragma unroll
      for (int o = 0; o < kColumns; ++o) {
        if (first_out_col + o < out_width) {
          y_plane[out_row * out_width + first_out_col + o] = HardSwishReLU<float>::value(acc[o]);
        }
      }
    } else {
      uint32_t out_col;
      const int out_row = static_cast<int>(b.out_width.divide(within, out_col));
      const int dilation_h = static_cast<int>(p.dilation_h);
      const int dilation_w = static_cast<int>(p.dilation_w);
      const int first_row = out_row * stride_h - pad_top;
      const int first_col = static_cast<int>(out_col) * stride_w - pad_left;
      float acc = bias_value;
      for (int r = 0; r < kernel_h; ++r) {
        const int in_row = first_row + r * dilation_h;
        if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
          continue;
        }
        for (int s = 0; s < kernel_w; ++s) {
          const int in_col = first_col + s * dilation_w;
          if (static_cast<unsigned>(in_col) < static_cast<unsigned>(in_width)) {
            acc = fmaf(x_plane[in_row * in_width + in_col], filter[r * kernel_w + s], acc);
          }
        }
      }
      y_plane[within] = HardSwishReLU<float>::value(acc);
    }
  }
  __syncthreads();

  plane_blocks::store_planes(
      y_block, planes, b.out_elements, b.y_pitch,
      static_cast<Storage*>(p.output) + first_plane * b.out_elements.divisor);
}

inline cudaError_t plan_blocks(const ConvParams& p, int kernel, Block& b) {
  b.total_planes = p.batch * p.in_channels;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t chunks = (p.out_width + kColumns - 1) / kColumns;
  const plane_blocks::Phase phases[2] = {
      kernel > 0 ? plane_blocks::Phase{p.out_height * chunks, kColumns * taps}
                 : plane_blocks::Phase{p.out_height * p.out_width, taps},
      {0, 0}};
  const cudaError_t status =
      plane_blocks::planes_per_block(b.total_planes, floats_per_plane(p), phases, b.planes);
  if (status != cudaSuccess) {
    return status;
  }
  b.x_pitch = odd(p.in_height * p.in_width);
  b.filter_pitch = odd(p.kernel_h * p.kernel_w);
  b.y_pitch = odd(p.out_height * p.out_width);
  b.chunks = static_cast<int>(chunks);
  b.in_elements = FastDivisor::make(static_cast<uint32_t>(p.in_height * p.in_width));
  b.out_elements = FastDivisor::make(static_cast<uint32_t>(p.out_height * p.out_width));
  b.planes_divisor = FastDivisor::make(static_cast<uint32_t>(b.planes));
  b.chunks_divisor = FastDivisor::make(static_cast<uint32_t>(kernel > 0 ? b.chunks : 1));
  b.out_width = FastDivisor::make(static_cast<uint32_t>(p.out_width));
  return cudaSuccess;
}

// One launch over batch x channels planes, a block of planes a CTA; `kernel` / `stride` as
// unrolled_geometry (depthwise.cu) gives them: 3 or 5, 1 or 2, or 0 for the run-time instance.
template <typename Storage>
cudaError_t launch(const ConvParams& p, int kernel, int stride, cudaStream_t stream) {
  Block b{};
  const cudaError_t status = plan_blocks(p, kernel, b);
  if (status != cudaSuccess) {
    return status;
  }
  const dim3 grid(static_cast<uint32_t>((b.total_planes + b.planes - 1) / b.planes));
  const size_t shared =
      sizeof(float) * static_cast<size_t>(b.planes) * (b.x_pitch + b.filter_pitch + b.y_pitch);
  if (kernel == 3 && stride == 1) {
    depthwise_planes_kernel<Storage, 3, 1><<<grid, kThreads, shared, stream>>>(p, b);
  } else if (kernel == 3 && stride == 2) {
    depthwise_planes_kernel<Storage, 3, 2><<<grid, kThreads, shared, stream>>>(p, b);
  } else if (kernel == 5 && stride == 1) {
    depthwise_planes_kernel<Storage, 5, 1><<<grid, kThreads, shared, stream>>>(p, b);
  } else if (kernel == 5 && stride == 2) {
    depthwise_planes_kernel<Storage, 5, 2><<<grid, kThreads, shared, stream>>>(p, b);
  } else {
    depthwise_planes_kernel<Storage, 0, 0><<<grid, kThreads, shared, stream>>>(p, b);
  }
  return cudaGetLastError();
}

}  // namespace depthwise_planes
}  // namespace fusedconv
