// Depthwise forward by whole planes in shared memory (a depthwise candidate, common/
// depthwise_candidates.h): dense NCHW, channel multiplier 1, input planes of up to
// kMaxPlaneElements, any kernel, stride, padding and dilation; float32 / float16 / bfloat16.
// For the small planes of a network's last stages (7x7 and 14x14), where the per-row kernel's
// strips of four columns are mostly partial and the vector rows do not apply: a warp loads an
// (image, channel) input plane once, coalesced, into shared memory as float, then computes the
// plane's outputs from it with the per-row kernel's taps (padded ones skipped), order and
// arithmetic: the same bits. A warp per (image, channel) plane.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/depthwise_planes_domain.h"
#include "common/filter_registers.cuh"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_planes {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// The calls it takes, given a dense NCHW input and output (the caller's test): multiplier 1,
// planes of common/depthwise_planes_domain.h, types accumulated in float.
inline bool applies(const ConvParams& p) {
  return p.out_channels == p.in_channels && element_bytes(p.dtype) <= 4 && forward_applies(p);
}

// kKernel / kStride > 0: square kernel and stride known at compile time, dilation 1. 0: read at
// run time.
template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_planes_kernel(const ConvParams p, int64_t planes) {
  __shared__ float x_planes[kWarps][kMaxPlaneElements];
  using Traits = StorageTraits<Storage>;
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int kernel_h = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_w);
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  const int dilation_h = kKernel > 0 ? 1 : static_cast<int>(p.dilation_h);
  const int dilation_w = kKernel > 0 ? 1 : static_cast<int>(p.dilation_w);
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int in_elements = in_height * in_width;
  const int out_elements = static_cast<int>(p.out_height) * out_width;
  const int pad_top = static_cast<int>(p.pad_top);
  const int pad_left = static_cast<int>(p.pad_left);
  float* x_values = x_planes[warp];
  for (int64_t plane = int64_t{blockIdx.x} * kWarps + warp; plane < planes;
       plane += int64_t{gridDim.x} * kWarps) {
    const uint32_t channel = static_cast<uint32_t>(plane % p.out_channels);
    const Storage* __restrict__ x = static_cast<const Storage*>(p.input) + plane * in_elements;
#pragma unroll 4
    for (int e = lane; e < in_elements; e += 32) {  // unrolled: several loads in flight a lane
      x_values[e] = Traits::load(x[e]);
    }
    __syncwarp();
    const Storage* __restrict__ weight =
        static_cast<const Storage*>(p.weight) + int64_t{channel} * p.weight_strides.n;
    const float bias =
        p.bias != nullptr ? Traits::load(static_cast<const Storage*>(p.bias)[channel]) : 0.0f;
    // A compile-time kernel's filter in registers for the whole plane; the run-time one per tap.
    float filter[kKernel > 0 ? kKernel * kKernel : 1];
    if constexpr (kKernel > 0) {
      load_filter<Storage, kKernel>(weight, p.weight_strides, filter);
    }
    Storage* __restrict__ y = static_cast<Storage*>(p.output) + plane * out_elements;
    for (int e = lane; e < out_elements; e += 32) {
      const int out_row = e / out_width;
      const int out_col = e - out_row * out_width;
      const int first_row = out_row * stride_h - pad_top;
      const int first_col = out_col * stride_w - pad_left;
      float acc = bias;
#pragma unroll
      for (int r = 0; r < kernel_h; ++r) {
        const int in_row = first_row + r * dilation_h;
        if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
          continue;  // padded rows skipped, as the per-row kernel does
        }
#pragma unroll
        for (int s = 0; s < kernel_w; ++s) {
          const int in_col = first_col + s * dilation_w;
          if (static_cast<unsigned>(in_col) < static_cast<unsigned>(in_width)) {
            float w;
            if constexpr (kKernel > 0) {
              w = filter[r * kKernel + s];
            } else {
              w = Traits::load(
                  weight[int64_t{r} * p.weight_strides.h + int64_t{s} * p.weight_strides.w]);
            }
            acc = fmaf(x_values[in_row * in_width + in_col], w, acc);
          }
        }
      }
      y[e] = Traits::store(HardSwishReLU<float>::value(acc));
    }
    __syncwarp();  // the plane read by every lane before the next one overwrites it
  }
}

// One launch over batch x channels planes, a warp each; `kernel` / `stride` as unrolled_geometry
// (depthwise.cu) gives them: 3 or 5, 1 or 2, or 0 for the run-time instance.
template <typename Storage>
cudaError_t launch(const ConvParams& p, int kernel, int stride, cudaStream_t stream) {
  const int64_t planes = p.batch * p.in_channels;
  const dim3 grid(static_cast<uint32_t>((planes + kWarps - 1) / kWarps));
  if (kernel == 3 && stride == 1) {
    depthwise_planes_kernel<Storage, 3, 1><<<grid, kThreads, 0, stream>>>(p, planes);
  } else if (kernel == 3 && stride == 2) {
    depthwise_planes_kernel<Storage, 3, 2><<<grid, kThreads, 0, stream>>>(p, planes);
  } else if (kernel == 5 && stride == 1) {
    depthwise_planes_kernel<Storage, 5, 1><<<grid, kThreads, 0, stream>>>(p, planes);
  } else if (kernel == 5 && stride == 2) {
    depthwise_planes_kernel<Storage, 5, 2><<<grid, kThreads, 0, stream>>>(p, planes);
  } else {
    depthwise_planes_kernel<Storage, 0, 0><<<grid, kThreads, 0, stream>>>(p, planes);
  }
  return cudaGetLastError();
}

}  // namespace depthwise_planes
}  // namespace fusedconv
