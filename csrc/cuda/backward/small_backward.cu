// Small-problem backward (issue 21: a training step of KernelBench's v0 at host speed):
// grad_input, grad_weight and grad_bias of the small-problem forward's domain in one launch. The
// floor runs the g pass, cuDNN's dgrad and wgrad kernels and their helpers here, with ATen's
// convolution_backward host time on top, against a few microseconds of arithmetic.
//
// CTAs take one of two roles by index:
// - weight role (the first out_channels x splits CTAs, where grad_weight or grad_bias is
//   wanted): CTA (co, split) walks a run of output positions, forms g = grad_y * f'(y) once per
//   position and adds g x x into in_channels x taps weight sums and one bias sum per thread. A
//   fixed-order block reduction leaves one partial per CTA in the workspace; the CTA that
//   finishes a channel last (a counter per channel, zeroed by a memset before the launch) adds
//   the channel's partials in split order and writes grad_weight[co] and grad_bias[co].
// - input role (the rest, where grad_input is wanted): a thread per input pixel (n, ih, iw)
//   gathers grad_x for every input channel: for each output channel and tap whose output lies on
//   the plane, g (formed where read) times that tap's weights, staged in shared memory. Taps off
//   the output plane are skipped, not multiplied by zero (a non-finite weight there stays out).
// Every sum's order is fixed by the shape and the SM count: bitwise deterministic run to run.
// float32 FMAs throughout: float32 accuracy in either precision mode, as the forward.
// 3x3 stride-1 layers go by bands instead wherever small_backward_bands::applies (launch and
// workspace_bytes below defer to it); that kernel multiplies the zeros off the plane, as cuDNN.
#include "backward/small_backward.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backward/small_backward_bands.h"
#include "common/configuration.h"
#include "common/device_limits.h"
#include "fusedconv/activation.h"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace small_backward {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxOutChannels = 16;
constexpr int kMaxK = 32;          // in_channels x taps
constexpr int kBiasSlot = kMaxK;   // a partial: the weight sums, then the bias sum
constexpr int kSlots = kMaxK + 1;
constexpr int kMinPositionsPerThread = 4;
constexpr int kPositionBatch = 4;  // the weight role's positions a step

struct Geometry {
  FastDivisor out_plane, out_width, in_plane, in_width;
  int32_t splits;       // weight-role CTAs per output channel
  int32_t weight_ctas;  // out_channels x splits; 0 where no parameter gradient is wanted
  int32_t per_split;    // output positions per weight-role CTA
  int32_t positions;    // batch x out_height x out_width
  int32_t pixels;       // batch x in_height x in_width
};

// Weight-role CTAs per output channel: about two waves of the SMs between the channels, at least
// kMinPositionsPerThread positions a thread, and no empty split.
int32_t splits_of(const ConvParams& p, const DeviceLimits& limits) {
  const int64_t positions = p.batch * p.out_height * p.out_width;
  const int64_t wanted = (2 * int64_t{limits.sm_count} + p.out_channels - 1) / p.out_channels;
  const int64_t most = std::max<int64_t>(1, positions / (kThreads * kMinPositionsPerThread));
  const int64_t splits = std::max<int64_t>(1, std::min(wanted, most));
  const int64_t per_split = (positions + splits - 1) / splits;
  return static_cast<int32_t>((positions + per_split - 1) / per_split);
}

// The workspace: partials [out_channels][splits][kSlots] floats, then a counter per channel.
int64_t counters_offset(const ConvParams& p, int32_t splits) {
  return (p.out_channels * splits * kSlots * int64_t{4} + 15) / 16 * 16;
}

// Where tap k (= (ci x kernel_h + r) x kernel_w + s) reads x, relative to the position's
// top-left input element: the row and column shifts and the element offset in the image.
struct Taps {
  int row[kMaxK], col[kMaxK];
  int64_t offset[kMaxK];  // row x in_width may pass 2^31 where dilation is large
};

template <int kKernelH, int kKernelW>
__device__ __forceinline__ void tap_of(int k, const ConvParams& p, const Taps& taps, int& row,
                                       int& col, int64_t& offset) {
  if constexpr (kKernelH > 0) {  // k is a constant once unrolled
    constexpr int kTaps = kKernelH * kKernelW;
    const int ci = k / kTaps, r = k % kTaps / kKernelW, s = k % kKernelW;
    row = r * static_cast<int>(p.dilation_h);
    col = s * static_cast<int>(p.dilation_w);
    offset = ci * p.in_height * p.in_width + row * p.in_width + col;
  } else {
    row = taps.row[k];
    col = taps.col[k];
    offset = taps.offset[k];
  }
}

// The output index `span` / stride where it is whole and on [0, extent).
__device__ __forceinline__ bool on_output(int span, int stride, int extent, int& index) {
  if (stride == 1) {
    index = span;
  } else {
    if (span < 0 || span % stride != 0) {
      return false;
    }
    index = span / stride;
  }
  return static_cast<unsigned>(index) < static_cast<unsigned>(extent);
}

template <int kKernelH, int kKernelW>
__device__ __forceinline__ void weight_role(const ConvBackwardParams& bp, const Geometry& geo,
                                            float* partials, unsigned int* counters) {
  __shared__ Taps taps;
  __shared__ float warp_sums[kWarps][kSlots];
  __shared__ bool last;
  const ConvParams& p = bp.conv;
  const int kernel_h = kKernelH > 0 ? kKernelH : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernelW > 0 ? kKernelW : static_cast<int>(p.kernel_w);
  const int k_count = static_cast<int>(p.in_channels) * kernel_h * kernel_w;
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  if constexpr (kKernelH == 0) {
    const int k = static_cast<int>(threadIdx.x);
    if (k < k_count) {
      const int ci = k / (kernel_h * kernel_w), r = k / kernel_w % kernel_h, s = k % kernel_w;
      taps.row[k] = r * static_cast<int>(p.dilation_h);
      taps.col[k] = s * static_cast<int>(p.dilation_w);
      taps.offset[k] = ci * p.in_height * p.in_width + taps.row[k] * p.in_width + taps.col[k];
    }
    __syncthreads();
  }
  const int co = static_cast<int>(blockIdx.x) / geo.splits;
  const int split = static_cast<int>(blockIdx.x) - co * geo.splits;
  const int first = split * geo.per_split;
  const int end = min(first + geo.per_split, geo.positions);
  const float* __restrict__ grad_y = static_cast<const float*>(bp.grad_output);
  const float* __restrict__ y = static_cast<const float*>(p.output);
  const float* __restrict__ x = static_cast<const float*>(p.input);
  const int64_t out_plane = geo.out_plane.divisor;
  const int64_t image_elements = p.in_channels * p.in_height * p.in_width;

  // At most kMaxK sums, whole channels of taps for a compile-time kernel.
  constexpr int kTaps = kKernelH > 0 ? kKernelH * kKernelW : 1;
  constexpr int kMaxSums = kMaxK / kTaps * kTaps;
  float acc[kMaxSums];
#pragma unroll
  for (int k = 0; k < kMaxSums; ++k) {
    acc[k] = 0.0f;
  }
  float acc_bias = 0.0f;
  // kPositionBatch positions a step, their g loads issued together (one memory latency a step,
  // not one a position); each thread still takes its positions in order, q, q + kThreads, ...
  for (int q0 = first + static_cast<int>(threadIdx.x); q0 < end;
       q0 += kThreads * kPositionBatch) {
    float g[kPositionBatch];
#pragma unroll
    for (int j = 0; j < kPositionBatch; ++j) {
      const int q = q0 + j * kThreads;
      g[j] = 0.0f;
      if (q < end) {
        uint32_t rem;
        const uint32_t n = geo.out_plane.divide(static_cast<uint32_t>(q), rem);
        const int64_t out_index = (int64_t{n} * p.out_channels + co) * out_plane + rem;
        g[j] = HardSwishReLU<float>::backward(grad_y[out_index], y[out_index]);
      }
    }
#pragma unroll
    for (int j = 0; j < kPositionBatch; ++j) {
      const int q = q0 + j * kThreads;
      if (q >= end) {
        break;
      }
      uint32_t rem, out_col;
      const uint32_t n = geo.out_plane.divide(static_cast<uint32_t>(q), rem);
      const uint32_t out_row = geo.out_width.divide(rem, out_col);
      acc_bias += g[j];
      const int top = static_cast<int>(out_row) * static_cast<int>(p.stride_h) -
                      static_cast<int>(p.pad_top);
      const int left = static_cast<int>(out_col) * static_cast<int>(p.stride_w) -
                       static_cast<int>(p.pad_left);
      const int64_t corner = int64_t{n} * image_elements + int64_t{top} * in_width + left;
#pragma unroll
      for (int k = 0; k < kMaxSums; ++k) {
        if (k < k_count) {
          int row, col;
          int64_t offset;
          tap_of<kKernelH, kKernelW>(k, p, taps, row, col, offset);
          if (static_cast<unsigned>(top + row) < static_cast<unsigned>(in_height) &&
              static_cast<unsigned>(left + col) < static_cast<unsigned>(in_width)) {
            acc[k] = fmaf(g[j], x[corner + offset], acc[k]);
          }
        }
      }
    }
  }

  // The CTA's partial: each sum by a warp shuffle tree, then over the warps in order.
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    if ((k < kMaxSums && k < k_count) || k == kBiasSlot) {
      float value = k == kBiasSlot ? acc_bias : acc[k < kMaxSums ? k : 0];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        value += __shfl_down_sync(0xffffffffu, value, offset);
      }
      if (lane == 0) {
        warp_sums[warp][k] = value;
      }
    }
  }
  __syncthreads();
  const int slot = static_cast<int>(threadIdx.x);
  const bool sums_slot = slot < k_count || slot == kBiasSlot;
  float* channel_partials = partials + int64_t{co} * geo.splits * kSlots;
  if (sums_slot) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      total += warp_sums[w][slot];
    }
    channel_partials[split * kSlots + slot] = total;
  }
  // The last CTA of the channel adds its partials: each writer's store made visible before the
  // count (the threadFenceReduction pattern), the reader's loads from L2.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counters + co, 1u) == static_cast<unsigned int>(geo.splits - 1);
  }
  __syncthreads();
  if (!last || !sums_slot) {
    return;
  }
  __threadfence();
  float total = 0.0f;
  for (int s = 0; s < geo.splits; ++s) {
    total += __ldcg(channel_partials + s * kSlots + slot);
  }
  if (slot == kBiasSlot) {
    if (bp.grad_bias != nullptr) {
      static_cast<float*>(bp.grad_bias)[co] = total;
    }
  } else if (bp.grad_weight != nullptr) {
    static_cast<float*>(bp.grad_weight)[int64_t{co} * k_count + slot] = total;
  }
}

template <int kKernelH, int kKernelW>
__device__ __forceinline__ void input_role(const ConvBackwardParams& bp, const Geometry& geo,
                                           int block) {
  __shared__ float weights[kMaxOutChannels * kMaxK];  // dense [co][ci][r][s], as grad_weight
  const ConvParams& p = bp.conv;
  const int kernel_h = kKernelH > 0 ? kKernelH : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernelW > 0 ? kKernelW : static_cast<int>(p.kernel_w);
  const int in_channels = static_cast<int>(p.in_channels);
  const int out_channels = static_cast<int>(p.out_channels);
  const int k_count = in_channels * kernel_h * kernel_w;
  const float* __restrict__ weight = static_cast<const float*>(p.weight);
  for (int i = static_cast<int>(threadIdx.x); i < out_channels * k_count; i += kThreads) {
    const int co = i / k_count, k = i - co * k_count;
    const int ci = k / (kernel_h * kernel_w), rs = k - ci * kernel_h * kernel_w;
    weights[i] = weight[co * p.weight_strides.n + ci * p.weight_strides.c +
                        rs / kernel_w * p.weight_strides.h + rs % kernel_w * p.weight_strides.w];
  }
  __syncthreads();
  const int pixel = block * kThreads + static_cast<int>(threadIdx.x);
  if (pixel >= geo.pixels) {
    return;
  }
  uint32_t rem, in_col;
  const uint32_t n = geo.in_plane.divide(static_cast<uint32_t>(pixel), rem);
  const uint32_t in_row = geo.in_width.divide(rem, in_col);
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int64_t out_plane = geo.out_plane.divisor;
  const float* __restrict__ grad_y = static_cast<const float*>(bp.grad_output);
  const float* __restrict__ y = static_cast<const float*>(p.output);

  // One sum per input channel: at most kMaxK / taps of them.
  constexpr int kMaxChannels = kKernelH > 0 ? kMaxK / (kKernelH * kKernelW) : kMaxK;
  float acc[kMaxChannels];
#pragma unroll
  for (int ci = 0; ci < kMaxChannels; ++ci) {
    acc[ci] = 0.0f;
  }
  if constexpr (kKernelH > 0) {
    // Where each tap's output lies on the plane, found once for every output channel; then per
    // channel all taps' loads are issued before any is used (one memory latency a channel, not
    // one a tap: the loop was latency-bound).
    constexpr int kTaps = kKernelH * kKernelW;
    int out_row[kKernelH], out_col[kKernelW];
    bool row_on[kKernelH], col_on[kKernelW];
#pragma unroll
    for (int r = 0; r < kKernelH; ++r) {
      row_on[r] = on_output(static_cast<int>(in_row) + static_cast<int>(p.pad_top) -
                                r * static_cast<int>(p.dilation_h),
                            static_cast<int>(p.stride_h), out_height, out_row[r]);
    }
#pragma unroll
    for (int s = 0; s < kKernelW; ++s) {
      col_on[s] = on_output(static_cast<int>(in_col) + static_cast<int>(p.pad_left) -
                                s * static_cast<int>(p.dilation_w),
                            static_cast<int>(p.stride_w), out_width, out_col[s]);
    }
    bool tap_on[kTaps];
    int tap_offset[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      tap_on[t] = row_on[t / kKernelW] && col_on[t % kKernelW];
      tap_offset[t] = tap_on[t] ? out_row[t / kKernelW] * out_width + out_col[t % kKernelW] : 0;
    }
#pragma unroll 2
    for (int co = 0; co < out_channels; ++co) {
      const int64_t plane = (int64_t{n} * out_channels + co) * out_plane;
      float grad_values[kTaps], y_values[kTaps];
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        grad_values[t] = tap_on[t] ? grad_y[plane + tap_offset[t]] : 0.0f;
        y_values[t] = tap_on[t] ? y[plane + tap_offset[t]] : 0.0f;
      }
      const float* channel_weights = weights + co * k_count;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        if (tap_on[t]) {  // taps off the plane skipped: a non-finite weight stays out
          const float g = HardSwishReLU<float>::backward(grad_values[t], y_values[t]);
#pragma unroll
          for (int ci = 0; ci < kMaxChannels; ++ci) {
            if (ci < in_channels) {
              acc[ci] = fmaf(g, channel_weights[ci * kTaps + t], acc[ci]);
            }
          }
        }
      }
    }
  } else {
    for (int co = 0; co < out_channels; ++co) {
      const int64_t plane = (int64_t{n} * out_channels + co) * out_plane;
      const float* channel_weights = weights + co * k_count;
#pragma unroll
      for (int r = 0; r < kernel_h; ++r) {
        int out_row;
        if (!on_output(static_cast<int>(in_row) + static_cast<int>(p.pad_top) -
                           r * static_cast<int>(p.dilation_h),
                       static_cast<int>(p.stride_h), out_height, out_row)) {
          continue;
        }
#pragma unroll
        for (int s = 0; s < kernel_w; ++s) {
          int out_col;
          if (!on_output(static_cast<int>(in_col) + static_cast<int>(p.pad_left) -
                             s * static_cast<int>(p.dilation_w),
                         static_cast<int>(p.stride_w), out_width, out_col)) {
            continue;
          }
          const int64_t at = plane + int64_t{out_row} * out_width + out_col;
          const float g = HardSwishReLU<float>::backward(grad_y[at], y[at]);
          const float* tap_weights = channel_weights + r * kernel_w + s;
#pragma unroll
          for (int ci = 0; ci < kMaxChannels; ++ci) {
            if (ci < in_channels) {
              acc[ci] = fmaf(g, tap_weights[ci * kernel_h * kernel_w], acc[ci]);
            }
          }
        }
      }
    }
  }
  float* __restrict__ grad_x = static_cast<float*>(bp.grad_input);
  const int64_t in_plane = geo.in_plane.divisor;
#pragma unroll
  for (int ci = 0; ci < kMaxChannels; ++ci) {
    if (ci < in_channels) {
      grad_x[(int64_t{n} * in_channels + ci) * in_plane + rem] = acc[ci];
    }
  }
}

// The first geo.weight_ctas CTAs take the weight role, the rest the input role.
template <int kKernelH, int kKernelW>
__global__ void __launch_bounds__(kThreads)
    small_backward_kernel(const ConvBackwardParams bp, const Geometry geo, float* partials,
                          unsigned int* counters) {
  const int block = static_cast<int>(blockIdx.x);
  if (block < geo.weight_ctas) {
    weight_role<kKernelH, kKernelW>(bp, geo, partials, counters);
  } else {
    input_role<kKernelH, kKernelW>(bp, geo, block - geo.weight_ctas);
  }
}

}  // namespace

// The kernel's row and column arithmetic is 32-bit: every span it forms (an output row times
// the stride, a padded input row, a dilated tap) must fit; element offsets are 64-bit.
bool applies(const ConvParams& p) {
  constexpr int64_t kIndexLimit = (int64_t{1} << 31) - kThreads * kPositionBatch;  // q0's step
  return dense_float32_nchw(p) && p.out_channels <= kMaxOutChannels &&
         p.in_channels * p.kernel_h * p.kernel_w <= kMaxK &&
         p.batch * p.out_height * p.out_width < kIndexLimit &&
         p.batch * p.in_height * p.in_width < kIndexLimit &&
         p.dilation_h * p.kernel_h < kIndexLimit && p.dilation_w * p.kernel_w < kIndexLimit &&
         p.out_height * p.stride_h + p.pad_top < kIndexLimit &&
         p.out_width * p.stride_w + p.pad_left < kIndexLimit &&
         p.out_height * p.stride_h + p.dilation_h * p.kernel_h < kIndexLimit &&
         p.out_width * p.stride_w + p.dilation_w * p.kernel_w < kIndexLimit &&
         p.in_height + p.pad_top < kIndexLimit && p.in_width + p.pad_left < kIndexLimit;
}

cudaError_t workspace_bytes(const ConvParams& p, bool params_wanted, int64_t& bytes) {
  if (small_backward_bands::applies(p)) {
    return small_backward_bands::workspace_bytes(p, params_wanted, bytes);
  }
  bytes = 0;
  if (!params_wanted) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status == cudaSuccess) {
    bytes = counters_offset(p, splits_of(p, limits)) + p.out_channels * int64_t{4};
  }
  return status;
}

cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  if (p.batch * p.out_channels * p.out_height * p.out_width == 0) {
    return cudaErrorInvalidValue;  // the plan gives an empty output no launch
  }
  if (small_backward_bands::applies(p)) {  // 3x3 stride 1: 1.5-2.4x faster (its file says)
    return small_backward_bands::launch(bp, stream);
  }
  DeviceLimits limits{};
  cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  Geometry geo{};
  geo.out_plane = FastDivisor::make(static_cast<uint32_t>(p.out_height * p.out_width));
  geo.out_width = FastDivisor::make(static_cast<uint32_t>(p.out_width));
  geo.in_plane = FastDivisor::make(static_cast<uint32_t>(std::max<int64_t>(
      1, p.in_height * p.in_width)));
  geo.in_width = FastDivisor::make(static_cast<uint32_t>(std::max<int64_t>(1, p.in_width)));
  geo.positions = static_cast<int32_t>(p.batch * p.out_height * p.out_width);
  geo.pixels = static_cast<int32_t>(p.batch * p.in_height * p.in_width);
  geo.splits = splits_of(p, limits);
  geo.per_split = (geo.positions + geo.splits - 1) / geo.splits;
  float* partials = nullptr;
  unsigned int* counters = nullptr;
  if (bp.grad_weight != nullptr || bp.grad_bias != nullptr) {
    if (bp.workspace == nullptr) {
      return cudaErrorInvalidValue;
    }
    geo.weight_ctas = static_cast<int32_t>(p.out_channels) * geo.splits;
    partials = static_cast<float*>(bp.workspace);
    counters = reinterpret_cast<unsigned int*>(static_cast<char*>(bp.workspace) +
                                               counters_offset(p, geo.splits));
    status = cudaMemsetAsync(counters, 0, p.out_channels * sizeof(unsigned int), stream);
    if (status != cudaSuccess) {
      return status;
    }
  }
  const int64_t input_ctas =
      bp.grad_input != nullptr ? (int64_t{geo.pixels} + kThreads - 1) / kThreads : 0;
  const int64_t blocks = geo.weight_ctas + input_ctas;
  if (blocks == 0) {
    return cudaSuccess;
  }
  const dim3 grid(static_cast<uint32_t>(blocks));
  if (p.kernel_h == 3 && p.kernel_w == 3) {
    small_backward_kernel<3, 3><<<grid, kThreads, 0, stream>>>(bp, geo, partials, counters);
  } else if (p.kernel_h == 1 && p.kernel_w == 1) {  // no tap table: the run-time one spills
    small_backward_kernel<1, 1><<<grid, kThreads, 0, stream>>>(bp, geo, partials, counters);
  } else {
    small_backward_kernel<0, 0><<<grid, kThreads, 0, stream>>>(bp, geo, partials, counters);
  }
  return cudaGetLastError();
}

}  // namespace small_backward
}  // namespace fusedconv
