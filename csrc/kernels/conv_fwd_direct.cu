// Small-problem forward (KernelBench's v0 and its kin): a float32 FFMA direct convolution, one
// thread per output position computing every output channel.
//
// Why not tensor cores here: with up to 16 output channels and Cin x kh x kw <= 32, the products
// are at most 512 FMAs per position, while the tensor-core kernels pay for staging, the TF32
// split and index math per tile. ncu on v0 (mma.sync kernel, 13 us): 1,800 warp instructions
// per warp, 2.7% of them HMMA, issue slots 54% busy. Here a thread loads its <= 32 inputs (L1
// serves the overlap between neighbouring positions), the CTA stages the weights transposed in
// shared memory (a broadcast 16-byte load feeds four FMAs), and a warp's stores cover 32
// consecutive positions of one channel plane. Exact float32 accumulation in either precision
// mode (allow_tf32 has nothing to speed up); one launch, no workspace. DESIGN.md allows FFMA
// "where that is as fast". Measured (kernel time, H100): v0 0.0118 ms against 0.0130 for the
// mma.sync kernel. Two positions per thread (sharing each weight load) measured slower: 0.0126
// ms on v0 and 0.0093 vs 0.0062 ms at batch 32, where half as many CTAs leave SMs idle.
#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/activation.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"
#include "fusedconv/tensorcore.cuh"

namespace fusedconv {
namespace {

constexpr int kDirectThreads = 256;
constexpr int kDirectMaxOutChannels = 16;
constexpr int kDirectMaxK = 32;  // in_channels x kernel_h x kernel_w

// The kernel size as template arguments for the common 3x3 (kKernelH = kKernelW = 0: read at
// run time). Known sizes unroll the tap loop into straight-line loads with static indices; the
// run-time walk costs a counter and branches per tap, about a third of the kernel's
// instructions on v0.
template <int kKernelH, int kKernelW>
__global__ void __launch_bounds__(kDirectThreads)
    conv_hardswish_relu_direct_kernel(const ConvParams p) {
  // weights[k][out channel], k = (channel * kernel_h + r) * kernel_w + s; zero past the problem.
  __shared__ float4 weights[kDirectMaxK][kDirectMaxOutChannels / 4];
  __shared__ float bias_values[kDirectMaxOutChannels];

  const int kernel_h = kKernelH > 0 ? kKernelH : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernelW > 0 ? kKernelW : static_cast<int>(p.kernel_w);
  const int taps = kernel_h * kernel_w;
  const int k_total = static_cast<int>(p.in_channels) * taps;
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int plane = static_cast<int>(p.out_height * p.out_width);
  const int out_channels = static_cast<int>(p.out_channels);

  // This thread's position: launch_direct keeps batch x plane below 2^31.
  const int position = static_cast<int>(blockIdx.x) * kDirectThreads + threadIdx.x;
  const bool active = position < static_cast<int>(p.batch) * plane;
  const int n = active ? position / plane : 0;
  const int local = active ? position - n * plane : 0;
  const int out_row = local / out_width;
  const int out_col = local - out_row * out_width;
  const int first_row = out_row * static_cast<int>(p.stride_h) - static_cast<int>(p.pad_top);
  const int first_col = out_col * static_cast<int>(p.stride_w) - static_cast<int>(p.pad_left);
  const int dilation_h = static_cast<int>(p.dilation_h);
  const int dilation_w = static_cast<int>(p.dilation_w);
  const float* __restrict__ image =
      static_cast<const float*>(p.input) + int64_t{n} * p.input_strides.n;
  const int channel_stride = in_height * in_width;  // dense NCHW (the dispatch rule)

  // Inputs first, so their latency overlaps the weight staging below. Taps in the zero padding
  // read as 0; k past k_total stays 0 and is skipped below.
  float inputs[kDirectMaxK];
  if constexpr (kKernelH > 0 && kKernelW > 0) {
    constexpr int kTaps = kKernelH * kKernelW;
    bool row_inside[kKernelH], col_inside[kKernelW];
    int row_offset[kKernelH], col_offset[kKernelW];
#pragma unroll
    for (int r = 0; r < kKernelH; ++r) {
      const int row = first_row + r * dilation_h;
      row_inside[r] = active && static_cast<unsigned>(row) < static_cast<unsigned>(in_height);
      row_offset[r] = row * in_width;
    }
#pragma unroll
    for (int s = 0; s < kKernelW; ++s) {
      const int col = first_col + s * dilation_w;
      col_inside[s] = static_cast<unsigned>(col) < static_cast<unsigned>(in_width);
      col_offset[s] = col;
    }
#pragma unroll
    for (int k = 0; k < kDirectMaxK; ++k) {
      inputs[k] = 0.0f;
      const int channel = k / kTaps;  // compile-time constants once unrolled
      const int r = (k % kTaps) / kKernelW;
      const int s = k % kKernelW;
      if (k < k_total && row_inside[r] && col_inside[s]) {
        inputs[k] = __ldg(image + channel * channel_stride + row_offset[r] + col_offset[s]);
      }
    }
  } else {
    int channel = 0, r = 0, s = 0;
#pragma unroll
    for (int k = 0; k < kDirectMaxK; ++k) {
      inputs[k] = 0.0f;
      const int row = first_row + r * dilation_h;
      const int col = first_col + s * dilation_w;
      if (active && k < k_total && static_cast<unsigned>(row) < static_cast<unsigned>(in_height) &&
          static_cast<unsigned>(col) < static_cast<unsigned>(in_width)) {
        inputs[k] = __ldg(image + channel * channel_stride + row * in_width + col);
      }
      if (++s == kernel_w) {
        s = 0;
        if (++r == kernel_h) {
          r = 0;
          ++channel;
        }
      }
    }
  }

  const float* __restrict__ weight = static_cast<const float*>(p.weight);
  float* weight_words = reinterpret_cast<float*>(weights);
  for (int index = threadIdx.x; index < kDirectMaxK * kDirectMaxOutChannels;
       index += kDirectThreads) {
    const int k = index / kDirectMaxOutChannels;
    const int out_channel = index % kDirectMaxOutChannels;
    float value = 0.0f;
    if (k < k_total && out_channel < out_channels) {
      const int channel = k / taps;
      const int tap = k - channel * taps;
      const int r = tap / kernel_w;
      value = weight[out_channel * p.weight_strides.n + channel * p.weight_strides.c +
                     r * p.weight_strides.h + (tap - r * kernel_w) * p.weight_strides.w];
    }
    weight_words[index] = value;
  }
  if (threadIdx.x < kDirectMaxOutChannels) {
    const float* bias = static_cast<const float*>(p.bias);
    bias_values[threadIdx.x] =
        (bias != nullptr && static_cast<int>(threadIdx.x) < out_channels) ? bias[threadIdx.x]
                                                                          : 0.0f;
  }
  __syncthreads();
  if (!active) {
    return;
  }

  float acc[kDirectMaxOutChannels];
#pragma unroll
  for (int out_channel = 0; out_channel < kDirectMaxOutChannels; ++out_channel) {
    acc[out_channel] = bias_values[out_channel];
  }
#pragma unroll
  for (int k = 0; k < kDirectMaxK; ++k) {
    if (k < k_total) {
#pragma unroll
      for (int quad = 0; quad < kDirectMaxOutChannels / 4; ++quad) {
        const float4 w = weights[k][quad];
        acc[4 * quad + 0] = fmaf(inputs[k], w.x, acc[4 * quad + 0]);
        acc[4 * quad + 1] = fmaf(inputs[k], w.y, acc[4 * quad + 1]);
        acc[4 * quad + 2] = fmaf(inputs[k], w.z, acc[4 * quad + 2]);
        acc[4 * quad + 3] = fmaf(inputs[k], w.w, acc[4 * quad + 3]);
      }
    }
  }

  float* __restrict__ output =
      static_cast<float*>(p.output) + int64_t{n} * p.output_strides.n + local;
#pragma unroll
  for (int out_channel = 0; out_channel < kDirectMaxOutChannels; ++out_channel) {
    if (out_channel < out_channels) {
      output[out_channel * plane] = HardSwishReLU<float>::value(acc[out_channel]);
    }
  }
}

}  // namespace

bool direct_forward_applies(const ConvParams& params) {
  return tensorcore::dense_float32_nchw(params) &&
         params.out_channels <= kDirectMaxOutChannels &&
         params.in_channels * params.kernel_h * params.kernel_w <= kDirectMaxK &&
         params.batch * params.out_height * params.out_width <
             (int64_t{1} << 31) - kDirectThreads;
}

cudaError_t launch_conv_hardswish_relu_direct(const ConvParams& params, cudaStream_t stream) {
  const int64_t positions = params.batch * params.out_height * params.out_width;
  const int64_t blocks = (positions + kDirectThreads - 1) / kDirectThreads;
  if (blocks == 0) {
    return cudaSuccess;
  }
  const dim3 grid(static_cast<unsigned int>(blocks));
  if (params.kernel_h == 3 && params.kernel_w == 3) {
    conv_hardswish_relu_direct_kernel<3, 3><<<grid, kDirectThreads, 0, stream>>>(params);
  } else {
    conv_hardswish_relu_direct_kernel<0, 0><<<grid, kDirectThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

}  // namespace fusedconv
