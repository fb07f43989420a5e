// Depthwise backward by blocks of whole planes in one pass (a depthwise candidate, common/
// depthwise_candidates.h): dense NCHW, multiplier 1, the small planes of common/
// depthwise_planes_domain.h (7x7 and 14x14 in networks' last stages, where the row walks do not
// apply). A CTA takes a block of consecutive (image, channel) planes (common/
// depthwise_plane_blocks.cuh): it stages g = grad_y * f'(y) (formed once an element), x and the
// filters, then computes the block's grad_x planes (the gather kernel's taps, order and
// arithmetic: the same bits) and each plane's grad_weight / grad_bias partial (k x k + 1 sums
// over the plane's outputs in row-major order), and stores both as contiguous runs. One launch
// reads grad_y, y and x once; the reduce kernel then sums each channel's partials over the batch
// in order: bitwise identical from run to run.
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
namespace depthwise_backward_planes {

using plane_blocks::kBlockFloats;
using plane_blocks::kThreads;
using plane_blocks::odd;

// A launch's blocks. Items are (plane, input element) for grad_x and (plane, sum) for the
// partials, plane fastest.
struct Block {
  int planes;  // planes per block
  int g_pitch, x_pitch, filter_pitch, grad_x_pitch, partial_pitch;
  FastDivisor in_elements, out_elements, in_width, planes_divisor;
  int64_t total_planes;
};

// Shared floats a plane takes: g, x where the partials are wanted, the filter and grad_x where
// grad_x is, the partial.
inline int64_t floats_per_plane(const ConvParams& p, bool input_wanted, bool params_wanted) {
  const int64_t in_elements = p.in_height * p.in_width;
  return odd(p.out_height * p.out_width) + (params_wanted ? odd(in_elements) : 0) +
         (input_wanted ? odd(p.kernel_h * p.kernel_w) + odd(in_elements) : 0) +
         (params_wanted ? odd(p.kernel_h * p.kernel_w + 1) : 0);
}

// The calls it takes, given dense NCHW tensors and the depthwise backward's square 3x3 / 5x5 /
// 7x7 kernels (the caller's tests): multiplier 1, planes of the planes domain, every gradient's
// plane within one block, types accumulated in float.
inline bool applies(const ConvParams& p) {
  return p.out_channels == p.in_channels && element_bytes(p.dtype) <= 4 &&
         depthwise_planes::grad_input_applies(p) && floats_per_plane(p, true, true) <= kBlockFloats;
}

// grad_x at input element (in_row, in_col) of a plane: the taps (r, s) whose output lies in the
// plane, in the gather kernel's order (r, then s, increasing; the same bits). kStride > 0, dilation
// 1: only taps of the element's parity reach an output, so r and s step by the stride from it
// (about k^2 / stride^2 taps, no per-tap divisibility test). kStride == 0: any stride and
// dilation, every tap tested.
template <int kKernel, int kStride>
__device__ __forceinline__ float gather_taps(const float* __restrict__ g,
                                             const float* __restrict__ filter, int in_row,
                                             int in_col, const ConvParams& p) {
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int row_base = in_row + static_cast<int>(p.pad_top);  // out_row * stride + r
  const int col_base = in_col + static_cast<int>(p.pad_left);
  float acc = 0.0f;
  if constexpr (kStride > 0) {
    constexpr int kSteps = (kKernel + kStride - 1) / kStride;
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      const int r = row_base % kStride + i * kStride;
      const int row_span = row_base - r;
      if (r >= kKernel || row_span < 0 || row_span / kStride >= out_height) {
        continue;
      }
      const float* __restrict__ g_row = g + (row_span / kStride) * out_width;
#pragma unroll
      for (int j = 0; j < kSteps; ++j) {
        const int s = col_base % kStride + j * kStride;
        const int col_span = col_base - s;
        if (s < kKernel && col_span >= 0 && col_span / kStride < out_width) {
          acc = fmaf(g_row[col_span / kStride], filter[r * kKernel + s], acc);
        }
      }
    }
  } else {
    const int stride_h = static_cast<int>(p.stride_h);
    const int stride_w = static_cast<int>(p.stride_w);
#pragma unroll
    for (int r = 0; r < kKernel; ++r) {
      const int row_span = row_base - r * static_cast<int>(p.dilation_h);
      if (row_span < 0 || row_span % stride_h != 0 || row_span / stride_h >= out_height) {
        continue;
      }
      const float* __restrict__ g_row = g + (row_span / stride_h) * out_width;
#pragma unroll
      for (int s = 0; s < kKernel; ++s) {
        const int col_span = col_base - s * static_cast<int>(p.dilation_w);
        if (col_span >= 0 && col_span % stride_w == 0 && col_span / stride_w < out_width) {
          acc = fmaf(g_row[col_span / stride_w], filter[r * kKernel + s], acc);
        }
      }
    }
  }
  return acc;
}

// first / end (exclusive) of the outputs along an axis whose input, out * stride + offset, lies
// in [0, size).
__device__ __forceinline__ void valid_outputs(int offset, int stride, int size, int outputs,
                                              int& first, int& end) {
  first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  end = offset > size - 1 ? 0 : min(outputs, (size - 1 - offset) / stride + 1);
}

// A plane's grad_weight sum of tap (r, s): g x x over the outputs whose tap input lies in the
// plane, in row-major order (the outputs outside add nothing: the same bits as testing each).
__device__ __forceinline__ float tap_sum(const float* __restrict__ g,
                                         const float* __restrict__ x, int r, int s,
                                         int stride_h, int stride_w, const ConvParams& p) {
  const int in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int row_offset = r * static_cast<int>(p.dilation_h) - static_cast<int>(p.pad_top);
  const int col_offset = s * static_cast<int>(p.dilation_w) - static_cast<int>(p.pad_left);
  int first_row, end_row, first_col, end_col;
  valid_outputs(row_offset, stride_h, static_cast<int>(p.in_height),
                static_cast<int>(p.out_height), first_row, end_row);
  valid_outputs(col_offset, stride_w, in_width, out_width, first_col, end_col);
  float acc = 0.0f;
  for (int out_row = first_row; out_row < end_row; ++out_row) {
    const float* __restrict__ g_row = g + out_row * out_width;
    const float* __restrict__ x_row = x + (out_row * stride_h + row_offset) * in_width + col_offset;
#pragma unroll 4
    for (int out_col = first_col; out_col < end_col; ++out_col) {
      acc = fmaf(g_row[out_col], x_row[out_col * stride_w], acc);
    }
  }
  return acc;
}

template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_backward_planes_kernel(const ConvBackwardParams bp, const Block b,
                                     float* partials) {
  extern __shared__ float block_shared[];
  using Traits = StorageTraits<Storage>;
  constexpr int kTaps = kKernel * kKernel;
  const ConvParams& p = bp.conv;
  const bool input_wanted = bp.grad_input != nullptr;
  const bool params_wanted = partials != nullptr;
  const int channels = static_cast<int>(p.out_channels);
  const plane_blocks::BlockSpan span = plane_blocks::block_span(b.planes, b.total_planes,
                                                                channels);
  const int64_t first_plane = span.first_plane;
  const int planes = span.planes;
  const int first_channel = span.first_channel;

  float* g_block = block_shared;
  float* x_block = g_block + b.planes * b.g_pitch;
  float* filter_block = x_block + b.planes * b.x_pitch;
  float* grad_x_block = filter_block + b.planes * b.filter_pitch;
  float* partial_block = grad_x_block + b.planes * b.grad_x_pitch;
  const int64_t out_offset = first_plane * b.out_elements.divisor;
  const int64_t in_offset = first_plane * b.in_elements.divisor;
  const Storage* __restrict__ grad_y = static_cast<const Storage*>(bp.grad_output) + out_offset;
  const Storage* __restrict__ y = static_cast<const Storage*>(p.output) + out_offset;
  // g from 16 bytes of grad_y and of y at a time where both runs meet 16-byte boundaries alike.
  using Vector = Vector16<Storage>;
  const uint32_t g_head = plane_blocks::head_elements(grad_y);
  plane_blocks::stage_planes<Vector::kCount>(
      planes, b.out_elements, b.g_pitch, g_block,
      g_head == plane_blocks::head_elements(y) ? g_head : UINT32_MAX,
      [&](uint32_t e) {
        return HardSwishReLU<float>::backward(Traits::load(grad_y[e]), Traits::load(y[e]));
      },
      [&](uint32_t e, float (&values)[Vector::kCount]) {
        Vector dy, yv;
        dy.bits = *reinterpret_cast<const uint4*>(grad_y + e);
        yv.bits = *reinterpret_cast<const uint4*>(y + e);
#pragma unroll
        for (int i = 0; i < Vector::kCount; ++i) {
          values[i] = HardSwishReLU<float>::backward(Traits::load(dy.values[i]),
                                                     Traits::load(yv.values[i]));
        }
      });
  if (params_wanted) {
    plane_blocks::stage_run(planes, b.in_elements, b.x_pitch, x_block,
                            static_cast<const Storage*>(p.input) + in_offset);
  }
  if (input_wanted) {
    plane_blocks::stage_filters(static_cast<const Storage*>(p.weight), p.weight_strides,
                                kKernel, kTaps, first_channel, channels, planes, b.filter_pitch,
                                filter_block);
  }
  __syncthreads();

  const int out_elements = static_cast<int>(p.out_height * p.out_width);
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  // The parity walk of gather_taps assumes dilation 1 (uniform across the launch).
  const bool dilated = p.dilation_h != 1 || p.dilation_w != 1;
  if (input_wanted) {
    const uint32_t items = b.in_elements.divisor * static_cast<uint32_t>(b.planes);
    for (uint32_t item = threadIdx.x; item < items; item += kThreads) {
      uint32_t plane;
      const uint32_t element = b.planes_divisor.divide(item, plane);
      if (static_cast<int>(plane) >= planes) {
        continue;  // the last block's missing planes
      }
      uint32_t in_col_u;
      const int in_row = static_cast<int>(b.in_width.divide(element, in_col_u));
      const int in_col = static_cast<int>(in_col_u);
      const float* __restrict__ g = g_block + plane * b.g_pitch;
      const float* __restrict__ filter = filter_block + plane * b.filter_pitch;
      const float acc = dilated ? gather_taps<kKernel, 0>(g, filter, in_row, in_col, p)
                                : gather_taps<kKernel, kStride>(g, filter, in_row, in_col, p);
      grad_x_block[plane * b.grad_x_pitch + element] = acc;
    }
  }
  if (params_wanted) {
    const uint32_t items = static_cast<uint32_t>((kTaps + 1) * b.planes);
    for (uint32_t item = threadIdx.x; item < items; item += kThreads) {
      uint32_t plane;
      const int sum = static_cast<int>(b.planes_divisor.divide(item, plane));
      if (static_cast<int>(plane) >= planes) {
        continue;
      }
      const float* __restrict__ g = g_block + plane * b.g_pitch;
      const float* __restrict__ x = x_block + plane * b.x_pitch;
      float acc = 0.0f;
      if (sum == kTaps) {  // grad_bias: the plane's g in row-major order
        for (int o = 0; o < out_elements; ++o) {
          acc += g[o];
        }
      } else {
        const int r = sum / kKernel;
        acc = tap_sum(g, x, r, sum - r * kKernel, stride_h, stride_w, p);
      }
      partial_block[plane * b.partial_pitch + sum] = acc;
    }
  }
  __syncthreads();

  if (input_wanted) {
    plane_blocks::store_planes(grad_x_block, planes, b.in_elements, b.grad_x_pitch,
                               static_cast<Storage*>(bp.grad_input) + in_offset);
  }
  if (params_wanted) {  // partials of planes (n, c) in NCHW order, kTaps + 1 each
    const uint32_t total = static_cast<uint32_t>(planes * (kTaps + 1));
    float* __restrict__ out = partials + first_plane * (kTaps + 1);
    for (uint32_t e = threadIdx.x; e < total; e += kThreads) {
      const uint32_t plane = e / (kTaps + 1);
      out[e] = partial_block[plane * b.partial_pitch + (e - plane * (kTaps + 1))];
    }
  }
}

inline cudaError_t plan_blocks(const ConvBackwardParams& bp, bool params_wanted, Block& b) {
  const ConvParams& p = bp.conv;
  const bool input_wanted = bp.grad_input != nullptr;
  b.total_planes = p.batch * p.in_channels;
  const int64_t in_elements = p.in_height * p.in_width;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t out_elements = p.out_height * p.out_width;
  // grad_x: an element gathers about k^2 / stride^2 taps; a sum walks the plane's outputs.
  const plane_blocks::Phase phases[2] = {
      {input_wanted ? in_elements : 0, taps / (p.stride_h * p.stride_w) + 1},
      {params_wanted ? taps + 1 : 0, out_elements}};
  const cudaError_t status = plane_blocks::planes_per_block(
      b.total_planes, floats_per_plane(p, input_wanted, params_wanted), phases, b.planes);
  if (status != cudaSuccess) {
    return status;
  }
  b.g_pitch = odd(p.out_height * p.out_width);
  b.x_pitch = params_wanted ? odd(in_elements) : 0;
  b.filter_pitch = input_wanted ? odd(taps) : 0;
  b.grad_x_pitch = input_wanted ? odd(in_elements) : 0;
  b.partial_pitch = params_wanted ? odd(taps + 1) : 0;
  b.in_elements = FastDivisor::make(static_cast<uint32_t>(in_elements));
  b.out_elements = FastDivisor::make(static_cast<uint32_t>(out_elements));
  b.in_width = FastDivisor::make(static_cast<uint32_t>(p.in_width));
  b.planes_divisor = FastDivisor::make(static_cast<uint32_t>(b.planes));
  return cudaSuccess;
}

// One launch over batch x channels planes; `partials` (batch x channels x (k^2 + 1) floats, in
// NCHW plane order) or null where neither grad_weight nor grad_bias is wanted.
template <typename Storage, int kKernel, int kStride>
cudaError_t launch(const ConvBackwardParams& bp, float* partials, cudaStream_t stream) {
  Block b{};
  const cudaError_t status = plan_blocks(bp, partials != nullptr, b);
  if (status != cudaSuccess) {
    return status;
  }
  const dim3 grid(static_cast<uint32_t>((b.total_planes + b.planes - 1) / b.planes));
  const size_t shared = sizeof(float) * static_cast<size_t>(b.planes) *
                        (b.g_pitch + b.x_pitch + b.filter_pitch + b.grad_x_pitch +
                         b.partial_pitch);
  depthwise_backward_planes_kernel<Storage, kKernel, kStride>
      <<<grid, kThreads, shared, stream>>>(bp, b, partials);
  return cudaGetLastError();
}

}  // namespace depthwise_backward_planes
}  // namespace fusedconv
