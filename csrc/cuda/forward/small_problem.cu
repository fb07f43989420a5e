// Small-problem forward (KernelBench's v0 and its kin: up to 16 output channels, at most 32 inputs
// per output position). Two kernels, both exact float32 or better in either precision mode
// (allow_tf32 has nothing to speed up here), one launch, no workspace:
//
// - DMMA (compute capability 8.0 and 9.0, whose FP64 tensor cores run at full rate): the
//   products as an implicit GEMM on `mma.m8n8k4.f64`, M = output channels (two m8 tiles), N = 8
//   output positions, K = input channel x tap in steps of 4. float32 operands convert to float64
//   exactly, so the products are exact; the sum is accumulated in float64 and rounded to float32
//   once, in the epilogue.
//   Why: the FFMA kernel below spends 432 FMAs, 108 shared loads and its address math on each
//   output position of v0 and is bound by instruction issue (ncu: 1,709 warp instructions per 32
//   positions, 47% issue); here a warp covers 32 positions with 56 MMAs. Measured (kernel time,
//   H100): v0 0.0108 ms against 0.0117 for FFMA, error 4.8e-8 against 1.2e-7; at batch 32 (one
//   pass of the persistent grid) 0.0070 against 0.0063 ms. ncu on v0: issue 31% busy, warps
//   waiting on fixed-latency dependencies (27% of samples) and global loads (20%): latency, not
//   a pipe, bounds it. Weights loaded per lane with no barrier and the next pass's inputs
//   prefetched measured slower (0.0125 ms).
// - FFMA (every other device, where float64 runs at 1/32 or 1/64 rate): one thread per output
//   position computing every output channel.
//
// Why not the TF32 tensor-core kernels: with at most 512 products per position, their tile
// staging, TF32 split and index math cost more than the products. ncu on v0 (mma.sync kernel,
// 13 us): 1,800 warp instructions per warp, 2.7% of them HMMA, issue slots 54% busy.
//
// FFMA details: a thread loads its <= 32 inputs (L1 serves the overlap between neighbouring
// positions), the CTA stages the weights transposed in shared memory (a broadcast 16-byte load
// feeds four FMAs), and a warp's stores cover 32 consecutive positions of one channel plane.
// Measured (kernel time, H100): v0 0.0118 ms against 0.0130 for the mma.sync kernel. Two
// positions per thread (sharing each weight load) measured slower: 0.0126 ms on v0 and 0.0093 vs
// 0.0062 ms at batch 32, where half as many CTAs leave SMs idle.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "common/plan_memo.h"
#include "common/ptx.cuh"
#include "forward/families.h"
#include "fusedconv/activation.h"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace small_problem {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxOutChannels = 16;
constexpr int kMaxK = 32;  // in_channels x kernel_h x kernel_w

// The kernel size as template arguments for the common 3x3 (kKernelH = kKernelW = 0: read at
// run time). Known sizes unroll the tap loop into straight-line loads with static indices; the
// run-time walk costs a counter and branches per tap, about a third of the kernel's
// instructions on v0.
template <int kKernelH, int kKernelW>
__global__ void __launch_bounds__(kThreads)
    conv_hardswish_relu_direct_ffma_kernel(const ConvParams p) {
  // weights[k][out channel], k = (channel * kernel_h + r) * kernel_w + s; zero past the problem.
  __shared__ float4 weights[kMaxK][kMaxOutChannels / 4];
  __shared__ float bias_values[kMaxOutChannels];

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
  const int position = static_cast<int>(blockIdx.x) * kThreads + threadIdx.x;
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
  float inputs[kMaxK];
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
    for (int k = 0; k < kMaxK; ++k) {
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
    for (int k = 0; k < kMaxK; ++k) {
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
  for (int index = threadIdx.x; index < kMaxK * kMaxOutChannels;
       index += kThreads) {
    const int k = index / kMaxOutChannels;
    const int out_channel = index % kMaxOutChannels;
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
  if (threadIdx.x < kMaxOutChannels) {
    const float* bias = static_cast<const float*>(p.bias);
    bias_values[threadIdx.x] =
        (bias != nullptr && static_cast<int>(threadIdx.x) < out_channels) ? bias[threadIdx.x]
                                                                          : 0.0f;
  }
  __syncthreads();
  if (!active) {
    return;
  }

  float acc[kMaxOutChannels];
#pragma unroll
  for (int out_channel = 0; out_channel < kMaxOutChannels; ++out_channel) {
    acc[out_channel] = bias_values[out_channel];
  }
#pragma unroll
  for (int k = 0; k < kMaxK; ++k) {
    if (k < k_total) {
#pragma unroll
      for (int quad = 0; quad < kMaxOutChannels / 4; ++quad) {
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
  for (int out_channel = 0; out_channel < kMaxOutChannels; ++out_channel) {
    if (out_channel < out_channels) {
      output[out_channel * plane] = HardSwishReLU<float>::value(acc[out_channel]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DMMA kernel.

constexpr int kDmmaThreads = 256;
constexpr int kDmmaWarps = kDmmaThreads / 32;
constexpr int kDmmaSteps = kMaxK / 4;  // k4 steps
constexpr int kDmmaGroups = 4;               // 8-position groups a warp takes per pass

// What the launcher derives once per call: the divisions of the position walk.
struct DmmaGeometry {
  FastDivisor plane;      // output positions per image
  FastDivisor out_width;
  int positions;          // batch x plane, < 2^31 (applies)
  int groups;             // ceil(positions / 8)
  int k_steps;            // ceil(in_channels x taps / 4)
  bool paired_stores;     // an even plane and an 8-byte aligned output: float2 stores
};

// Each warp takes 8-position groups w, w + W, w + 2W, ... (W = warps in the grid), kDmmaGroups
// per pass: first every group's input loads (32 per pass in flight), then the MMAs, then the
// epilogue. Round robin by group rather than contiguous chunks evens the passes across warps.
template <bool kBoundsChecks>
__global__ void __launch_bounds__(kDmmaThreads, 2)
    conv_hardswish_relu_direct_dmma_kernel(const ConvParams p, const DmmaGeometry geometry) {
  // Per k = channel x tap: the input's offset from a position's first input (row * stride_h,
  // col * stride_w) and the tap's row and column shift (padding bounds).
  __shared__ int tap_input_offset[kMaxK];
  __shared__ int tap_row_shift[kMaxK];
  __shared__ int tap_col_shift[kMaxK];
  // Weights as A fragments, [step][m tile][lane]: conflict-free 8-byte loads.
  __shared__ double weight_fragments[kDmmaSteps][2][32];

  const int kernel_w = static_cast<int>(p.kernel_w);
  const int taps = static_cast<int>(p.kernel_h) * kernel_w;
  const int k_total = static_cast<int>(p.in_channels) * taps;
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  if (threadIdx.x < kMaxK) {
    const int k = threadIdx.x;
    const int channel = k / taps;
    const int r = (k - channel * taps) / kernel_w;
    const int s = k - channel * taps - r * kernel_w;
    const int row_shift = r * static_cast<int>(p.dilation_h) - static_cast<int>(p.pad_top);
    const int col_shift = s * static_cast<int>(p.dilation_w) - static_cast<int>(p.pad_left);
    tap_row_shift[k] = row_shift;
    tap_col_shift[k] = col_shift;
    tap_input_offset[k] =
        k < k_total ? channel * in_height * in_width + row_shift * in_width + col_shift : 0;
  }
  const int out_channels = static_cast<int>(p.out_channels);
  const float* __restrict__ weight = static_cast<const float*>(p.weight);
  for (int index = threadIdx.x; index < kDmmaSteps * 2 * 32; index += kDmmaThreads) {
    const int lane = index % 32;
    const int out_channel = lane / 4 + 8 * ((index / 32) % 2);
    const int k = 4 * (index / 64) + lane % 4;
    double value = 0.0;
    if (k < k_total && out_channel < out_channels) {
      const int channel = k / taps;
      const int r = (k - channel * taps) / kernel_w;
      const int s = k - channel * taps - r * kernel_w;
      value = weight[out_channel * p.weight_strides.n + channel * p.weight_strides.c +
                     r * p.weight_strides.h + s * p.weight_strides.w];
    }
    weight_fragments[index / 64][(index / 32) % 2][lane] = value;
  }
  __syncthreads();

  const int lane = threadIdx.x % 32;
  const int quad = lane % 4;  // A, B: k within the step; D: which pair of positions
  const int row = lane / 4;   // A, D: output channel within the m tile; B: position in the group
  int input_offset[kDmmaSteps], row_shift[kDmmaSteps], col_shift[kDmmaSteps];
  bool k_inside[kDmmaSteps];
  uint32_t k_mask[kDmmaSteps];
#pragma unroll
  for (int step = 0; step < kDmmaSteps; ++step) {
    const int k = 4 * step + quad;
    k_inside[step] = k < k_total;
    k_mask[step] = k < k_total ? 0xffffffffu : 0u;
    input_offset[step] = tap_input_offset[k];
    row_shift[step] = tap_row_shift[k];
    col_shift[step] = tap_col_shift[k];
  }
  double bias_values[2];
  const float* bias = static_cast<const float*>(p.bias);
#pragma unroll
  for (int m_tile = 0; m_tile < 2; ++m_tile) {
    const int out_channel = row + 8 * m_tile;
    bias_values[m_tile] =
        bias != nullptr && out_channel < out_channels ? double{bias[out_channel]} : 0.0;
  }

  const float* __restrict__ input = static_cast<const float*>(p.input);
  float* __restrict__ output = static_cast<float*>(p.output);
  const int plane = static_cast<int>(geometry.plane.divisor);
  const int out_width = static_cast<int>(geometry.out_width.divisor);
  const int stride_h = static_cast<int>(p.stride_h);
  const int stride_w = static_cast<int>(p.stride_w);
  const int total_warps = static_cast<int>(gridDim.x) * kDmmaWarps;
  const int warp = static_cast<int>(blockIdx.x) * kDmmaWarps + static_cast<int>(threadIdx.x) / 32;

  for (int first_group = warp; first_group < geometry.groups;
       first_group += kDmmaGroups * total_warps) {
    // B operands: this lane's position in each group, its inputs for every k of its quad. A
    // position past the end reads position 0's inputs instead (its column of D is never stored),
    // so only the padding bounds and k past the problem need masking.
    float inputs[kDmmaGroups][kDmmaSteps];
#pragma unroll
    for (int group = 0; group < kDmmaGroups; ++group) {
      // Past the last group, position 0: 8 * group_index could overflow int near the 2^31
      // positions direct_forward_applies allows.
      const int group_index = first_group + group * total_warps;
      int position = group_index < geometry.groups ? 8 * group_index + row : 0;
      position = position < geometry.positions ? position : 0;
      const int n = static_cast<int>(geometry.plane.quotient(position));
      const int local = position - n * plane;
      const int out_row = static_cast<int>(geometry.out_width.quotient(local));
      const int first_row = out_row * stride_h;
      const int first_col = (local - out_row * out_width) * stride_w;
      // The window's first input as a 64-bit pointer once per group, then one wide multiply-add
      // per load. The empty asm pins it in registers: without it nvcc re-derived the address from
      // n * stride_n inside every predicated load (10 instructions per load instead of 3).
      const float* window = input + n * p.input_strides.n + (first_row * in_width + first_col);
      asm("" : "+l"(window));
#pragma unroll
      for (int step = 0; step < kDmmaSteps; ++step) {
        if constexpr (kBoundsChecks) {
          const bool take =
              k_inside[step] &&
              static_cast<unsigned>(first_row + row_shift[step]) <
                  static_cast<unsigned>(in_height) &&
              static_cast<unsigned>(first_col + col_shift[step]) <
                  static_cast<unsigned>(in_width);
          inputs[group][step] = take ? __ldg(window + input_offset[step]) : 0.0f;
        } else {
          // k past the problem reads the window's first input (offset 0) and masks it to +0:
          // its weight is 0, but 0 * inf would be NaN. (Skipping the loads of unused k steps
          // behind a warp-uniform branch measured slower on v0: benchmarks/NOTES.md.)
          const float value = __ldg(window + input_offset[step]);
          inputs[group][step] = __uint_as_float(__float_as_uint(value) & k_mask[step]);
        }
      }
    }

    double acc[kDmmaGroups][2][2];
#pragma unroll
    for (int group = 0; group < kDmmaGroups; ++group) {
#pragma unroll
      for (int m_tile = 0; m_tile < 2; ++m_tile) {
        acc[group][m_tile][0] = bias_values[m_tile];
        acc[group][m_tile][1] = bias_values[m_tile];
      }
    }
#pragma unroll
    for (int step = 0; step < kDmmaSteps; ++step) {
      if (step < geometry.k_steps) {  // warp-uniform
        const double a0 = weight_fragments[step][0][lane];
        const double a1 = weight_fragments[step][1][lane];
#pragma unroll
        for (int group = 0; group < kDmmaGroups; ++group) {
          const double b = inputs[group][step];
          dmma_m8n8k4(acc[group][0], a0, b);
          dmma_m8n8k4(acc[group][1], a1, b);
        }
      }
    }

    // D: output channels row and row + 8, positions 8 * group + 2 * quad + {0, 1}. An even plane
    // keeps a pair in one image and 8-byte aligned (paired_stores); otherwise the second one may
    // start the next image.
#pragma unroll
    for (int group = 0; group < kDmmaGroups; ++group) {
      const int group_index = first_group + group * total_warps;
      if (group_index >= geometry.groups || 8 * group_index + 2 * quad >= geometry.positions) {
        continue;
      }
      const int position = 8 * group_index + 2 * quad;
      const int n = static_cast<int>(geometry.plane.quotient(position));
      const int local = position - n * plane;
      float* first_output = output + n * p.output_strides.n + local;
      float* second_output = first_output + 1;
      if (!geometry.paired_stores && local + 1 == plane) {
        second_output = output + (n + 1) * p.output_strides.n;
      }
      const bool second_inside = position + 1 < geometry.positions;
#pragma unroll
      for (int m_tile = 0; m_tile < 2; ++m_tile) {
        const int out_channel = row + 8 * m_tile;
        if (out_channel < out_channels) {
          const float first =
              HardSwishReLU<float>::value(__double2float_rn(acc[group][m_tile][0]));
          const float second =
              HardSwishReLU<float>::value(__double2float_rn(acc[group][m_tile][1]));
          const int channel_offset = out_channel * plane;
          if (geometry.paired_stores) {  // the pair is inside: positions is even
            *reinterpret_cast<float2*>(first_output + channel_offset) =
                make_float2(first, second);
          } else {
            first_output[channel_offset] = first;
            if (second_inside) {
              second_output[channel_offset] = second;
            }
          }
        }
      }
    }
  }
}

// Compute capability 8.0 (A100) and 9.0 (H100, H200): FP64 tensor cores at full rate. Other
// devices run float64 at 1/32-1/64 of the float32 rate; FUSEDCONV_DISABLE_DMMA=1 (read once)
// forces the FFMA kernel, for A/B timing and its tests on those devices.
bool use_dmma(const DeviceLimits& limits) {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_DMMA");
  return !disabled && (limits.cc_major == 8 || limits.cc_major == 9) && limits.cc_minor == 0;
}

cudaError_t launch_dmma(const ConvParams& params, const DeviceLimits& limits,
                        cudaStream_t stream) {
  DmmaGeometry geometry{};
  const int64_t plane = params.out_height * params.out_width;
  geometry.plane = FastDivisor::make(static_cast<uint32_t>(plane));
  geometry.out_width = FastDivisor::make(static_cast<uint32_t>(params.out_width));
  geometry.positions = static_cast<int>(params.batch * plane);
  geometry.groups = (geometry.positions + 7) / 8;
  geometry.k_steps = static_cast<int>(
      (params.in_channels * params.kernel_h * params.kernel_w + 3) / 4);
  geometry.paired_stores = plane % 2 == 0 &&
                           reinterpret_cast<uintptr_t>(params.output) % 8 == 0 &&
                           params.output_strides.n % 2 == 0;
  // Bounds checks only where a tap can fall outside the input: padding before, or a window
  // reaching past the last row or column (padding after).
  const bool bounds_checks =
      params.pad_top > 0 || params.pad_left > 0 ||
      (params.out_height - 1) * params.stride_h + (params.kernel_h - 1) * params.dilation_h >=
          params.in_height ||
      (params.out_width - 1) * params.stride_w + (params.kernel_w - 1) * params.dilation_w >=
          params.in_width;
  // A persistent grid sized to what is resident at once (2 CTAs per SM: see the launch bounds),
  // never more warps than groups.
  const int64_t warps_needed = (geometry.groups + kDmmaGroups - 1) / kDmmaGroups;
  int64_t blocks = (warps_needed + kDmmaWarps - 1) / kDmmaWarps;
  const int64_t resident = 2 * int64_t{limits.sm_count};
  if (blocks > resident) {
    blocks = resident;
  }
  const dim3 grid(static_cast<unsigned int>(blocks));
  if (bounds_checks) {
    conv_hardswish_relu_direct_dmma_kernel<true>
        <<<grid, kDmmaThreads, 0, stream>>>(params, geometry);
  } else {
    conv_hardswish_relu_direct_dmma_kernel<false>
        <<<grid, kDmmaThreads, 0, stream>>>(params, geometry);
  }
  return cudaGetLastError();
}

}  // namespace

bool applies(const ConvParams& params) {
  return dense_float32_nchw(params) &&
         params.out_channels <= kMaxOutChannels &&
         params.in_channels * params.kernel_h * params.kernel_w <= kMaxK &&
         params.batch * params.out_height * params.out_width <
             (int64_t{1} << 31) - kThreads;
}

cudaError_t launch(const ConvParams& params, cudaStream_t stream) {
  const int64_t positions = params.batch * params.out_height * params.out_width;
  if (positions * params.out_channels == 0) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (use_dmma(limits)) {
    return launch_dmma(params, limits, stream);
  }
  const dim3 grid(static_cast<unsigned int>((positions + kThreads - 1) / kThreads));
  if (params.kernel_h == 3 && params.kernel_w == 3) {
    conv_hardswish_relu_direct_ffma_kernel<3, 3><<<grid, kThreads, 0, stream>>>(params);
  } else {
    conv_hardswish_relu_direct_ffma_kernel<0, 0><<<grid, kThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

}  // namespace small_problem
}  // namespace fusedconv
