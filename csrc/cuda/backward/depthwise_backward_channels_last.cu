// Depthwise backward in channels_last (groups == in_channels == out_channels > 1, dense
// channels_last x, y and grad_y, whole 16-byte channel vectors): grad_input, grad_weight and
// grad_bias. Unlike the NCHW kernels (depthwise_backward.cu), g = grad_y * f'(y) is written once
// to the workspace by the library's gradient pass: dgrad's gather reads each g k x k times, and
// forming it there would take a square root per read (the special-function unit would bound the
// pass as much as memory does), while one pass over g costs a read and a write of y's size.
//
// grad_input: a thread per (input pixel, 16-byte channel vector) gathers the taps that read it
//   (16-byte loads of g, the vector's filters kept in registers where they are one dense,
//   aligned run, or staged in shared memory where that candidate runs (common/
//   depthwise_candidates.h), as in the forward's vector kernel: common/staged_filters.cuh).
//   No atomics: each element has one owner.
// grad_weight, grad_bias: a CTA per (slice of output rows, block of channel vectors); its threads
//   are (channel vector, tap, lane) triples, each accumulating one tap of one vector over the
//   slice's positions (lanes split each row's columns); the lanes' sums are added in a fixed
//   order in shared memory, one partial per CTA, and a second kernel sums the partials of each
//   (channel, tap) in a fixed order. Bitwise identical from run to run. Where that candidate
//   runs, the sliding weight pass instead (one kernel row per thread, same partials).
#include <cuda_runtime.h>

#include <cstdint>

#include "backward/depthwise_backward.h"
#include "common/configuration.h"
#include "common/depthwise_candidates.h"
#include "common/device_limits.h"
#include "common/staged_filters.cuh"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_backward {
namespace channels_last {
namespace {

constexpr int kThreads = 256;

using staged_filters::Filters;

struct Geometry {
  FastDivisor vectors, in_width, in_height, out_height;
  uint32_t pixel_vectors;  // batch x in_height x in_width x channel vectors (dgrad threads)
  int32_t vectors_per_block, lanes, active;  // the weight pass's thread triples (see above)
  int32_t slices, rows_per_slice;            // output rows (of batch x out_height) per slice
};

// Where the workspace's parts start: g (y's size, in the storage type), then the partials.
int64_t partials_offset(const ConvParams& p) {
  const int64_t g_bytes = p.batch * p.out_channels * p.out_height * p.out_width *
                          element_bytes(p.dtype);
  return (g_bytes + 255) / 256 * 256;
}

// grad_input: thread (n, in_row, in_col, vector) in channels_last order, vector fastest.
// kStride: 1 or 2 on both axes at compile time, 0 for any other stride read at run time.
template <typename Storage, int kKernel, int kStride, Filters kFilters>
__device__ __forceinline__ void dgrad_pixel(const ConvBackwardParams& bp, const Storage* g_base,
                                            const Geometry& g, uint32_t index,
                                            const uint4* staged) {
  using Traits = StorageTraits<Storage>;
  using Vector = Vector16<Storage>;
  constexpr int kVector = Vector::kCount;
  constexpr int kTaps = kKernel * kKernel;
  const ConvParams& p = bp.conv;
  const uint32_t pixel = g.vectors.quotient(index);
  const uint32_t vector = index - pixel * g.vectors.divisor;
  const int64_t channel = int64_t{vector} * kVector;
  const uint32_t rows = g.in_width.quotient(pixel);
  const int in_col = static_cast<int>(pixel - rows * g.in_width.divisor);
  const uint32_t n = g.in_height.quotient(rows);
  const int in_row = static_cast<int>(rows - n * g.in_height.divisor);
  const int out_height = static_cast<int>(p.out_height);
  const int out_width = static_cast<int>(p.out_width);
  const int stride_h = kStride > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kStride > 0 ? kStride : static_cast<int>(p.stride_w);
  const Storage* __restrict__ image =
      g_base + int64_t{n} * p.out_height * p.out_width * p.out_channels + channel;
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);

  Vector filters[kFilters == Filters::kResident ? kTaps : 1];  // channel v, tap t: v * kTaps + t
  if constexpr (kFilters == Filters::kResident) {
    const uint4* __restrict__ source = reinterpret_cast<const uint4*>(weight + channel * kTaps);
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      filters[i].bits = __ldg(source + i);
    }
  }
  float acc[kVector];
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    acc[v] = 0.0f;
  }
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
      const int64_t position = int64_t{out_row} * out_width + col_span / stride_w;
      Vector gv, tap;
      gv.bits = __ldg(reinterpret_cast<const uint4*>(image + position * p.out_channels));
      if constexpr (kFilters == Filters::kStaged) {
        tap.bits = staged[(r * kKernel + s) * g.vectors.divisor + vector];
      }
#pragma unroll
      for (int v = 0; v < kVector; ++v) {
        float w;
        if constexpr (kFilters == Filters::kStaged) {
          w = Traits::load(tap.values[v]);
        } else if constexpr (kFilters == Filters::kResident) {
          const int e = v * kTaps + r * kKernel + s;  // a constant once unrolled
          w = Traits::load(filters[e / kVector].values[e % kVector]);
        } else {
          w = Traits::load(weight[(channel + v) * p.weight_strides.n +
                                  int64_t{r} * p.weight_strides.h +
                                  int64_t{s} * p.weight_strides.w]);
        }
        acc[v] = fmaf(Traits::load(gv.values[v]), w, acc[v]);
      }
    }
  }
  Vector out;
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    out.values[v] = Traits::store(acc[v]);
  }
  // Dense channels_last, as x: element (n, in_row, in_col, channel) is at index x kVector.
  reinterpret_cast<uint4*>(bp.grad_input)[index] = out.bits;
}

template <typename Storage, int kKernel, int kStride, Filters kFilters>
__global__ void __launch_bounds__(kThreads, kFilters == Filters::kStaged ? 2 : 0)
    depthwise_dgrad_channels_last_kernel(const ConvBackwardParams bp, const Storage* g_base,
                                         const Geometry g) {
  extern __shared__ uint4 staged[];  // kStaged: [tap][channel vector]
  if constexpr (kFilters == Filters::kStaged) {
    staged_filters::stage<Storage, kKernel, kThreads>(
        static_cast<const Storage*>(bp.conv.weight), bp.conv.weight_strides,
        static_cast<int>(g.vectors.divisor), staged);
    // Several items per thread, the copy paid once for them (a grid-stride walk).
    for (uint32_t index = blockIdx.x * kThreads + threadIdx.x; index < g.pixel_vectors;
         index += gridDim.x * kThreads) {
      dgrad_pixel<Storage, kKernel, kStride, kFilters>(bp, g_base, g, index, staged);
    }
  } else {
    const uint32_t index = blockIdx.x * kThreads + threadIdx.x;
    if (index < g.pixel_vectors) {
      dgrad_pixel<Storage, kKernel, kStride, kFilters>(bp, g_base, g, index, staged);
    }
  }
}

// grad_weight / grad_bias partials of CTA (slice, block of channel vectors). Thread t < active:
// vector t % vectors_per_block of the block, tap (t / vectors_per_block) % kTaps, lane
// t / (vectors_per_block x kTaps); tap 0's threads also sum g for the bias. partials[(slice x
// channels + channel) x (kTaps + 1) + tap], the bias at tap kTaps.
template <typename Storage, int kKernel>
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_channels_last_kernel(const ConvBackwardParams bp, const Storage* g_base,
                                         const Geometry g, float* partials) {
  using Traits = StorageTraits<Storage>;
  using Vector = Vector16<Storage>;
  constexpr int kVector = Vector::kCount;
  constexpr int kTaps = kKernel * kKernel;
  // Each active thread's sums (kVector taps, then kVector bias sums), lane-major.
  __shared__ float sums[kThreads][2 * kVector];
  const ConvParams& p = bp.conv;
  const int t = static_cast<int>(threadIdx.x);
  const bool active = t < g.active;
  const int local_vector = t % g.vectors_per_block;
  const int tap = (t / g.vectors_per_block) % kTaps;
  const int lane = t / (g.vectors_per_block * kTaps);
  const int64_t vector = int64_t{blockIdx.y} * g.vectors_per_block + local_vector;
  const int64_t channels = p.out_channels;
  const bool present = active && vector * kVector < channels;
  const int64_t channel = vector * kVector;
  const int tap_row = (tap / kKernel) * static_cast<int>(p.dilation_h) -
                      static_cast<int>(p.pad_top);
  const int tap_col = (tap % kKernel) * static_cast<int>(p.dilation_w) -
                      static_cast<int>(p.pad_left);
  const int in_height = static_cast<int>(p.in_height), in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int stride_h = static_cast<int>(p.stride_h), stride_w = static_cast<int>(p.stride_w);
  int64_t first_row, last_row;
  slice_row_range(p.batch * p.out_height, g.rows_per_slice, blockIdx.x, first_row, last_row);
  const Storage* __restrict__ x = static_cast<const Storage*>(p.input);

  float acc[kVector], bias[kVector];
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    acc[v] = 0.0f;
    bias[v] = 0.0f;
  }
  if (present) {
    for (int64_t row = first_row; row < last_row; ++row) {
      const uint32_t n = g.out_height.quotient(static_cast<uint32_t>(row));  // < 2^30 (applies)
      const int out_row = static_cast<int>(static_cast<uint32_t>(row) - n * g.out_height.divisor);
      const int in_row = out_row * stride_h + tap_row;
      const bool row_inside = static_cast<unsigned>(in_row) < static_cast<unsigned>(in_height);
      if (!row_inside && tap != 0) {
        continue;  // no x under this tap on this row; tap 0 still sums g for the bias
      }
      const Storage* __restrict__ g_row = g_base + row * out_width * channels + channel;
      const Storage* __restrict__ x_row =
          x + (int64_t{n} * in_height + in_row) * in_width * channels + channel;
      for (int out_col = lane; out_col < out_width; out_col += g.lanes) {
        Vector gv;
        gv.bits = __ldg(reinterpret_cast<const uint4*>(g_row + int64_t{out_col} * channels));
        if (tap == 0) {
#pragma unroll
          for (int v = 0; v < kVector; ++v) {
            bias[v] += Traits::load(gv.values[v]);
          }
        }
        const int in_col = out_col * stride_w + tap_col;
        if (row_inside && static_cast<unsigned>(in_col) < static_cast<unsigned>(in_width)) {
          Vector xv;
          xv.bits = __ldg(reinterpret_cast<const uint4*>(x_row + int64_t{in_col} * channels));
#pragma unroll
          for (int v = 0; v < kVector; ++v) {
            acc[v] = fmaf(Traits::load(gv.values[v]), Traits::load(xv.values[v]), acc[v]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    sums[t][v] = acc[v];
    sums[t][kVector + v] = bias[v];
  }
  __syncthreads();
  // Lane 0 of each (vector, tap) adds the lanes' sums in lane order and writes the partials.
  if (!present || lane != 0) {
    return;
  }
  const int stride = g.vectors_per_block * kTaps;  // threads between consecutive lanes
  float* out = partials + (int64_t{blockIdx.x} * channels + channel) * (kTaps + 1);
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    float total = 0.0f, bias_total = 0.0f;
    for (int l = 0; l < g.lanes; ++l) {
      total += sums[t + l * stride][v];
      bias_total += sums[t + l * stride][kVector + v];
    }
    out[v * (kTaps + 1) + tap] = total;
    if (tap == 0) {
      out[v * (kTaps + 1) + kTaps] = bias_total;
    }
  }
}

// The weight pass by sliding rows (a depthwise candidate, fusedconv/launch.h): the CTAs, slices
// and partials of depthwise_wgrad_channels_last_kernel, whose threads each take one tap and so
// load every position's g and x vectors k x k times between them. Here thread t < active
// takes vector t % vectors_per_block, kernel row (t / vectors_per_block) % k and a run of
// columns, lane t / (vectors_per_block x k) of `lanes` (k times as many): walking its run it
// loads g once per position and slides a window of k x vectors along the row, one new vector
// per column at stride 1 (two at stride 2). Padded taps are skipped, as there. Dilation 1.
template <typename Storage, int kKernel, int kStride>
__global__ void __launch_bounds__(kThreads, 2)
    depthwise_wgrad_channels_last_sliding_kernel(const ConvBackwardParams bp,
                                                 const Storage* g_base, const Geometry g,
                                                 float* partials) {
  using Traits = StorageTraits<Storage>;
  using Vector = Vector16<Storage>;
  constexpr int kVector = Vector::kCount;
  constexpr int kTaps = kKernel * kKernel;
  __shared__ float sums[kThreads][kVector];  // one tap (or the bias) of every thread at a time
  const ConvParams& p = bp.conv;
  const int t = static_cast<int>(threadIdx.x);
  const int lanes = g.lanes * kKernel;
  const bool active = t < g.vectors_per_block * kKernel * lanes;
  const int local_vector = t % g.vectors_per_block;
  const int kernel_row = (t / g.vectors_per_block) % kKernel;
  const int lane = t / (g.vectors_per_block * kKernel);
  const int64_t vector = int64_t{blockIdx.y} * g.vectors_per_block + local_vector;
  const int64_t channels = p.out_channels;
  const bool present = active && vector * kVector < channels;
  const int64_t channel = vector * kVector;
  const int in_height = static_cast<int>(p.in_height), in_width = static_cast<int>(p.in_width);
  const int out_width = static_cast<int>(p.out_width);
  const int pad_left = static_cast<int>(p.pad_left);
  // The lane's run of output columns: the row split evenly (runs differ by at most one column;
  // empty where there are fewer columns than lanes).
  const int first_col = static_cast<int>(int64_t{lane} * out_width / lanes);
  const int last_col = static_cast<int>(int64_t{lane + 1} * out_width / lanes);
  int64_t first_row, last_row;
  slice_row_range(p.batch * p.out_height, g.rows_per_slice, blockIdx.x, first_row, last_row);
  const Storage* __restrict__ x = static_cast<const Storage*>(p.input);

  float acc[kKernel][kVector], bias[kVector];
#pragma unroll
  for (int v = 0; v < kVector; ++v) {
    bias[v] = 0.0f;
#pragma unroll
    for (int s = 0; s < kKernel; ++s) {
      acc[s][v] = 0.0f;
    }
  }
  if (present && first_col < last_col) {
    for (int64_t row = first_row; row < last_row; ++row) {
      const uint32_t n = g.out_height.quotient(static_cast<uint32_t>(row));  // < 2^30 (applies)
      const int out_row = static_cast<int>(static_cast<uint32_t>(row) - n * g.out_height.divisor);
      const int in_row = out_row * kStride - static_cast<int>(p.pad_top) + kernel_row;
      const bool row_inside = static_cast<unsigned>(in_row) < static_cast<unsigned>(in_height);
      if (!row_inside && kernel_row != 0) {
        continue;  // no x under this kernel row; row 0's threads still sum g for the bias
      }
      const Storage* __restrict__ g_row = g_base + row * out_width * channels + channel;
      // Formed only for a row inside x (never read otherwise: every inside[s] is false).
      const Storage* __restrict__ x_row =
          row_inside ? x + (int64_t{n} * in_height + in_row) * in_width * channels + channel : x;
      // window[s]: the x vector under tap s of the current column, and whether it is inside.
      Vector window[kKernel];
      bool inside[kKernel];
      auto load = [&](int s, int in_col) {
        inside[s] = row_inside && static_cast<unsigned>(in_col) < static_cast<unsigned>(in_width);
        if (inside[s]) {
          const Storage* at = x_row + int64_t{in_col} * channels;
          window[s].bits = __ldg(reinterpret_cast<const uint4*>(at));
        }
      };
#pragma unroll
      for (int s = 0; s < kKernel; ++s) {
        load(s, first_col * kStride - pad_left + s);
      }
      for (int out_col = first_col; out_col < last_col; ++out_col) {
        if (out_col > first_col) {  // slide by the stride: the new taps enter on the right
#pragma unroll
          for (int s = 0; s < kKernel; ++s) {
            if (s + kStride < kKernel) {
              window[s] = window[s + kStride];
              inside[s] = inside[s + kStride];
            } else {
              load(s, out_col * kStride - pad_left + s);
            }
          }
        }
        Vector gv;
        gv.bits = __ldg(reinterpret_cast<const uint4*>(g_row + int64_t{out_col} * channels));
        if (kernel_row == 0) {
#pragma unroll
          for (int v = 0; v < kVector; ++v) {
            bias[v] += Traits::load(gv.values[v]);
          }
        }
#pragma unroll
        for (int s = 0; s < kKernel; ++s) {
          if (inside[s]) {
#pragma unroll
            for (int v = 0; v < kVector; ++v) {
              acc[s][v] = fmaf(Traits::load(gv.values[v]), Traits::load(window[s].values[v]),
                               acc[s][v]);
            }
          }
        }
      }
    }
  }
  // The lanes' sums in lane order, one tap at a time (then the bias), into the partials.
  const int stride = g.vectors_per_block * kKernel;  // threads between consecutive lanes
  float* out = partials + (int64_t{blockIdx.x} * channels + channel) * (kTaps + 1);
#pragma unroll
  for (int s = 0; s <= kKernel; ++s) {
#pragma unroll
    for (int v = 0; v < kVector; ++v) {
      sums[t][v] = s < kKernel ? acc[s][v] : bias[v];
    }
    __syncthreads();
    if (present && lane == 0 && (s < kKernel || kernel_row == 0)) {
#pragma unroll
      for (int v = 0; v < kVector; ++v) {
        float total = 0.0f;
        for (int l = 0; l < lanes; ++l) {
          total += sums[t + l * stride][v];
        }
        out[v * (kTaps + 1) + (s < kKernel ? kernel_row * kKernel + s : kTaps)] = total;
      }
    }
    __syncthreads();
  }
}

// grad_weight[c, 0, r, s] (dense) and grad_bias[c]: a warp per output; lane l adds slices l,
// l + 32, ... in order, then the warp adds its lanes by a butterfly (a fixed order).
template <typename Storage, int kKernel>
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_channels_last_reduce_kernel(const ConvBackwardParams bp, const Geometry g,
                                                const float* partials) {
  constexpr int kTaps = kKernel * kKernel;
  const int64_t index = (int64_t{blockIdx.x} * kThreads + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t channels = bp.conv.out_channels;
  if (index >= channels * (kTaps + 1)) {
    return;  // whole warps: index is the same across a warp
  }
  const int64_t c = index / (kTaps + 1);
  const int tap = static_cast<int>(index - c * (kTaps + 1));
  float total = 0.0f;
  for (int slice = lane; slice < g.slices; slice += 32) {
    total += partials[int64_t{slice} * channels * (kTaps + 1) + index];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  if (lane != 0) {
    return;
  }
  using Traits = StorageTraits<Storage>;
  if (tap < kTaps && bp.grad_weight != nullptr) {
    static_cast<Storage*>(bp.grad_weight)[c * kTaps + tap] = Traits::store(total);
  } else if (tap == kTaps && bp.grad_bias != nullptr) {
    static_cast<Storage*>(bp.grad_bias)[c] = Traits::store(total);
  }
}

// The weight pass's CTA shape: up to kThreads / taps channel vectors per block, the rest of the
// threads as lanes over each row's columns; and its slices (split_rows, per block of vectors).
void weight_pass_shape(const ConvParams& p, int64_t vector_count, const DeviceLimits& limits,
                       Geometry& g) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t per_block_most = kThreads / taps > 0 ? kThreads / taps : 1;
  const int64_t per_block = vector_count < per_block_most ? vector_count : per_block_most;
  g.vectors_per_block = static_cast<int32_t>(per_block);
  g.lanes = static_cast<int32_t>(kThreads / (per_block * taps));
  g.active = g.vectors_per_block * static_cast<int32_t>(taps) * g.lanes;
  const int64_t blocks = (vector_count + per_block - 1) / per_block;
  const int64_t wanted = (int64_t{limits.sm_count} * kSlicesPerSm + blocks - 1) / blocks;
  split_rows(p.batch * p.out_height, p.out_width, wanted,
             channels_last_min_positions(taps, element_bytes(p.dtype)), g.slices,
             g.rows_per_slice);
}

// Where grad_input reads its weights: staged where that candidate runs (depthwise_candidates.h)
// and they fit a CTA's shared memory; resident where each vector's filters are one dense,
// 16-byte aligned run (3x3 only: 25 or 49 vectors of registers are too many); per tap otherwise.
Filters dgrad_filters(const ConvParams& p, int64_t vector_count) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  if (run_candidate(DepthwiseCandidate::kStagedGradInput, p) &&
      staged_filters::bytes(taps, vector_count) <= staged_filters::kMaxBytes) {
    return Filters::kStaged;
  }
  const Strides4& w = p.weight_strides;
  const bool resident = p.kernel_h == 3 && w.n == taps && w.h == p.kernel_w && w.w == 1 &&
                        reinterpret_cast<uintptr_t>(p.weight) % 16 == 0;
  return resident ? Filters::kResident : Filters::kPerTap;
}

template <typename Storage, int kKernel, int kStride>
void launch_dgrad(const ConvBackwardParams& bp, const Storage* g_base, const Geometry& g,
                  Filters filters, cudaStream_t stream) {
  const uint32_t blocks = (g.pixel_vectors + kThreads - 1) / kThreads;
  if (filters == Filters::kStaged) {
    const int64_t items = staged_filters::items_per_thread(bp.conv.in_channels);
    const size_t bytes =
        static_cast<size_t>(staged_filters::bytes(kKernel * kKernel, g.vectors.divisor));
    depthwise_dgrad_channels_last_kernel<Storage, kKernel, kStride, Filters::kStaged>
        <<<static_cast<uint32_t>((blocks + items - 1) / items), kThreads, bytes, stream>>>(
            bp, g_base, g);
    return;
  }
  if constexpr (kKernel == 3) {
    if (filters == Filters::kResident) {
      depthwise_dgrad_channels_last_kernel<Storage, kKernel, kStride, Filters::kResident>
          <<<blocks, kThreads, 0, stream>>>(bp, g_base, g);
      return;
    }
  }
  depthwise_dgrad_channels_last_kernel<Storage, kKernel, kStride, Filters::kPerTap>
      <<<blocks, kThreads, 0, stream>>>(bp, g_base, g);
}

template <typename Storage, int kKernel>
cudaError_t launch_typed(const ConvBackwardParams& bp, Geometry g, int64_t vector_count,
                         const DeviceLimits& limits, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  Storage* const g_base = static_cast<Storage*>(bp.workspace);
  ActivationGradParams activation{};
  activation.numel = p.batch * p.out_channels * p.out_height * p.out_width;
  activation.dtype = p.dtype;
  activation.grad_output = bp.grad_output;
  activation.output = p.output;
  activation.grad_input = g_base;
  cudaError_t status = launch_hardswish_relu_grad(activation, stream);
  if (status != cudaSuccess) {
    return status;
  }
  if (bp.grad_input != nullptr && g.pixel_vectors > 0) {
    const Filters filters = dgrad_filters(p, vector_count);
    const bool square = p.stride_h == p.stride_w;
    if (square && p.stride_h == 1) {
      launch_dgrad<Storage, kKernel, 1>(bp, g_base, g, filters, stream);
    } else if (square && p.stride_h == 2) {
      launch_dgrad<Storage, kKernel, 2>(bp, g_base, g, filters, stream);
    } else {
      launch_dgrad<Storage, kKernel, 0>(bp, g_base, g, filters, stream);
    }
    status = cudaGetLastError();
    if (status != cudaSuccess) {
      return status;
    }
  }
  if (bp.grad_weight == nullptr && bp.grad_bias == nullptr) {
    return cudaSuccess;
  }
  weight_pass_shape(p, vector_count, limits, g);
  float* partials = reinterpret_cast<float*>(static_cast<unsigned char*>(bp.workspace) +
                                             partials_offset(p));
  const dim3 grid(static_cast<uint32_t>(g.slices),
                  static_cast<uint32_t>((vector_count + g.vectors_per_block - 1) /
                                        g.vectors_per_block));
  // The sliding weight pass where it applies and that candidate runs (the same partials).
  const bool sliding = sliding_weight_pass_applies(p) &&
                       run_candidate(DepthwiseCandidate::kSlidingWeightPass, p);
  bool slid = false;
  if constexpr (kKernel <= 5) {
    if (sliding) {
      if (p.stride_h == 1) {
        depthwise_wgrad_channels_last_sliding_kernel<Storage, kKernel, 1>
            <<<grid, kThreads, 0, stream>>>(bp, g_base, g, partials);
      } else {
        depthwise_wgrad_channels_last_sliding_kernel<Storage, kKernel, 2>
            <<<grid, kThreads, 0, stream>>>(bp, g_base, g, partials);
      }
      slid = true;
    }
  }
  if (!slid) {
    depthwise_wgrad_channels_last_kernel<Storage, kKernel>
        <<<grid, kThreads, 0, stream>>>(bp, g_base, g, partials);
  }
  status = cudaGetLastError();
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t reduce_threads = p.out_channels * (kKernel * kKernel + 1) * 32;  // warps
  const uint32_t blocks = static_cast<uint32_t>((reduce_threads + kThreads - 1) / kThreads);
  depthwise_wgrad_channels_last_reduce_kernel<Storage, kKernel>
      <<<blocks, kThreads, 0, stream>>>(bp, g, partials);
  return cudaGetLastError();
}

}  // namespace

bool applies(const ConvParams& p) {
  if (p.dtype == DType::kFloat64) {
    return false;
  }
  const int64_t vector = 16 / element_bytes(p.dtype);
  return p.in_channels % vector == 0 &&
         is_dense_channels_last(p.input_strides, p.in_channels, p.in_height, p.in_width) &&
         is_dense_channels_last(p.output_strides, p.out_channels, p.out_height, p.out_width) &&
         aligned_16(p.input) && aligned_16(p.output);
}

bool sliding_weight_pass_applies(const ConvParams& p) {
  return (p.kernel_h == 3 || p.kernel_h == 5) && p.kernel_w == p.kernel_h &&
         p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2) &&
         p.dilation_h == 1 && p.dilation_w == 1;
}

cudaError_t workspace_bytes(const ConvParams& p, bool params_wanted, int64_t& bytes) {
  bytes = partials_offset(p);  // g, whatever is asked for
  if (!params_wanted) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  Geometry g{};
  weight_pass_shape(p, p.out_channels / (16 / element_bytes(p.dtype)), limits, g);
  bytes += int64_t{g.slices} * p.out_channels * (p.kernel_h * p.kernel_w + 1) *
           int64_t{sizeof(float)};
  return cudaSuccess;
}

cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  // 16-byte accesses of g (the workspace) and of grad_input: a misaligned one is a sticky error.
  if (!aligned_16(bp.workspace) || (bp.grad_input != nullptr && !aligned_16(bp.grad_input))) {
    return cudaErrorInvalidValue;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t vector_count = p.in_channels / (16 / element_bytes(p.dtype));
  Geometry g{};
  g.vectors = FastDivisor::make(static_cast<uint32_t>(vector_count));
  g.in_width = FastDivisor::make(static_cast<uint32_t>(p.in_width));
  g.in_height = FastDivisor::make(static_cast<uint32_t>(p.in_height));
  g.out_height = FastDivisor::make(static_cast<uint32_t>(p.out_height));
  g.pixel_vectors =
      static_cast<uint32_t>(p.batch * p.in_height * p.in_width * vector_count);
  return dispatch_dtype(p.dtype, [&](auto zero) {
    using Storage = decltype(zero);
    if constexpr (sizeof(Storage) == 8) {
      return cudaErrorInvalidValue;  // applies leaves float64 to the floor
    } else if (p.kernel_h == 3) {
      return launch_typed<Storage, 3>(bp, g, vector_count, limits, stream);
    } else if (p.kernel_h == 5) {
      return launch_typed<Storage, 5>(bp, g, vector_count, limits, stream);
    } else {
      return launch_typed<Storage, 7>(bp, g, vector_count, limits, stream);
    }
  });
}

}  // namespace channels_last
}  // namespace depthwise_backward
}  // namespace fusedconv
