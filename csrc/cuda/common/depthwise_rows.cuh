// Depthwise convolution by vector rows, dense NCHW, in the domain of depthwise_rows_domain.h:
// the forward (y = relu(hardswish(conv(x) + b))) and grad_input, both memory-bound walks over
// rows read as 16-, 8- or 4-byte vectors. A thread owns kRows target rows x one vector of
// target columns (two vectors in the stride-2 grad_input). It loads each source row it needs
// once: its vectors plus a halo vector on each side the taps reach, and adds that row into
// every target row it reaches. The per-row kernel this replaces issued one scalar load per tap
// and column. Depthwise candidates: they run where common/depthwise_candidates.h says.
//
// grad_input at stride 1 is the forward's walk over g = grad_y * f'(y) (formed once per element
// as it is loaded) with the flipped filter; at stride 2 it is the transposed walk: target column
// 2j + u reads g columns (u + pad - t) / 2 where that is whole. Both skip taps on the zero
// padding, as PyTorch's depthwise kernels do (a non-finite weight there stays out of the result).
// float32 / float16 / bfloat16, accumulated in float32 and rounded once at the store.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/depthwise_rows_domain.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_rows {

constexpr int kThreads = 256;

template <int kBytes>
struct VectorBits;
template <>
struct VectorBits<16> {
  using Type = uint4;
};
template <>
struct VectorBits<8> {
  using Type = uint2;
};
template <>
struct VectorBits<4> {
  using Type = uint32_t;
};

// kBytes of a storage type, moved by one load or store instruction.
template <typename Storage, int kBytes>
union RowVector {
  static constexpr int kCount = kBytes / static_cast<int>(sizeof(Storage));
  using Bits = typename VectorBits<kBytes>::Type;
  Bits bits;
  Storage values[kCount];
};

// A walk from `source` planes to `target` planes (dense NCHW): target channel c reads source
// channel c / multiplier. The forward: x to y with bias and activation. grad_input: g (grad_y
// as `source`, y as `activation`) to grad_x.
struct RowWalk {
  const void* source;
  const void* activation;  // y where the source is g; null in the forward
  const void* weight;
  const void* bias;  // forward only; null for none
  void* target;
  int64_t weight_n, weight_h, weight_w;
  int32_t source_channels, source_height, source_width;
  int32_t target_channels, target_height, target_width;
  // The thread index's split: (plane, row group, column group), column groups fastest.
  FastDivisor row_groups, column_groups, target_planes, multiplier;
  uint32_t threads;  // < 2^31 (the callers' applies)
};

// The vectors of a correlation window (the forward's, the weight pass's x): a left halo vector,
// `stride` vectors under the target's, and a right halo vector where the last tap reaches it
// (not for 3x3 at stride 2).
__host__ __device__ constexpr int window_vectors(int count, int kernel, int stride) {
  return (count + (count - 1) * stride + kernel - 1 - (kernel - 1) / 2) / count + 1;
}

// The row-walk kernels' common start: the thread's target plane, first row and column group,
// and where its source plane starts.
struct WalkPosition {
  uint32_t n, channel;
  int first_row, column_group;
  int64_t source_plane;
};

__device__ __forceinline__ WalkPosition locate(const RowWalk& w, uint32_t index) {
  uint32_t column_group, row_group, channel;
  const uint32_t planes = w.row_groups.divide(w.column_groups.divide(index, column_group),
                                              row_group);
  const uint32_t n = w.target_planes.divide(planes, channel);
  const int64_t source_plane =
      (int64_t{n} * w.source_channels + w.multiplier.quotient(channel)) * w.source_height *
      w.source_width;
  return {n, channel, static_cast<int>(row_group) * kRows, static_cast<int>(column_group),
          source_plane};
}

// Loads vectors [kFirstVector, kVectors) of a window of one source row that starts at element
// `first` (a multiple of the vector, negative at the left edge): as float, g = grad_y * f'(y)
// where kGradient (`activation_row` holds y), zero for a vector outside [0, width) or before
// kFirstVector (a walk that never reads the left halo); `inside` says which were loaded.
template <typename Storage, int kBytes, int kVectors, bool kGradient, int kFirstVector = 0>
__device__ __forceinline__ void load_window(
    const Storage* __restrict__ row, const Storage* __restrict__ activation_row, int first,
    int width, float (&window)[kVectors * RowVector<Storage, kBytes>::kCount],
    bool (&inside)[kVectors]) {
  using Vector = RowVector<Storage, kBytes>;
  using Bits = typename Vector::Bits;
  using Traits = StorageTraits<Storage>;
  constexpr int kCount = Vector::kCount;
#pragma unroll
  for (int v = 0; v < kVectors; ++v) {
    const int column = first + v * kCount;
    inside[v] = v >= kFirstVector && static_cast<unsigned>(column) < static_cast<unsigned>(width);
    Vector value, y;
    value.bits = Bits{};
    y.bits = Bits{};
    if (inside[v]) {
      value.bits = __ldg(reinterpret_cast<const Bits*>(row + column));
      if (kGradient) {
        y.bits = __ldg(reinterpret_cast<const Bits*>(activation_row + column));
      }
    }
#pragma unroll
    for (int e = 0; e < kCount; ++e) {
      const float a = Traits::load(value.values[e]);
      window[v * kCount + e] =
          kGradient ? HardSwishReLU<float>::backward(a, Traits::load(y.values[e])) : a;
    }
  }
}

// Whether window element `e` lies on the row: the window is a left halo vector, kMiddle vectors
// always on the row (rows of whole vectors), and a right halo vector where kVectors says so.
template <int kCount, int kMiddle, int kVectors>
__device__ __forceinline__ bool on_row(int e, const bool (&inside)[kVectors]) {
  if (e < kCount) {
    return inside[0];
  }
  if constexpr (kVectors > kMiddle + 1) {
    if (e >= (kMiddle + 1) * kCount) {
      return inside[kMiddle + 1];
    }
  }
  return true;
}

// The channel's k x k filter in registers, flipped (k - 1 - r, k - 1 - t) where kFlip.
template <typename Storage, int kKernel, bool kFlip>
__device__ __forceinline__ void load_filter(const RowWalk& w, uint32_t channel,
                                            float (&filter)[kKernel * kKernel]) {
  const Storage* __restrict__ weight =
      static_cast<const Storage*>(w.weight) + int64_t{channel} * w.weight_n;
#pragma unroll
  for (int r = 0; r < kKernel; ++r) {
#pragma unroll
    for (int t = 0; t < kKernel; ++t) {
      const int row = kFlip ? kKernel - 1 - r : r;
      const int column = kFlip ? kKernel - 1 - t : t;
      filter[r * kKernel + t] = StorageTraits<Storage>::load(
          weight[int64_t{row} * w.weight_h + int64_t{column} * w.weight_w]);
    }
  }
}

// Stores kRows x kColumns accumulators at target columns [first_column, + kColumns) of the
// thread's rows inside the plane, as vectors; activated in the forward.
template <typename Storage, int kBytes, int kColumns, bool kActivate>
__device__ __forceinline__ void store_rows(const RowWalk& w, const WalkPosition& at,
                                           int first_column,
                                           const float (&acc)[kRows][kColumns]) {
  using Vector = RowVector<Storage, kBytes>;
  constexpr int kCount = Vector::kCount;
  Storage* __restrict__ plane =
      static_cast<Storage*>(w.target) +
      (int64_t{at.n} * w.target_channels + at.channel) * w.target_height * w.target_width +
      first_column;
#pragma unroll
  for (int o = 0; o < kRows; ++o) {
    if (at.first_row + o >= w.target_height) {
      break;
    }
#pragma unroll
    for (int v = 0; v < kColumns / kCount; ++v) {
      Vector out;
#pragma unroll
      for (int e = 0; e < kCount; ++e) {
        const float value = acc[o][v * kCount + e];
        out.values[e] = StorageTraits<Storage>::store(
            kActivate ? HardSwishReLU<float>::value(value) : value);
      }
      *reinterpret_cast<typename Vector::Bits*>(
          plane + int64_t{at.first_row + o} * w.target_width + v * kCount) = out.bits;
    }
  }
}

// The correlation walk: the forward (kGradient false: x, bias, activation) at stride 1 or 2,
// and grad_input at stride 1 (kGradient: g with the flipped filter). Target row i, column j
// reads source rows i x stride - pad + r and columns j x stride - pad + t.
template <typename Storage, int kBytes, int kKernel, int kStride, bool kGradient>
__global__ void __launch_bounds__(kThreads, 2) depthwise_rows_kernel(const RowWalk w) {
  constexpr int kCount = RowVector<Storage, kBytes>::kCount;
  constexpr int kPad = (kKernel - 1) / 2;
  constexpr int kVectors = window_vectors(kCount, kKernel, kStride);
  constexpr int kSourceRows = (kRows - 1) * kStride + kKernel;
  static_assert(kCount >= 2 && kPad <= kCount, "the halo fits in one vector");
  static_assert(!kGradient || kStride == 1, "grad_input at stride 2 is the transposed walk");
  const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
  if (index >= w.threads) {
    return;
  }
  const WalkPosition at = locate(w, index);
  const int first_column = at.column_group * kCount;
  const Storage* __restrict__ source = static_cast<const Storage*>(w.source) + at.source_plane;
  const Storage* __restrict__ activation =
      kGradient ? static_cast<const Storage*>(w.activation) + at.source_plane : nullptr;
  float filter[kKernel * kKernel];
  load_filter<Storage, kKernel, kGradient>(w, at.channel, filter);
  const float bias = !kGradient && w.bias != nullptr
                         ? StorageTraits<Storage>::load(
                               static_cast<const Storage*>(w.bias)[at.channel])
                         : 0.0f;
  float acc[kRows][kCount];
#pragma unroll
  for (int o = 0; o < kRows; ++o) {
#pragma unroll
    for (int c = 0; c < kCount; ++c) {
      acc[o][c] = bias;
    }
  }
  const int top = at.first_row * kStride - kPad;
#pragma unroll
  for (int j = 0; j < kSourceRows; ++j) {
    const int row = top + j;
    if (static_cast<unsigned>(row) >= static_cast<unsigned>(w.source_height)) {
      continue;  // padded rows: no tap
    }
    const int64_t offset = int64_t{row} * w.source_width;
    float window[kVectors * kCount];
    bool inside[kVectors];
    load_window<Storage, kBytes, kVectors, kGradient>(
        source + offset, kGradient ? activation + offset : nullptr,
        first_column * kStride - kCount, w.source_width, window, inside);
#pragma unroll
    for (int o = 0; o < kRows; ++o) {
      const int r = j - o * kStride;  // the kernel row source row j is for target row o
      if (r < 0 || r >= kKernel) {
        continue;
      }
#pragma unroll
      for (int t = 0; t < kKernel; ++t) {
#pragma unroll
        for (int c = 0; c < kCount; ++c) {
          const int e = kCount + c * kStride + t - kPad;
          if (on_row<kCount, kStride>(e, inside)) {
            acc[o][c] = fmaf(window[e], filter[r * kKernel + t], acc[o][c]);
          }
        }
      }
    }
  }
  store_rows<Storage, kBytes, kCount, !kGradient>(w, at, first_column, acc);
}

// grad_input at stride 2: a thread owns kRows rows x two vectors of grad_x, columns
// [2 j0, 2 j0 + 2 kCount) for g columns [j0, j0 + kCount). grad_x row i takes g row q through
// kernel row r = i + pad - 2q, and column 2 j0 + u takes g column j0 + (u + pad - t) / 2 through
// tap t where u + pad - t is even.
template <typename Storage, int kBytes, int kKernel>
__global__ void __launch_bounds__(kThreads) depthwise_rows_transposed_kernel(const RowWalk w) {
  constexpr int kCount = RowVector<Storage, kBytes>::kCount;
  constexpr int kPad = (kKernel - 1) / 2;
  constexpr int kVectors = 3;
  // 3x3 never reads the left halo: the lowest g column is j0 + (0 + 1 - 1) / 2.
  constexpr int kFirstVector = kPad >= 2 ? 0 : 1;
  // g rows first_row / 2 + d, d in [kFirstRow, kLastRow], reach the thread's kRows rows
  // (first_row is a multiple of kRows, so even).
  constexpr int kFirstRow = -(kPad / 2);
  constexpr int kLastRow = (kRows - 1 + kPad) / 2;
  static_assert(kCount >= 2 && kPad <= 2 && kRows % 2 == 0, "one halo vector each side");
  const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
  if (index >= w.threads) {
    return;
  }
  const WalkPosition at = locate(w, index);
  const int first_source_column = at.column_group * kCount;
  const Storage* __restrict__ grad_y = static_cast<const Storage*>(w.source) + at.source_plane;
  const Storage* __restrict__ y = static_cast<const Storage*>(w.activation) + at.source_plane;
  float filter[kKernel * kKernel];
  load_filter<Storage, kKernel, false>(w, at.channel, filter);
  float acc[kRows][2 * kCount];
#pragma unroll
  for (int o = 0; o < kRows; ++o) {
#pragma unroll
    for (int u = 0; u < 2 * kCount; ++u) {
      acc[o][u] = 0.0f;
    }
  }
#pragma unroll
  for (int d = kFirstRow; d <= kLastRow; ++d) {
    const int row = at.first_row / 2 + d;
    if (static_cast<unsigned>(row) >= static_cast<unsigned>(w.source_height)) {
      continue;
    }
    const int64_t offset = int64_t{row} * w.source_width;
    float window[kVectors * kCount];
    bool inside[kVectors];
    load_window<Storage, kBytes, kVectors, true, kFirstVector>(
        grad_y + offset, y + offset, first_source_column - kCount, w.source_width, window,
        inside);
#pragma unroll
    for (int o = 0; o < kRows; ++o) {
      const int r = o + kPad - 2 * d;
      if (r < 0 || r >= kKernel) {
        continue;
      }
#pragma unroll
      for (int t = 0; t < kKernel; ++t) {
#pragma unroll
        for (int u = 0; u < 2 * kCount; ++u) {
          const int twice = u + kPad - t;
          if (twice % 2 != 0) {
            continue;  // no g column on this tap
          }
          const int e = kCount + twice / 2;
          if (on_row<kCount, 1>(e, inside)) {
            acc[o][u] = fmaf(window[e], filter[r * kKernel + t], acc[o][u]);
          }
        }
      }
    }
  }
  store_rows<Storage, kBytes, 2 * kCount, false>(w, at, 2 * first_source_column, acc);
}

// Calls body(bytes, kernel, stride) (std::integral_constant<int, ...> each) for a row geometry;
// vectors of fewer than two elements are outside the domain (row_geometry) and not built.
template <typename Storage, int kBytes, typename Body>
cudaError_t dispatch_shape(const RowGeometry& g, Body& body) {
  using Bytes = std::integral_constant<int, kBytes>;
  using Three = std::integral_constant<int, 3>;
  using Five = std::integral_constant<int, 5>;
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  if constexpr (kBytes / static_cast<int>(sizeof(Storage)) < 2) {
    return cudaErrorInvalidValue;
  } else if (g.kernel == 3) {
    return g.stride == 1 ? body(Bytes{}, Three{}, One{}) : body(Bytes{}, Three{}, Two{});
  } else {
    return g.stride == 1 ? body(Bytes{}, Five{}, One{}) : body(Bytes{}, Five{}, Two{});
  }
}

template <typename Storage, typename Body>
cudaError_t dispatch_rows(const RowGeometry& g, Body&& body) {
  if (g.vector_bytes == 16) {
    return dispatch_shape<Storage, 16>(g, body);
  }
  if (g.vector_bytes == 8) {
    return dispatch_shape<Storage, 8>(g, body);
  }
  return dispatch_shape<Storage, 4>(g, body);
}

// The walk's thread split over `planes` target planes, `columns` target columns per thread.
inline void split_threads(RowWalk& w, int64_t planes, int64_t columns) {
  w.row_groups = FastDivisor::make(static_cast<uint32_t>((w.target_height + kRows - 1) / kRows));
  w.column_groups = FastDivisor::make(static_cast<uint32_t>(w.target_width / columns));
  w.target_planes = FastDivisor::make(static_cast<uint32_t>(w.target_channels));
  w.threads = static_cast<uint32_t>(
      walk_threads(planes, w.target_height, w.target_width, columns));
}

// A call's walk: the forward's from x (in_* sizes) to y (out_*), grad_input's from g (out_*)
// to grad_x (in_*); the pointers are the launcher's.
inline RowWalk walk_of(const ConvParams& p, bool gradient) {
  RowWalk w{};
  w.weight = p.weight;
  w.weight_n = p.weight_strides.n;
  w.weight_h = p.weight_strides.h;
  w.weight_w = p.weight_strides.w;
  const int64_t in[3] = {p.in_channels, p.in_height, p.in_width};
  const int64_t out[3] = {p.out_channels, p.out_height, p.out_width};
  const int64_t* source = gradient ? out : in;
  const int64_t* target = gradient ? in : out;
  w.source_channels = static_cast<int32_t>(source[0]);
  w.source_height = static_cast<int32_t>(source[1]);
  w.source_width = static_cast<int32_t>(source[2]);
  w.target_channels = static_cast<int32_t>(target[0]);
  w.target_height = static_cast<int32_t>(target[1]);
  w.target_width = static_cast<int32_t>(target[2]);
  w.multiplier = FastDivisor::make(static_cast<uint32_t>(p.out_channels / p.in_channels));
  return w;
}

// y = relu(hardswish(conv(x) + b)) of a dense NCHW call in the row domain `g` (any multiplier).
template <typename Storage>
cudaError_t launch_forward(const ConvParams& p, const RowGeometry& g, cudaStream_t stream) {
  RowWalk w = walk_of(p, false);
  w.source = p.input;
  w.bias = p.bias;
  w.target = p.output;
  split_threads(w, p.batch * p.out_channels, g.vector_bytes / element_bytes(p.dtype));
  if (w.threads == 0) {
    return cudaSuccess;
  }
  const uint32_t blocks = (w.threads + kThreads - 1) / kThreads;
  return dispatch_rows<Storage>(g, [&](auto bytes, auto kernel, auto stride) {
    depthwise_rows_kernel<Storage, decltype(bytes)::value, decltype(kernel)::value,
                          decltype(stride)::value, false><<<blocks, kThreads, 0, stream>>>(w);
    return cudaGetLastError();
  });
}

// grad_x of a dense NCHW call in the row domain `g` (multiplier 1).
template <typename Storage>
cudaError_t launch_input_gradient(const ConvBackwardParams& bp, const RowGeometry& g,
                                  cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  RowWalk w = walk_of(p, true);  // multiplier 1 (the backward's domain)
  w.source = bp.grad_output;
  w.activation = p.output;
  w.target = bp.grad_input;
  const int64_t count = g.vector_bytes / element_bytes(p.dtype);
  split_threads(w, p.batch * p.in_channels, count * g.stride);
  if (w.threads == 0) {
    return cudaSuccess;
  }
  const uint32_t blocks = (w.threads + kThreads - 1) / kThreads;
  return dispatch_rows<Storage>(g, [&](auto bytes, auto kernel, auto stride) {
    constexpr int kBytes = decltype(bytes)::value;
    constexpr int kKernel = decltype(kernel)::value;
    if constexpr (decltype(stride)::value == 1) {
      depthwise_rows_kernel<Storage, kBytes, kKernel, 1, true><<<blocks, kThreads, 0, stream>>>(w);
    } else {
      depthwise_rows_transposed_kernel<Storage, kBytes, kKernel>
          <<<blocks, kThreads, 0, stream>>>(w);
    }
    return cudaGetLastError();
  });
}

}  // namespace depthwise_rows
}  // namespace fusedconv
