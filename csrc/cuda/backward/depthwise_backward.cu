// Depthwise backward (groups == in_channels == out_channels > 1, dense NCHW x, y and grad_y;
// channels_last in depthwise_backward_channels_last.cu, routed from here):
// grad_input, grad_weight and grad_bias without writing g = dL/dz = grad_y * f'(y) to memory.
// Memory-bound like the forward, so direct loops on CUDA cores, float32 accumulation (float16 /
// bfloat16 rounded once at the store), any stride, padding and dilation, square 3x3, 5x5 and
// 7x7 kernels.
//
// grad_input: a thread per input element gathers the taps that read it, g formed on the fly from
//   grad_y and y at each output they reach (no atomics: each element has one owner).
// grad_weight, grad_bias: a CTA per (channel, slice of output rows) walks its positions once,
//   forming g once per position and accumulating k x k + 1 products in registers; a fixed-order
//   reduction (warp shuffles, one barrier) writes one partial per CTA to the workspace, and a
//   second kernel sums the partials of each channel in order. Bitwise identical from run to run.
// Calls in the vector-row domain (common/depthwise_rows_domain.h) take the row walks instead
// where common/depthwise_candidates.h says (everywhere in it, by default): grad_input by rows
// of vectors (common/depthwise_rows.cuh), the weight pass a vector of output columns per item.
// Outside it, small planes (common/depthwise_planes_domain.h) may take grad_input by planes
// staged in shared memory, where that rule says.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backward/depthwise_backward.h"
#include "backward/depthwise_backward_planes.cuh"
#include "common/configuration.h"
#include "common/depthwise_candidates.h"
#include "common/depthwise_planes_domain.h"
#include "common/depthwise_rows.cuh"
#include "common/device_limits.h"
#include "common/filter_registers.cuh"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_backward {
namespace {

constexpr int kThreads = 256;

struct Geometry {
  FastDivisor channels, in_height, in_width, out_height, out_width;
  uint32_t elements;  // batch x channels x in_height x in_width (dgrad threads)
  int32_t slices;     // CTAs per channel in the weight pass
  int32_t rows_per_slice;  // output rows (of batch x out_height) per slice
  FastDivisor row_vectors;  // output vectors per row (the weight pass by rows)
  bool partials_by_plane;   // partials per (image, channel) plane in NCHW order (one pass)
};

template <typename Storage>
__device__ __forceinline__ float gradient_at(const Storage* grad_y, const Storage* y,
                                             int64_t offset) {
  using Traits = StorageTraits<Storage>;
  return HardSwishReLU<float>::backward(Traits::load(grad_y[offset]), Traits::load(y[offset]));
}

// grad_input: input element (n, c, ih, iw) in NCHW order per thread.
// kStride: 1 or 2 on both axes as a compile-time constant (the divisibility tests become masks
// and shifts), 0 for any other stride read at run time.
template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_dgrad_kernel(const ConvBackwardParams bp, const Geometry g) {
  const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
  if (index >= g.elements) {
    return;
  }
  const ConvParams& p = bp.conv;
  const uint32_t rows = g.in_width.quotient(index);
  const int in_col = static_cast<int>(index - rows * g.in_width.divisor);
  const uint32_t planes = g.in_height.quotient(rows);
  const int in_row = static_cast<int>(rows - planes * g.in_height.divisor);
  const uint32_t n = g.channels.quotient(planes);
  const uint32_t c = planes - n * g.channels.divisor;
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  const int64_t plane = (int64_t{n} * p.out_channels + c) * p.out_height * p.out_width;
  const Storage* __restrict__ grad_y = static_cast<const Storage*>(bp.grad_output) + plane;
  const Storage* __restrict__ y = static_cast<const Storage*>(p.output) + plane;
  const Storage* __restrict__ weight =
      static_cast<const Storage*>(p.weight) + int64_t{c} * p.weight_strides.n;
  using Traits = StorageTraits<Storage>;
  float acc = 0.0f;
#pragma unroll
  for (int r = 0; r < kKernel; ++r) {
    const int row_span = in_row + static_cast<int>(p.pad_top) - r * static_cast<int>(p.dilation_h);
    if (row_span < 0 || row_span % stride_h != 0 || row_span / stride_h >= out_height) {
      continue;
    }
    const int out_row = row_span / stride_h;
#pragma unroll
    for (int s = 0; s < kKernel; ++s) {
      const int col_span =
          in_col + static_cast<int>(p.pad_left) - s * static_cast<int>(p.dilation_w);
      if (col_span < 0 || col_span % stride_w != 0 || col_span / stride_w >= out_width) {
        continue;
      }
      const int64_t offset = int64_t{out_row} * out_width + col_span / stride_w;
      const float w = Traits::load(weight[r * p.weight_strides.h + s * p.weight_strides.w]);
      acc = fmaf(gradient_at(grad_y, y, offset), w, acc);
    }
  }
  static_cast<Storage*>(bp.grad_input)[index] = Traits::store(acc);  // dense NCHW, as x
}

// grad_input by planes (a depthwise candidate): where an output plane fits a warp's share of
// shared memory, the warp forms g = grad_y * f'(y) for the whole plane once (the gather kernel
// above forms it at every tap that reaches an element, about k^2 / stride^2 times), then
// gathers the plane's grad_x elements from shared memory with the gather kernel's taps, order
// and arithmetic: the same bits. A warp per (image, channel) plane.
constexpr int kPlaneWarps = kThreads / 32;
using depthwise_planes::kMaxPlaneElements;  // 4 KB of g a warp, 32 KB a CTA

template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_dgrad_planes_kernel(const ConvBackwardParams bp, int64_t planes) {
  __shared__ float g_plane[kPlaneWarps][kMaxPlaneElements];
  using Traits = StorageTraits<Storage>;
  const ConvParams& p = bp.conv;
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int in_width = static_cast<int>(p.in_width);
  const int out_elements = out_height * out_width;
  const int in_elements = static_cast<int>(p.in_height) * in_width;
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  float* g_values = g_plane[warp];
  for (int64_t plane = int64_t{blockIdx.x} * kPlaneWarps + warp; plane < planes;
       plane += int64_t{gridDim.x} * kPlaneWarps) {
    // Planes are (n, c), dense NCHW, multiplier 1; fewer than 2^30 (applies).
    const uint32_t c = static_cast<uint32_t>(plane) % static_cast<uint32_t>(p.out_channels);
    const Storage* __restrict__ grad_y =
        static_cast<const Storage*>(bp.grad_output) + plane * out_elements;
    const Storage* __restrict__ y = static_cast<const Storage*>(p.output) + plane * out_elements;
#pragma unroll 4
    for (int e = lane; e < out_elements; e += 32) {  // unrolled: several loads in flight a lane
      g_values[e] = gradient_at(grad_y, y, e);
    }
    __syncwarp();
    const Storage* __restrict__ weight =
        static_cast<const Storage*>(p.weight) + int64_t{c} * p.weight_strides.n;
    float filter[kKernel * kKernel];  // in registers for the plane, not loaded per tap
    load_filter<Storage, kKernel>(weight, p.weight_strides, filter);
    Storage* __restrict__ grad_x = static_cast<Storage*>(bp.grad_input) + plane * in_elements;
    for (int e = lane; e < in_elements; e += 32) {
      const int in_row = e / in_width;
      const int in_col = e - in_row * in_width;
      float acc = 0.0f;
#pragma unroll
      for (int r = 0; r < kKernel; ++r) {
        const int row_span =
            in_row + static_cast<int>(p.pad_top) - r * static_cast<int>(p.dilation_h);
        if (row_span < 0 || row_span % stride_h != 0 || row_span / stride_h >= out_height) {
          continue;
        }
        const int out_row = row_span / stride_h;
#pragma unroll
        for (int s = 0; s < kKernel; ++s) {
          const int col_span =
              in_col + static_cast<int>(p.pad_left) - s * static_cast<int>(p.dilation_w);
          if (col_span < 0 || col_span % stride_w != 0 || col_span / stride_w >= out_width) {
            continue;
          }
          acc = fmaf(g_values[out_row * out_width + col_span / stride_w], filter[r * kKernel + s],
                     acc);
        }
      }
      grad_x[e] = Traits::store(acc);
    }
    __syncwarp();  // the plane's g read by every lane before the next plane overwrites it
  }
}

// A weight-pass CTA's sums (the taps, then the bias) into its partial, in a fixed order: each
// warp's shuffle tree per sum, then one barrier, then thread t adds sum t over the warps in order.
template <int kTaps>
__device__ __forceinline__ void write_partials(const float (&acc)[kTaps + 1], float* partial) {
  __shared__ float warp_sums[kThreads / 32][kTaps + 1];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int t = 0; t <= kTaps; ++t) {
    float value = acc[t];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    if (lane == 0) {
      warp_sums[warp][t] = value;
    }
  }
  __syncthreads();
  if (threadIdx.x <= kTaps) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
      total += warp_sums[w][threadIdx.x];
    }
    partial[threadIdx.x] = total;
  }
}

// The output rows [first_row, last_row) of batch x out_height that weight-pass slice `slice`
// walks.
__device__ __forceinline__ void slice_range(const ConvParams& p, const Geometry& g, int slice,
                                            int64_t& first_row, int64_t& last_row) {
  slice_row_range(p.batch * p.out_height, g.rows_per_slice, slice, first_row, last_row);
}

// grad_weight / grad_bias partials: CTA (slice, channel) over output rows
// [slice * rows_per_slice, ...) of batch x out_height.
template <typename Storage, int kKernel>
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_kernel(const ConvBackwardParams bp, const Geometry g, float* partials) {
  constexpr int kTaps = kKernel * kKernel;
  const ConvParams& p = bp.conv;
  const int c = static_cast<int>(blockIdx.y);
  const int slice = static_cast<int>(blockIdx.x);
  int64_t first_row, last_row;
  slice_range(p, g, slice, first_row, last_row);
  const uint32_t positions = static_cast<uint32_t>((last_row - first_row) * p.out_width);
  const int in_height = static_cast<int>(p.in_height), in_width = static_cast<int>(p.in_width);
  using Traits = StorageTraits<Storage>;
  float acc[kTaps + 1];  // the taps, then the bias
#pragma unroll
  for (int t = 0; t <= kTaps; ++t) {
    acc[t] = 0.0f;
  }
  for (uint32_t i = threadIdx.x; i < positions; i += kThreads) {
    const uint32_t local_row = g.out_width.quotient(i);
    const int out_col = static_cast<int>(i - local_row * g.out_width.divisor);
    const uint32_t row = static_cast<uint32_t>(first_row) + local_row;  // < 2^31 (applies)
    const uint32_t n = g.out_height.quotient(row);
    const int out_row = static_cast<int>(row - n * g.out_height.divisor);
    const int64_t out_plane = (int64_t{n} * p.out_channels + c) * p.out_height * p.out_width;
    const float gz = gradient_at(static_cast<const Storage*>(bp.grad_output),
                                 static_cast<const Storage*>(p.output),
                                 out_plane + int64_t{out_row} * p.out_width + out_col);
    acc[kTaps] += gz;
    const Storage* __restrict__ x = static_cast<const Storage*>(p.input) +
                                    (int64_t{n} * p.in_channels + c) * in_height * in_width;
    const int first_in_row = out_row * static_cast<int>(p.stride_h) - static_cast<int>(p.pad_top);
    const int first_in_col =
        out_col * static_cast<int>(p.stride_w) - static_cast<int>(p.pad_left);
#pragma unroll
    for (int r = 0; r < kKernel; ++r) {
      const int in_row = first_in_row + r * static_cast<int>(p.dilation_h);
#pragma unroll
      for (int s = 0; s < kKernel; ++s) {
        const int in_col = first_in_col + s * static_cast<int>(p.dilation_w);
        if (static_cast<unsigned>(in_row) < static_cast<unsigned>(in_height) &&
            static_cast<unsigned>(in_col) < static_cast<unsigned>(in_width)) {
          acc[r * kKernel + s] =
              fmaf(gz, Traits::load(x[int64_t{in_row} * in_width + in_col]), acc[r * kKernel + s]);
        }
      }
    }
  }
  write_partials<kTaps>(acc, partials + (int64_t{c} * g.slices + slice) * (kTaps + 1));
}

// The weight pass by rows: as depthwise_wgrad_kernel, but a thread item is one vector of output
// columns. g is formed from one vector each of grad_y and y, and each kernel row's input window
// is loaded once as vectors (the row domain: 'same' padding, rows of whole vectors).
template <typename Storage, int kBytes, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_rows_kernel(const ConvBackwardParams bp, const Geometry g, float* partials) {
  constexpr int kTaps = kKernel * kKernel;
  constexpr int kCount = depthwise_rows::RowVector<Storage, kBytes>::kCount;
  constexpr int kPad = (kKernel - 1) / 2;
  constexpr int kVectors = depthwise_rows::window_vectors(kCount, kKernel, kStride);
  const ConvParams& p = bp.conv;
  const int c = static_cast<int>(blockIdx.y);
  const int slice = static_cast<int>(blockIdx.x);
  int64_t first_row, last_row;
  slice_range(p, g, slice, first_row, last_row);
  const uint32_t items = static_cast<uint32_t>((last_row - first_row) * g.row_vectors.divisor);
  const int in_height = static_cast<int>(p.in_height), in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const Storage* __restrict__ grad_y = static_cast<const Storage*>(bp.grad_output);
  const Storage* __restrict__ y = static_cast<const Storage*>(p.output);
  float acc[kTaps + 1];  // the taps, then the bias
#pragma unroll
  for (int t = 0; t <= kTaps; ++t) {
    acc[t] = 0.0f;
  }
  for (uint32_t i = threadIdx.x; i < items; i += kThreads) {
    uint32_t vector;
    const uint32_t row = static_cast<uint32_t>(first_row) + g.row_vectors.divide(i, vector);
    uint32_t out_row;
    const uint32_t n = g.out_height.divide(row, out_row);
    const int64_t out_offset =
        ((int64_t{n} * p.out_channels + c) * p.out_height + out_row) * out_width;
    const int first_column = static_cast<int>(vector) * kCount;
    float gz[kCount];
    bool loaded[1];
    depthwise_rows::load_window<Storage, kBytes, 1, true>(
        grad_y + out_offset, y + out_offset, first_column, out_width, gz, loaded);
#pragma unroll
    for (int e = 0; e < kCount; ++e) {
      acc[kTaps] += gz[e];
    }
    const Storage* __restrict__ x = static_cast<const Storage*>(p.input) +
                                    (int64_t{n} * p.in_channels + c) * in_height * in_width;
#pragma unroll
    for (int r = 0; r < kKernel; ++r) {
      const int in_row = static_cast<int>(out_row) * kStride - kPad + r;
      if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
        continue;  // padded rows: no tap
      }
      float window[kVectors * kCount];
      bool inside[kVectors];
      depthwise_rows::load_window<Storage, kBytes, kVectors, false>(
          x + int64_t{in_row} * in_width, nullptr, first_column * kStride - kCount, in_width,
          window, inside);
#pragma unroll
      for (int t = 0; t < kKernel; ++t) {
#pragma unroll
        for (int e = 0; e < kCount; ++e) {
          const int at = kCount + e * kStride + t - kPad;
          if (depthwise_rows::on_row<kCount, kStride>(at, inside)) {
            acc[r * kKernel + t] = fmaf(gz[e], window[at], acc[r * kKernel + t]);
          }
        }
      }
    }
  }
  write_partials<kTaps>(acc, partials + (int64_t{c} * g.slices + slice) * (kTaps + 1));
}

// grad_weight[c, 0, r, s] and grad_bias[c]: the partials of channel c summed in slice order.
template <typename Storage, int kKernel>
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_reduce_kernel(const ConvBackwardParams bp, const Geometry g,
                                  const float* partials) {
  constexpr int kTaps = kKernel * kKernel;
  const int64_t index = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  const int64_t channels = bp.conv.out_channels;
  if (index >= channels * (kTaps + 1)) {
    return;
  }
  const int64_t c = index / (kTaps + 1);
  const int tap = static_cast<int>(index - c * (kTaps + 1));
  // Partials [channel][slice][sum], or [image][channel][sum] from the one pass by planes.
  const int64_t channel_stride = g.partials_by_plane ? kTaps + 1 : g.slices * (kTaps + 1);
  const int64_t slice_stride = g.partials_by_plane ? channels * (kTaps + 1) : kTaps + 1;
  const float* in = partials + c * channel_stride + tap;
  float total = 0.0f;
  for (int slice = 0; slice < g.slices; ++slice) {
    total += in[slice * slice_stride];
  }
  using Traits = StorageTraits<Storage>;
  if (tap < kTaps && bp.grad_weight != nullptr) {
    static_cast<Storage*>(bp.grad_weight)[c * kTaps + tap] = Traits::store(total);  // dense
  } else if (tap == kTaps && bp.grad_bias != nullptr) {
    static_cast<Storage*>(bp.grad_bias)[c] = Traits::store(total);
  }
}

// fn(std::integral_constant<int, kStride>) for the grad_input kernels' compiled strides: 1, 2,
// or 0 (read at run time).
template <typename Fn>
void dispatch_stride(int stride, Fn&& fn) {
  if (stride == 1) {
    fn(std::integral_constant<int, 1>{});
  } else if (stride == 2) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, 0>{});
  }
}

// Slices per channel for the weight pass (a CTA per channel and slice).
void slice_rows(const ConvParams& p, const DeviceLimits& limits, int32_t& slices,
                int32_t& rows_per_slice) {
  const int64_t wanted = (int64_t{limits.sm_count} * kSlicesPerSm + p.out_channels - 1) /
                         p.out_channels;
  split_rows(p.batch * p.out_height, p.out_width, wanted, kMinPositionsPerSlice, slices,
             rows_per_slice);
}

// Whether the row walks take the call (rows.kernel == kKernel always where row_geometry holds).
bool rows_take(const ConvParams& p, depthwise_rows::RowGeometry& rows) {
  return run_candidate(DepthwiseCandidate::kRowsBackward, p) &&
         depthwise_rows::row_geometry(p, rows) && rows.kernel == p.kernel_h;
}

// Whether the one pass by blocks of planes takes the call (outside the row walks).
bool planes_take(const ConvParams& p) {
  depthwise_rows::RowGeometry rows;  // the switch first: off by default, no row geometry then
  return run_candidate(DepthwiseCandidate::kPlanesBackward, p) &&
         depthwise_backward_planes::applies(p) && !rows_take(p, rows);
}

template <typename Storage, int kKernel>
cudaError_t launch_planes(const ConvBackwardParams& bp, Geometry g, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  const bool params_wanted = bp.grad_weight != nullptr || bp.grad_bias != nullptr;
  float* partials = params_wanted ? static_cast<float*>(bp.workspace) : nullptr;
  const int stride = p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2)
                         ? static_cast<int>(p.stride_h)
                         : 0;
  cudaError_t status = cudaSuccess;
  if (p.batch * p.in_channels > 0) {  // an empty batch: no planes; the reduce writes zeros
    dispatch_stride(stride, [&](auto compiled) {
      status = depthwise_backward_planes::launch<Storage, kKernel, decltype(compiled)::value>(
          bp, partials, stream);
    });
  }
  if (status != cudaSuccess || !params_wanted) {
    return status;
  }
  g.slices = static_cast<int32_t>(p.batch);
  g.partials_by_plane = true;
  const int64_t outputs = p.out_channels * (kKernel * kKernel + 1);
  const uint32_t blocks = static_cast<uint32_t>((outputs + kThreads - 1) / kThreads);
  depthwise_wgrad_reduce_kernel<Storage, kKernel><<<blocks, kThreads, 0, stream>>>(bp, g,
                                                                                  partials);
  return cudaGetLastError();
}

template <typename Storage, int kKernel>
cudaError_t launch_typed(const ConvBackwardParams& bp, Geometry g, const DeviceLimits& limits,
                         cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  if (planes_take(p)) {
    return launch_planes<Storage, kKernel>(bp, g, stream);
  }
  depthwise_rows::RowGeometry rows;
  // rows.kernel == kKernel always; tested so that the partials' size (kKernel) is seen to hold.
  const bool by_rows = rows_take(p, rows) && rows.kernel == kKernel;
  if (bp.grad_input != nullptr && g.elements > 0 && by_rows &&
      depthwise_rows::vector_aligned(rows, bp.grad_input, bp.grad_output, p.output)) {
    const cudaError_t status = depthwise_rows::launch_input_gradient<Storage>(bp, rows, stream);
    if (status != cudaSuccess) {
      return status;
    }
  } else if (bp.grad_input != nullptr && g.elements > 0) {  // empty input planes: nothing to do
    const bool square = p.stride_h == p.stride_w;
    const int stride =
        square && (p.stride_h == 1 || p.stride_h == 2) ? static_cast<int>(p.stride_h) : 0;
    if (run_candidate(DepthwiseCandidate::kPlanesGradInput, p) &&
        depthwise_planes::grad_input_applies(p)) {
      const int64_t planes = p.batch * p.in_channels;
      const uint32_t blocks = static_cast<uint32_t>((planes + kPlaneWarps - 1) / kPlaneWarps);
      dispatch_stride(stride, [&](auto compiled) {
        depthwise_dgrad_planes_kernel<Storage, kKernel, decltype(compiled)::value>
            <<<blocks, kThreads, 0, stream>>>(bp, planes);
      });
    } else {
      const uint32_t blocks = (g.elements + kThreads - 1) / kThreads;
      dispatch_stride(stride, [&](auto compiled) {
        depthwise_dgrad_kernel<Storage, kKernel, decltype(compiled)::value>
            <<<blocks, kThreads, 0, stream>>>(bp, g);
      });
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) {
      return status;
    }
  }
  if (bp.grad_weight == nullptr && bp.grad_bias == nullptr) {
    return cudaSuccess;
  }
  slice_rows(p, limits, g.slices, g.rows_per_slice);
  float* partials = static_cast<float*>(bp.workspace);
  const dim3 grid(static_cast<uint32_t>(g.slices), static_cast<uint32_t>(p.out_channels));
  cudaError_t status = cudaSuccess;
  if (by_rows && depthwise_rows::vector_aligned(rows, p.input, bp.grad_output, p.output)) {
    const int64_t count = rows.vector_bytes / element_bytes(p.dtype);
    g.row_vectors = FastDivisor::make(static_cast<uint32_t>(p.out_width / count));
    status = depthwise_rows::dispatch_rows<Storage>(rows, [&](auto bytes, auto kernel,
                                                               auto stride) {
      depthwise_wgrad_rows_kernel<Storage, decltype(bytes)::value, decltype(kernel)::value,
                                  decltype(stride)::value>
          <<<grid, kThreads, 0, stream>>>(bp, g, partials);
      return cudaGetLastError();
    });
  } else {
    depthwise_wgrad_kernel<Storage, kKernel><<<grid, kThreads, 0, stream>>>(bp, g, partials);
    status = cudaGetLastError();
  }
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t outputs = p.out_channels * (kKernel * kKernel + 1);
  const uint32_t blocks = static_cast<uint32_t>((outputs + kThreads - 1) / kThreads);
  depthwise_wgrad_reduce_kernel<Storage, kKernel><<<blocks, kThreads, 0, stream>>>(bp, g,
                                                                                  partials);
  return cudaGetLastError();
}

// Whether x and y are dense NCHW (this file's kernels) rather than channels_last.
bool dense_nchw_tensors(const ConvParams& p) {
  return is_dense_nchw(p.input_strides, p.in_channels, p.in_height, p.in_width) &&
         is_dense_nchw(p.output_strides, p.out_channels, p.out_height, p.out_width);
}

}  // namespace

bool applies(const ConvParams& p) {
  const bool square = p.kernel_h == p.kernel_w &&
                      (p.kernel_h == 3 || p.kernel_h == 5 || p.kernel_h == 7);
  if (!square || p.dtype == DType::kFloat64 || p.groups <= 1 || p.groups != p.in_channels ||
      p.out_channels != p.in_channels || p.out_channels > 65535) {
    return false;
  }
  if (!dense_nchw_tensors(p) && !channels_last::applies(p)) {
    return false;
  }
  // 32-bit row and column arithmetic: every reach, padding included, and the index spaces.
  constexpr int64_t kIntLimit = int64_t{1} << 30;  // margins for the sums below
  return p.batch * p.in_channels * p.in_height * p.in_width < kIntLimit &&
         p.batch * p.out_height * p.out_width < kIntLimit && p.stride_h < kIntLimit &&
         p.stride_w < kIntLimit && p.dilation_h * p.kernel_h < kIntLimit &&
         p.dilation_w * p.kernel_w < kIntLimit && p.pad_top < kIntLimit &&
         p.pad_left < kIntLimit && p.out_height * p.stride_h < kIntLimit &&
         p.out_width * p.stride_w < kIntLimit;
}

cudaError_t workspace_bytes(const ConvParams& p, bool params_wanted, int64_t& bytes) {
  if (!dense_nchw_tensors(p)) {
    return channels_last::workspace_bytes(p, params_wanted, bytes);
  }
  bytes = 0;
  if (!params_wanted) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  int32_t slices = 0, rows_per_slice = 0;
  slice_rows(p, limits, slices, rows_per_slice);
  const int64_t partials = planes_take(p) ? p.batch : slices;  // a partial per plane or slice
  bytes = p.out_channels * partials * (p.kernel_h * p.kernel_w + 1) * int64_t{sizeof(float)};
  return cudaSuccess;
}

cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  if (!dense_nchw_tensors(p)) {
    return channels_last::launch(bp, stream);
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  Geometry g{};
  g.channels = FastDivisor::make(static_cast<uint32_t>(p.in_channels));
  g.in_height = FastDivisor::make(static_cast<uint32_t>(p.in_height));
  g.in_width = FastDivisor::make(static_cast<uint32_t>(p.in_width));
  g.out_height = FastDivisor::make(static_cast<uint32_t>(p.out_height));
  g.out_width = FastDivisor::make(static_cast<uint32_t>(p.out_width));
  g.elements = static_cast<uint32_t>(p.batch * p.in_channels * p.in_height * p.in_width);
  return dispatch_dtype(p.dtype, [&](auto zero) {
    using Storage = decltype(zero);
    if constexpr (sizeof(Storage) == 8) {
      return cudaErrorInvalidValue;  // applies leaves float64 to the floor
    } else if (p.kernel_h == 3) {
      return launch_typed<Storage, 3>(bp, g, limits, stream);
    } else if (p.kernel_h == 5) {
      return launch_typed<Storage, 5>(bp, g, limits, stream);
    } else {
      return launch_typed<Storage, 7>(bp, g, limits, stream);
    }
  });
}

}  // namespace depthwise_backward
}  // namespace fusedconv
