// Depthwise forward (groups == in_channels > 1, out_channels = multiplier x in_channels):
// convolution, bias, hardswish and relu in one launch, no workspace, every dtype. Memory-bound
// (k x k products per output), so a direct convolution on CUDA cores: float32 in float32 FMAs
// (float32 accuracy in either precision mode, as PyTorch's own depthwise kernel), float64 in
// float64, float16 / bfloat16 accumulated in float32 and rounded once at the store.
//
// Each thread computes kStrip consecutive output columns of one (image, output channel, output
// row). It walks the kernel's rows; for each one it loads the input span its strip covers once
// into registers ((kStrip - 1) x stride + kernel columns), so neighbouring outputs share loads.
// Mapping: in NCHW the threads of a warp take consecutive strips of a row (each loads a
// contiguous span); in channels_last consecutive output channels at one position (each load
// instruction of the warp reads one contiguous run of channels). The kernel size and stride are
// template arguments for 3x3 / 5x5 at stride 1 / 2 without dilation (unrolled spans in
// registers); every other geometry takes the run-time variant, which loads per tap.
// channels_last with multiplier 1, whole 16-byte channel vectors and an unrolled geometry takes
// the vector kernel instead: a thread per kStrip columns x one 16-byte vector of channels.
// NCHW rows of whole vectors with 'same' padding take the vector-row walk
// (common/depthwise_rows.cuh) where common/depthwise_candidates.h says (by default, always);
// what they leave, in input planes that fit a warp's shared memory, the planes walk
// (depthwise_planes.cuh) where it says.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/depthwise_candidates.h"
#include "common/depthwise_rows.cuh"
#include "common/staged_filters.cuh"
#include "forward/depthwise_planes.cuh"
#include "forward/families.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise {
namespace {

constexpr int kThreads = 256;
constexpr int kStrip = 4;  // output columns per thread

// The index walk's divisions, fixed per launch.
struct Geometry {
  FastDivisor out_channels, out_height, strips, multiplier;
  uint32_t threads;  // batch x out_channels x out_height x strips, < 2^31 (applies)
};

__device__ __forceinline__ float multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double multiply_add(double a, double b, double c) {
  return fma(a, b, c);
}

// Splits a thread's index into (image, output channel, output row, strip) in the layout's order.
template <bool kChannelsLast>
__device__ __forceinline__ void locate(uint32_t index, const Geometry& g, uint32_t& n,
                                       uint32_t& channel, uint32_t& row, uint32_t& strip) {
  if (kChannelsLast) {  // index = ((n * H + row) * strips + strip) * C + channel
    const uint32_t rows = g.strips.divide(g.out_channels.divide(index, channel), strip);
    n = g.out_height.divide(rows, row);
  } else {  // index = ((n * C + channel) * H + row) * strips + strip
    const uint32_t planes = g.out_height.divide(g.strips.divide(index, strip), row);
    n = g.out_channels.divide(planes, channel);
  }
}

// kKernel / kStride > 0: square kernel and stride known at compile time, dilation 1. 0: read at
// run time (any kernel, stride and dilation).
template <typename Storage, bool kChannelsLast, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads)
    conv_hardswish_relu_depthwise_kernel(const ConvParams p, const Geometry g) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
  if (index >= g.threads) {
    return;
  }
  uint32_t n, channel, row, strip;
  locate<kChannelsLast>(index, g, n, channel, row, strip);
  const uint32_t in_channel = g.multiplier.quotient(channel);
  const int kernel_h = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_h);
  const int kernel_w = kKernel > 0 ? kKernel : static_cast<int>(p.kernel_w);
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  const int first_out_col = static_cast<int>(strip) * kStrip;
  const int first_row = static_cast<int>(row) * stride_h - static_cast<int>(p.pad_top);
  const int first_col = first_out_col * stride_w - static_cast<int>(p.pad_left);

  const Storage* __restrict__ plane = static_cast<const Storage*>(p.input) +
                                      int64_t{n} * p.input_strides.n +
                                      int64_t{in_channel} * p.input_strides.c;
  const Storage* __restrict__ weight =
      static_cast<const Storage*>(p.weight) + int64_t{channel} * p.weight_strides.n;
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  const Acc bias_value = bias != nullptr ? Traits::load(bias[channel]) : Acc(0);
  Acc acc[kStrip];
#pragma unroll
  for (int o = 0; o < kStrip; ++o) {
    acc[o] = bias_value;
  }

  if constexpr (kKernel > 0) {
    constexpr int kSpan = (kStrip - 1) * kStride + kKernel;
#pragma unroll
    for (int r = 0; r < kKernel; ++r) {
      const int in_row = first_row + r;
      if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
        continue;
      }
      const Storage* __restrict__ line = plane + int64_t{in_row} * p.input_strides.h;
      // Taps in the zero padding are skipped, not multiplied by 0, as PyTorch's depthwise
      // kernel does: an infinite or NaN weight there must not turn an output into NaN.
      Acc span[kSpan];
      bool inside[kSpan];
#pragma unroll
      for (int j = 0; j < kSpan; ++j) {
        const int col = first_col + j;
        inside[j] = static_cast<unsigned>(col) < static_cast<unsigned>(in_width);
        span[j] = inside[j] ? Traits::load(line[int64_t{col} * p.input_strides.w]) : Acc(0);
      }
#pragma unroll
      for (int s = 0; s < kKernel; ++s) {
        const Acc w = Traits::load(
            weight[int64_t{r} * p.weight_strides.h + int64_t{s} * p.weight_strides.w]);
#pragma unroll
        for (int o = 0; o < kStrip; ++o) {
          if (inside[o * kStride + s]) {
            acc[o] = multiply_add(span[o * kStride + s], w, acc[o]);
          }
        }
      }
    }
  } else {
    const int dilation_h = static_cast<int>(p.dilation_h);
    const int dilation_w = static_cast<int>(p.dilation_w);
    for (int r = 0; r < kernel_h; ++r) {
      const int in_row = first_row + r * dilation_h;
      if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
        continue;
      }
      const Storage* __restrict__ line = plane + int64_t{in_row} * p.input_strides.h;
      for (int s = 0; s < kernel_w; ++s) {
        const Acc w = Traits::load(
            weight[int64_t{r} * p.weight_strides.h + int64_t{s} * p.weight_strides.w]);
#pragma unroll
        for (int o = 0; o < kStrip; ++o) {
          const int col = first_col + o * stride_w + s * dilation_w;
          if (static_cast<unsigned>(col) < static_cast<unsigned>(in_width)) {
            acc[o] = multiply_add(Traits::load(line[int64_t{col} * p.input_strides.w]), w,
                                  acc[o]);
          }
        }
      }
    }
  }

  Storage* __restrict__ out = static_cast<Storage*>(p.output) + int64_t{n} * p.output_strides.n +
                              int64_t{channel} * p.output_strides.c +
                              int64_t{row} * p.output_strides.h;
  const int out_width = static_cast<int>(p.out_width);
#pragma unroll
  for (int o = 0; o < kStrip; ++o) {
    if (first_out_col + o < out_width) {
      out[int64_t{first_out_col + o} * p.output_strides.w] =
          Traits::store(HardSwishReLU<Acc>::value(acc[o]));
    }
  }
}

using staged_filters::Filters;  // where the vector kernel reads its weights

// channels_last with 16-byte channel vectors: each thread computes kStrip output columns of
// kVector consecutive channels (multiplier 1), loading one 16-byte vector of channels per tap
// and column, as cuDNN's NHWC kernels read them. Taps walk column by column (no register span:
// kVector x span accumulators would not fit); the repeated loads of a span hit L1.
template <typename Storage, int kKernel, int kStride, Filters kFilters>
__device__ __forceinline__ void vector_strip(const ConvParams& p, const Geometry& g,
                                             uint32_t index, const uint4* staged) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  using Vector = Vector16<Storage>;
  constexpr int kVector = Vector::kCount;
  constexpr int kTaps = kKernel * kKernel;
  uint32_t n, group, row, strip;
  locate<true>(index, g, n, group, row, strip);  // g.out_channels counts channel vectors here
  const int64_t channel = int64_t{group} * kVector;
  const int in_height = static_cast<int>(p.in_height);
  const int in_width = static_cast<int>(p.in_width);
  const int first_out_col = static_cast<int>(strip) * kStrip;
  const int first_row = static_cast<int>(row) * kStride - static_cast<int>(p.pad_top);
  const int first_col = first_out_col * kStride - static_cast<int>(p.pad_left);
  const Storage* __restrict__ image =
      static_cast<const Storage*>(p.input) + int64_t{n} * p.input_strides.n + channel;
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);

  Vector filters[kFilters == Filters::kResident ? kTaps : 1];  // channel v, tap t: v * kTaps + t
  if constexpr (kFilters == Filters::kResident) {
    const uint4* __restrict__ source = reinterpret_cast<const uint4*>(weight + channel * kTaps);
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      filters[i].bits = __ldg(source + i);
    }
  }

  Acc acc[kStrip][kVector];
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    const Acc b = bias != nullptr ? Traits::load(bias[channel + v]) : Acc(0);
#pragma unroll
    for (int o = 0; o < kStrip; ++o) {
      acc[o][v] = b;
    }
  }
#pragma unroll
  for (int r = 0; r < kKernel; ++r) {
    const int in_row = first_row + r;
    if (static_cast<unsigned>(in_row) >= static_cast<unsigned>(in_height)) {
      continue;  // padded rows skipped, as PyTorch's depthwise kernel does
    }
    const Storage* __restrict__ line = image + int64_t{in_row} * p.input_strides.h;
#pragma unroll
    for (int s = 0; s < kKernel; ++s) {
      Acc w[kVector];
      Vector tap;
      if constexpr (kFilters == Filters::kStaged) {
        tap.bits = staged[(r * kKernel + s) * g.out_channels.divisor + group];
      }
#pragma unroll
      for (int v = 0; v < kVector; ++v) {
        if constexpr (kFilters == Filters::kStaged) {
          w[v] = Traits::load(tap.values[v]);
        } else if constexpr (kFilters == Filters::kResident) {
          const int e = v * kTaps + r * kKernel + s;  // a constant once unrolled
          w[v] = Traits::load(filters[e / kVector].values[e % kVector]);
        } else {
          w[v] = Traits::load(weight[(channel + v) * p.weight_strides.n +
                                     int64_t{r} * p.weight_strides.h +
                                     int64_t{s} * p.weight_strides.w]);
        }
      }
#pragma unroll
      for (int o = 0; o < kStrip; ++o) {
        const int col = first_col + o * kStride + s;
        if (static_cast<unsigned>(col) < static_cast<unsigned>(in_width)) {
          Vector x;
          x.bits = __ldg(reinterpret_cast<const uint4*>(line + int64_t{col} * p.input_strides.w));
#pragma unroll
          for (int v = 0; v < kVector; ++v) {
            acc[o][v] = multiply_add(Traits::load(x.values[v]), w[v], acc[o][v]);
          }
        }
      }
    }
  }

  Storage* __restrict__ out = static_cast<Storage*>(p.output) + int64_t{n} * p.output_strides.n +
                              channel + int64_t{row} * p.output_strides.h;
  const int out_width = static_cast<int>(p.out_width);
#pragma unroll
  for (int o = 0; o < kStrip; ++o) {
    if (first_out_col + o < out_width) {
      Vector y;
#pragma unroll
      for (int v = 0; v < kVector; ++v) {
        y.values[v] = Traits::store(HardSwishReLU<Acc>::value(acc[o][v]));
      }
      *reinterpret_cast<uint4*>(out + int64_t{first_out_col + o} * p.output_strides.w) = y.bits;
    }
  }
}

template <typename Storage, int kKernel, int kStride, Filters kFilters>
__global__ void __launch_bounds__(kThreads)
    conv_hardswish_relu_depthwise_vector_kernel(const ConvParams p, const Geometry g) {
  extern __shared__ uint4 staged[];  // kStaged: [tap][channel vector]
  if constexpr (kFilters == Filters::kStaged) {  // g.out_channels counts channel vectors here
    staged_filters::stage<Storage, kKernel, kThreads>(static_cast<const Storage*>(p.weight),
                                                      p.weight_strides,
                                                      static_cast<int>(g.out_channels.divisor),
                                                      staged);
    // Several items per thread, so that the copy is paid once for them (a grid-stride walk:
    // the warp's lanes stay on consecutive channel vectors).
    for (uint32_t index = blockIdx.x * kThreads + threadIdx.x; index < g.threads;
         index += gridDim.x * kThreads) {
      vector_strip<Storage, kKernel, kStride, kFilters>(p, g, index, staged);
    }
  } else {
    const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
    if (index < g.threads) {
      vector_strip<Storage, kKernel, kStride, kFilters>(p, g, index, staged);
    }
  }
}

// The compile-time kernel size and stride of a call: 3 or 5, 1 or 2, square, no dilation; 0
// where the run-time instance takes it.
void unrolled_geometry(const ConvParams& p, int& kernel, int& stride) {
  const bool unit_dilation = p.dilation_h == 1 && p.dilation_w == 1;
  const bool square = p.kernel_h == p.kernel_w && p.stride_h == p.stride_w;
  kernel = square && unit_dilation && (p.kernel_h == 3 || p.kernel_h == 5)
               ? static_cast<int>(p.kernel_h)
               : 0;
  stride = kernel > 0 && (p.stride_h == 1 || p.stride_h == 2) ? static_cast<int>(p.stride_h) : 0;
  kernel = stride > 0 ? kernel : 0;
}

// The vector kernel's domain (in channels_last): its shapes (vector_shape) at 16-byte aligned
// input and output.
bool vector_kernel_applies(const ConvParams& p) {
  return vector_shape(p) && reinterpret_cast<uintptr_t>(p.input) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.output) % 16 == 0;
}

// Whether the vector kernel keeps its channels' filters in registers: 16-bit types (8 scalar
// weight loads per tap otherwise; float32's 4 already beat cuDNN, at 64 registers against 96
// resident) with a 3x3 weight whose filters are dense (each channel's 9 taps in a row, channels
// one after another) and 16-byte aligned. 5x5: 25 vectors of registers per thread, too many.
// Resident 16-bit: 108-114 registers against 78-80 (two CTAs of 256 per SM instead of three;
// bounding it to three spills), so not measured to pay yet (benchmarks/NOTES.md).
bool resident_filters(const ConvParams& p) {
  const Strides4& w = p.weight_strides;
  return element_bytes(p.dtype) == 2 && p.kernel_h == 3 && w.n == 9 && w.h == 3 && w.w == 1 &&
         reinterpret_cast<uintptr_t>(p.weight) % 16 == 0;
}

// Where the vector kernel reads its weights (Filters): staged where that candidate runs
// (common/depthwise_candidates.h) and they fit, resident where resident_filters says so, per
// tap otherwise.
Filters filter_source(const ConvParams& p, int64_t channel_vectors) {
  if (run_candidate(DepthwiseCandidate::kStagedForward, p) &&
      staged_filters::bytes(p.kernel_h * p.kernel_w, channel_vectors) <=
          staged_filters::kMaxBytes) {
    return Filters::kStaged;
  }
  return resident_filters(p) ? Filters::kResident : Filters::kPerTap;
}

// One compile-time geometry of the vector kernel; the resident-filter instance exists for 16-bit
// 3x3 only (resident_filters).
template <typename Storage, int kKernel, int kStride>
void launch_vector_instance(const ConvParams& p, const Geometry& g, Filters filters,
                            cudaStream_t stream) {
  const uint32_t blocks = (g.threads + kThreads - 1) / kThreads;
  const dim3 grid(blocks);
  if (filters == Filters::kStaged) {
    const int64_t items = staged_filters::items_per_thread(p.out_channels);
    const dim3 staged_grid(static_cast<uint32_t>((blocks + items - 1) / items));
    const size_t bytes =
        static_cast<size_t>(staged_filters::bytes(kKernel * kKernel, g.out_channels.divisor));
    conv_hardswish_relu_depthwise_vector_kernel<Storage, kKernel, kStride, Filters::kStaged>
        <<<staged_grid, kThreads, bytes, stream>>>(p, g);
    return;
  }
  if constexpr (sizeof(Storage) == 2 && kKernel == 3) {
    if (filters == Filters::kResident) {
      conv_hardswish_relu_depthwise_vector_kernel<Storage, kKernel, kStride, Filters::kResident>
          <<<grid, kThreads, 0, stream>>>(p, g);
      return;
    }
  }
  conv_hardswish_relu_depthwise_vector_kernel<Storage, kKernel, kStride, Filters::kPerTap>
      <<<grid, kThreads, 0, stream>>>(p, g);
}

template <typename Storage>
cudaError_t launch_vector(const ConvParams& p, Geometry g, cudaStream_t stream) {
  constexpr int kVector = 16 / static_cast<int>(sizeof(Storage));
  const uint32_t groups = static_cast<uint32_t>(p.out_channels / kVector);
  g.out_channels = FastDivisor::make(groups);
  g.threads = g.threads / static_cast<uint32_t>(kVector);  // out_channels is a multiple
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  const Filters filters = filter_source(p, groups);
  if (kernel == 3 && stride == 1) {
    launch_vector_instance<Storage, 3, 1>(p, g, filters, stream);
  } else if (kernel == 3 && stride == 2) {
    launch_vector_instance<Storage, 3, 2>(p, g, filters, stream);
  } else if (kernel == 5 && stride == 1) {
    launch_vector_instance<Storage, 5, 1>(p, g, filters, stream);
  } else {
    launch_vector_instance<Storage, 5, 2>(p, g, filters, stream);
  }
  return cudaGetLastError();
}

template <typename Storage, bool kChannelsLast>
cudaError_t launch_layout(const ConvParams& p, const Geometry& g, cudaStream_t stream) {
  if (kChannelsLast && vector_kernel_applies(p)) {
    return launch_vector<Storage>(p, g, stream);
  }
  if constexpr (!kChannelsLast && sizeof(Storage) <= 4) {  // float64 keeps the per-row kernel
    depthwise_rows::RowGeometry rows;
    if (run_candidate(DepthwiseCandidate::kRowsForward, p) &&
        depthwise_rows::row_geometry(p, rows) &&
        depthwise_rows::vector_aligned(rows, p.input, p.output, p.output)) {
      return depthwise_rows::launch_forward<Storage>(p, rows, stream);
    }
  }
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  if constexpr (!kChannelsLast && sizeof(Storage) <= 4) {
    if (run_candidate(DepthwiseCandidate::kPlanesForward, p) && depthwise_planes::applies(p)) {
      return depthwise_planes::launch<Storage>(p, kernel, stride, stream);
    }
  }
  const dim3 grid((g.threads + kThreads - 1) / kThreads);
  if (kernel == 3 && stride == 1) {
    conv_hardswish_relu_depthwise_kernel<Storage, kChannelsLast, 3, 1>
        <<<grid, kThreads, 0, stream>>>(p, g);
  } else if (kernel == 3 && stride == 2) {
    conv_hardswish_relu_depthwise_kernel<Storage, kChannelsLast, 3, 2>
        <<<grid, kThreads, 0, stream>>>(p, g);
  } else if (kernel == 5 && stride == 1) {
    conv_hardswish_relu_depthwise_kernel<Storage, kChannelsLast, 5, 1>
        <<<grid, kThreads, 0, stream>>>(p, g);
  } else if (kernel == 5 && stride == 2) {
    conv_hardswish_relu_depthwise_kernel<Storage, kChannelsLast, 5, 2>
        <<<grid, kThreads, 0, stream>>>(p, g);
  } else {
    conv_hardswish_relu_depthwise_kernel<Storage, kChannelsLast, 0, 0>
        <<<grid, kThreads, 0, stream>>>(p, g);
  }
  return cudaGetLastError();
}

}  // namespace

bool vector_shape(const ConvParams& p) {
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  const int64_t vector = 16 / element_bytes(p.dtype);
  return kernel > 0 && p.out_channels == p.in_channels && p.in_channels % vector == 0;
}

bool applies(const ConvParams& p) {
  bool input_channels_last = false, output_channels_last = false;
  const int64_t strips = (p.out_width + kStrip - 1) / kStrip;
  // The kernel's row and column arithmetic is 32-bit: every input position a tap can reach,
  // padding included, must fit (validation bounds stride, padding and dilation only below).
  constexpr int64_t kIntLimit = int64_t{1} << 31;
  if (p.stride_h >= kIntLimit || p.stride_w >= kIntLimit || p.dilation_h >= kIntLimit ||
      p.dilation_w >= kIntLimit || p.kernel_h >= kIntLimit || p.kernel_w >= kIntLimit ||
      p.pad_top >= kIntLimit || p.pad_left >= kIntLimit || p.out_height >= kIntLimit ||
      strips >= kIntLimit) {
    return false;
  }
  const int64_t row_reach = p.pad_top + p.out_height * p.stride_h + p.kernel_h * p.dilation_h;
  const int64_t col_reach =
      p.pad_left + strips * kStrip * p.stride_w + p.kernel_w * p.dilation_w;
  return row_reach < kIntLimit && col_reach < kIntLimit && p.groups > 1 &&
         p.groups == p.in_channels &&
         dense_layout(p.input_strides, p.in_channels, p.in_height, p.in_width,
                      input_channels_last) &&
         dense_layout(p.output_strides, p.out_channels, p.out_height, p.out_width,
                      output_channels_last) &&
         input_channels_last == output_channels_last &&
         p.batch * p.in_channels * p.in_height * p.in_width < (int64_t{1} << 31) &&
         p.batch * p.out_channels * p.out_height * strips < (int64_t{1} << 31) - kThreads;
}

cudaError_t launch(const ConvParams& p, cudaStream_t stream) {
  const int64_t strips = (p.out_width + kStrip - 1) / kStrip;
  const int64_t threads = p.batch * p.out_channels * p.out_height * strips;
  if (threads == 0) {
    return cudaSuccess;
  }
  bool channels_last = false;
  dense_layout(p.input_strides, p.in_channels, p.in_height, p.in_width, channels_last);
  Geometry g{};
  g.out_channels = FastDivisor::make(static_cast<uint32_t>(p.out_channels));
  g.out_height = FastDivisor::make(static_cast<uint32_t>(p.out_height));
  g.strips = FastDivisor::make(static_cast<uint32_t>(strips));
  g.multiplier = FastDivisor::make(static_cast<uint32_t>(p.out_channels / p.in_channels));
  g.threads = static_cast<uint32_t>(threads);
  return dispatch_dtype(p.dtype, [&](auto zero) {
    using Storage = decltype(zero);
    return channels_last ? launch_layout<Storage, true>(p, g, stream)
                         : launch_layout<Storage, false>(p, g, stream);
  });
}

}  // namespace depthwise
}  // namespace fusedconv
