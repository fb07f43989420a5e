// Small-problem backward by bands of rows (issue 21): grad_input, grad_weight and grad_bias of a
// 3x3 stride-1 layer of the small-problem domain in one launch, where small_backward.cu's
// kernel is issue-bound (a bounds test and a 64-bit address per tap: 137-145 us at KernelBench
// v0 on an H100, against 60-85 us for this one; experiments/small_backward_tiled.cu).
//
// A CTA takes one band of R output rows and the same R input rows of one image:
// - it stages g = grad_y * f'(y) once for every output row and column its two jobs read (zero
//   off the output plane, so no tap is tested), x under its output rows' windows (zero in the
//   padding) and the weights;
// - weight sums: a thread per (co, ci, r) slides a 3-wide window of x along each output row, one
//   g and one x shared load and three FMAs a position; the bias rides on the (co, 0, 0) threads;
// - grad_x: a thread per input pixel gathers every (co, r, s) from the staged g.
// Zeros off the plane are multiplied, not skipped, as cuDNN's implicit GEMM does.
// The per-CTA partials are added in a fixed order by the last CTA to finish (a counter zeroed by
// a memset, the threadFenceReduction pattern), or from kTwoLevelCtas CTAs on in two levels: the
// last CTA of each group of kGroup, then the last group. Bitwise deterministic for a shape on a
// device (the band height follows the SM count). float32 FMAs: float32 accuracy in either
// precision mode, as the forward.
#include "backward/small_backward_bands.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "fusedconv/activation.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace small_backward_bands {
namespace {

constexpr int kThreads = 256;
constexpr int kK = 3;
constexpr int kTaps = kK * kK;
constexpr int kMaxOutChannels = 16;
constexpr int kMaxInChannels = 32 / kTaps;  // the small domain's 32 inputs per position
constexpr int kMaxPad = kK - 1;
constexpr int kMinRows = 4;
// Dynamic shared memory: the default 48 KB (no opt-in attribute to set per device) less room for
// the kernel's static `last` flag (16 bytes), which counts against the same 48 KB.
constexpr int kMaxSharedBytes = 47 * 1024;
constexpr int kGroup = 16;
// Measured in the study (H100): two levels and 8 loads in flight won at 384 and 512 CTAs (v0,
// 5-15 us) and lost 1-7 us at 32-256.
constexpr int kTwoLevelCtas = 384;
constexpr int kTwoLevelStageBatch = 8;

struct Problem {
  int batch, cin, cout, in_h, in_w, out_h, out_w, pad_top, pad_left;
  int rows, bands;  // R rows a band, bands an image
  int64_t w_n, w_c, w_h, w_w;  // the weight's strides
};

// The staged tiles of band b (elements).
struct Tile {
  int o0, o1;          // output rows [o0, o1) whose weight sums the CTA takes
  int i0, i1;          // input rows [i0, i1) whose grad_x it takes
  int g_row0, g_rows;  // staged g rows, zero off the plane
  int x_row0, x_rows;  // staged x rows (from o0 - pad_top), zero in the padding
};

// The staged g columns (every band alike) and the odd row pitches that spread a column's rows
// over the shared-memory banks.
struct Columns {
  int g_col0, g_cols, g_stride, x_cols, x_stride;
};

__host__ __device__ inline Columns columns_of(const Problem& q) {
  Columns c;
  c.g_col0 = q.pad_left - (kK - 1) < 0 ? q.pad_left - (kK - 1) : 0;
  const int last = q.out_w - 1 > q.in_w - 1 + q.pad_left ? q.out_w - 1 : q.in_w - 1 + q.pad_left;
  c.g_cols = last - c.g_col0 + 1;
  c.g_stride = c.g_cols | 1;
  c.x_cols = q.out_w + kK - 1;
  c.x_stride = c.x_cols | 1;
  return c;
}

__host__ __device__ inline Tile tile_of(const Problem& q, int band) {
  Tile t;
  const auto low = [](int a, int b) { return a < b ? a : b; };
  const auto high = [](int a, int b) { return a > b ? a : b; };
  t.o0 = low(band * q.rows, q.out_h);
  t.o1 = low(t.o0 + q.rows, q.out_h);
  t.i0 = low(band * q.rows, q.in_h);
  t.i1 = low(t.i0 + q.rows, q.in_h);
  // grad_x of row ih reads output rows ih + pad_top - r, r in [0, K).
  const int first = low(t.o0, t.i0 + q.pad_top - (kK - 1));
  const int last = high(t.o1 - 1, t.i1 - 1 + q.pad_top);
  t.g_row0 = first;
  t.g_rows = high(0, last - first + 1);
  t.x_row0 = t.o0 - q.pad_top;
  t.x_rows = t.o1 - t.o0 + kK - 1;
  return t;
}

// Shared floats for q's bands: the largest band's g and x tiles, the weights and the sums. Bands
// differ only where their row ranges are clipped by the plane's end: the output and input
// heights differ by at most 2 (padding 0-2 each side), so only the last three bands can be, and
// every other band has band 0's shape.
int64_t shared_floats(const Problem& q) {
  const Columns c = columns_of(q);
  int64_t tiles = 0;
  for (int band = 0; band < q.bands; band = band == 0 ? std::max(1, q.bands - 3) : band + 1) {
    const Tile t = tile_of(q, band);
    tiles = std::max(tiles, q.cout * int64_t{t.g_rows} * c.g_stride +
                                q.cin * int64_t{t.x_rows} * c.x_stride);
  }
  const int64_t k_count = int64_t{q.cin} * kTaps;
  return tiles + q.cout * k_count + q.cout * (k_count + 1);
}

// Loads in flight: kBatch elements a thread per step, every load issued before the first store.
template <int kBatch, typename Load, typename Store>
__device__ __forceinline__ void stage(int total, Load load, Store store) {
  for (int base = static_cast<int>(threadIdx.x); base < total; base += kThreads * kBatch) {
    float v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = base + u * kThreads;
      v[u] = e < total ? load(e) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = base + u * kThreads;
      if (e < total) {
        store(e, v[u]);
      }
    }
  }
}

template <bool kTwoLevel>
__global__ void __launch_bounds__(kThreads)
    small_backward_bands_kernel(const Problem q, const float* __restrict__ grad_y,
                                const float* __restrict__ y, const float* __restrict__ x,
                                const float* __restrict__ weight, float* __restrict__ grad_x,
                                float* __restrict__ grad_w, float* __restrict__ grad_b,
                                float* partials, unsigned int* counters) {
  extern __shared__ float shared[];
  __shared__ bool last;
  const int n = static_cast<int>(blockIdx.x) / q.bands;
  const int band = static_cast<int>(blockIdx.x) - n * q.bands;
  const Tile t = tile_of(q, band);
  const Columns c = columns_of(q);
  const int k_count = q.cin * kTaps;
  const bool params_wanted = partials != nullptr;
  float* g_s = shared;                                 // [cout][g_rows][g_stride]
  float* x_s = g_s + q.cout * t.g_rows * c.g_stride;   // [cin][x_rows][x_stride]
  float* w_s = x_s + q.cin * t.x_rows * c.x_stride;    // [cout][cin][K][K]
  float* sums = w_s + q.cout * k_count;                // [cout][k_count + 1]
  const int tid = static_cast<int>(threadIdx.x);
  constexpr int kBatch = kTwoLevel ? kTwoLevelStageBatch : 1;

  const int g_plane = t.g_rows * c.g_cols;
  stage<kBatch>(
      q.cout * g_plane,
      [&](int e) {
        const int co = e / g_plane, rc = e - co * g_plane;
        const int oh = t.g_row0 + rc / c.g_cols, ow = c.g_col0 + rc % c.g_cols;
        float g = 0.0f;
        if (oh >= 0 && oh < q.out_h && ow >= 0 && ow < q.out_w) {
          const int64_t at = ((int64_t{n} * q.cout + co) * q.out_h + oh) * q.out_w + ow;
          g = HardSwishReLU<float>::backward(grad_y[at], y[at]);
        }
        return g;
      },
      [&](int e, float g) {
        const int co = e / g_plane, rc = e - co * g_plane;
        g_s[(co * t.g_rows + rc / c.g_cols) * c.g_stride + rc % c.g_cols] = g;
      });
  if (params_wanted) {
    const int x_plane = t.x_rows * c.x_cols;
    stage<kBatch>(
        q.cin * x_plane,
        [&](int e) {
          const int ci = e / x_plane, rc = e - ci * x_plane;
          const int ih = t.x_row0 + rc / c.x_cols, iw = rc % c.x_cols - q.pad_left;
          return ih >= 0 && ih < q.in_h && iw >= 0 && iw < q.in_w
                     ? x[((int64_t{n} * q.cin + ci) * q.in_h + ih) * q.in_w + iw]
                     : 0.0f;
        },
        [&](int e, float v) {
          const int ci = e / x_plane, rc = e - ci * x_plane;
          x_s[(ci * t.x_rows + rc / c.x_cols) * c.x_stride + rc % c.x_cols] = v;
        });
  }
  if (grad_x != nullptr) {
    stage<kBatch>(
        q.cout * k_count,
        [&](int e) {
          const int co = e / k_count, k = e - co * k_count;
          const int ci = k / kTaps, rs = k - ci * kTaps;
          return weight[co * q.w_n + ci * q.w_c + rs / kK * q.w_h + rs % kK * q.w_w];
        },
        [&](int e, float v) { w_s[e] = v; });
  }
  __syncthreads();

  // Weight and bias sums over the band's output rows: a thread per (co, ci, r).
  if (params_wanted) {
    const int out_rows = t.o1 - t.o0;
    for (int item = tid; item < q.cout * q.cin * kK; item += kThreads) {
      const int co = item / (q.cin * kK), rest = item - co * q.cin * kK;
      const int ci = rest / kK, r = rest - ci * kK;
      float acc[kK];
#pragma unroll
      for (int s = 0; s < kK; ++s) {
        acc[s] = 0.0f;
      }
      float acc_bias = 0.0f;
      for (int row = 0; row < out_rows; ++row) {
        const float* g_row =
            g_s + (co * t.g_rows + (t.o0 + row - t.g_row0)) * c.g_stride - c.g_col0;
        const float* x_row = x_s + (ci * t.x_rows + row + r) * c.x_stride;
        float window[kK];
#pragma unroll
        for (int s = 0; s < kK - 1; ++s) {
          window[s] = x_row[s];
        }
        for (int ow = 0; ow < q.out_w; ++ow) {
          window[kK - 1] = x_row[ow + kK - 1];
          const float g = g_row[ow];
          acc_bias += g;
#pragma unroll
          for (int s = 0; s < kK; ++s) {
            acc[s] = fmaf(g, window[s], acc[s]);
          }
#pragma unroll
          for (int s = 0; s < kK - 1; ++s) {
            window[s] = window[s + 1];
          }
        }
      }
      float* co_sums = sums + co * (k_count + 1);
#pragma unroll
      for (int s = 0; s < kK; ++s) {
        co_sums[ci * kTaps + r * kK + s] = acc[s];
      }
      if (ci == 0 && r == 0) {
        co_sums[k_count] = acc_bias;
      }
    }
  }

  // grad_x of the band's input rows (no barrier before: it reads only g and the weights).
  if (grad_x != nullptr) {
    const int pixels = (t.i1 - t.i0) * q.in_w;
    for (int e = tid; e < pixels; e += kThreads) {
      const int ih = t.i0 + e / q.in_w, iw = e % q.in_w;
      float acc[kMaxInChannels];
#pragma unroll
      for (int ci = 0; ci < kMaxInChannels; ++ci) {
        acc[ci] = 0.0f;
      }
      for (int co = 0; co < q.cout; ++co) {
        // g at output (ih + pad_top - r, iw + pad_left - s): staged, zero off the plane.
        const float* g_at = g_s + (co * t.g_rows + (ih + q.pad_top - t.g_row0)) * c.g_stride +
                            (iw + q.pad_left - c.g_col0);
        const float* w_co = w_s + co * k_count;
#pragma unroll
        for (int r = 0; r < kK; ++r) {
#pragma unroll
          for (int s = 0; s < kK; ++s) {
            const float g = g_at[-r * c.g_stride - s];
#pragma unroll
            for (int ci = 0; ci < kMaxInChannels; ++ci) {
              if (ci < q.cin) {
                acc[ci] = fmaf(g, w_co[ci * kTaps + r * kK + s], acc[ci]);
              }
            }
          }
        }
      }
#pragma unroll
      for (int ci = 0; ci < kMaxInChannels; ++ci) {
        if (ci < q.cin) {
          grad_x[((int64_t{n} * q.cin + ci) * q.in_h + ih) * q.in_w + iw] = acc[ci];
        }
      }
    }
  }
  if (!params_wanted) {
    return;
  }

  const int slots = q.cout * (k_count + 1);
  __syncthreads();
  float* cta_partials = partials + int64_t{blockIdx.x} * slots;
  for (int e = tid; e < slots; e += kThreads) {
    cta_partials[e] = sums[e];
  }
  const int ctas = static_cast<int>(gridDim.x);
  const int group = kTwoLevel ? static_cast<int>(blockIdx.x) / kGroup : 0;
  const int group_first = kTwoLevel ? group * kGroup : 0;
  const int group_size = kTwoLevel ? min(kGroup, ctas - group_first) : ctas;
  const int groups = kTwoLevel ? (ctas + kGroup - 1) / kGroup : 1;
  // Whether this CTA is the last of `arrivals` to count on `counter`: each writer's stores made
  // visible before its count, the last one's loads (from L2) after everyone's.
  const auto arrives_last = [&](unsigned int* counter, int arrivals) {
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      last = atomicAdd(counter, 1u) == static_cast<unsigned int>(arrivals - 1);
    }
    __syncthreads();
    if (last) {
      __threadfence();
    }
    return last;
  };
  // grad_weight and grad_bias: each slot the sum of `count` rows of sums in row order.
  const auto write_sums = [&](const float* rows, int count) {
    for (int e = tid; e < slots; e += kThreads) {
      float total = 0.0f;
#pragma unroll 8
      for (int b = 0; b < count; ++b) {
        total += __ldcg(rows + int64_t{b} * slots + e);
      }
      const int co = e / (k_count + 1), k = e - co * (k_count + 1);
      if (k == k_count) {
        if (grad_b != nullptr) {
          grad_b[co] = total;
        }
      } else if (grad_w != nullptr) {
        grad_w[co * k_count + k] = total;
      }
    }
  };
  if (!arrives_last(counters + group, group_size)) {
    return;
  }
  if (!kTwoLevel) {
    write_sums(partials, ctas);
    return;
  }
  float* group_sums = partials + int64_t{ctas} * slots;  // [groups][slots]
  for (int e = tid; e < slots; e += kThreads) {
    float v[kGroup];
#pragma unroll
    for (int b = 0; b < kGroup; ++b) {
      v[b] = b < group_size ? __ldcg(partials + int64_t{group_first + b} * slots + e) : 0.0f;
    }
    float total = 0.0f;
#pragma unroll
    for (int b = 0; b < kGroup; ++b) {
      total += v[b];
    }
    group_sums[int64_t{group} * slots + e] = total;
  }
  if (arrives_last(counters + groups, groups)) {
    write_sums(group_sums, groups);
  }
}

// The launch's shape: bands of about four CTAs an SM over the batch (the study's fastest v0 grid
// was 512 CTAs of 8 rows on 132 SMs), at least kMinRows rows, within the shared memory (fewer
// rows while the largest band's tiles do not fit).
struct Launch {
  Problem q;
  int ctas, groups;  // groups: 0 with one level
  int64_t shared_bytes;
};

bool launch_of(const ConvParams& p, const DeviceLimits& limits, Launch& l) {
  Problem& q = l.q;
  q = Problem{};
  q.batch = static_cast<int>(p.batch);
  q.cin = static_cast<int>(p.in_channels);
  q.cout = static_cast<int>(p.out_channels);
  q.in_h = static_cast<int>(p.in_height);
  q.in_w = static_cast<int>(p.in_width);
  q.out_h = static_cast<int>(p.out_height);
  q.out_w = static_cast<int>(p.out_width);
  q.pad_top = static_cast<int>(p.pad_top);
  q.pad_left = static_cast<int>(p.pad_left);
  q.w_n = p.weight_strides.n;
  q.w_c = p.weight_strides.c;
  q.w_h = p.weight_strides.h;
  q.w_w = p.weight_strides.w;
  const int tall = std::max(q.out_h, q.in_h);
  const int64_t wanted = (int64_t{tall} * q.batch + 4 * limits.sm_count - 1) /
                         (4 * int64_t{limits.sm_count});
  const int least = std::min(kMinRows, tall);
  // An interior band of R rows stages R + 2 rows of g and of x: start from the most that fit so,
  // then the bands evened out (rows = ceil(tall / bands)), fewer rows while the largest does not.
  const Columns c = columns_of(q);
  const int64_t per_row = int64_t{q.cout} * c.g_stride + int64_t{q.cin} * c.x_stride;
  const int64_t fixed = 2 * per_row + int64_t{q.cout} * (2 * q.cin * kTaps + 1);
  const int64_t fit = std::max<int64_t>(least, (kMaxSharedBytes / 4 - fixed) / per_row);
  const int64_t start = std::min<int64_t>({tall, fit, std::max<int64_t>(least, wanted)});
  for (int rows = static_cast<int>(start);; --rows) {
    q.bands = (tall + rows - 1) / rows;
    q.rows = (tall + q.bands - 1) / q.bands;
    l.shared_bytes = shared_floats(q) * 4;
    if (l.shared_bytes <= kMaxSharedBytes) {
      break;
    }
    if (rows <= least) {
      return false;
    }
  }
  const int64_t ctas = int64_t{q.batch} * q.bands;
  if (ctas >= (int64_t{1} << 31) - kGroup) {
    return false;
  }
  l.ctas = static_cast<int>(ctas);
  l.groups = l.ctas >= kTwoLevelCtas ? (l.ctas + kGroup - 1) / kGroup : 0;
  return true;
}

// launch_of on the current device; cudaErrorInvalidValue where no band fits.
cudaError_t launch_for(const ConvParams& p, Launch& l) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  return launch_of(p, limits, l) ? cudaSuccess : cudaErrorInvalidValue;
}

// The workspace: partials [ctas + groups][slots] floats, then groups + 1 counters.
int64_t counters_offset(const Launch& l) {
  const int64_t slots = int64_t{l.q.cout} * (l.q.cin * kTaps + 1);
  return ((int64_t{l.ctas} + l.groups) * slots * 4 + 15) / 16 * 16;
}

}  // namespace

bool applies(const ConvParams& p) {
  if (p.kernel_h != kK || p.kernel_w != kK || p.stride_h != 1 || p.stride_w != 1 ||
      p.dilation_h != 1 || p.dilation_w != 1 || p.out_channels > kMaxOutChannels ||
      p.in_channels > kMaxInChannels || p.pad_top > kMaxPad || p.pad_left > kMaxPad ||
      p.out_height + kK - 1 - p.in_height - p.pad_top > kMaxPad ||  // bottom padding
      p.out_width + kK - 1 - p.in_width - p.pad_left > kMaxPad ||   // right padding
      p.out_height < 1 || p.out_width < 1) {
    return false;
  }
  Launch l{};
  return launch_for(p, l) == cudaSuccess;
}

cudaError_t workspace_bytes(const ConvParams& p, bool params_wanted, int64_t& bytes) {
  bytes = 0;
  if (!params_wanted) {
    return cudaSuccess;
  }
  Launch l{};
  const cudaError_t status = launch_for(p, l);
  if (status == cudaSuccess) {
    bytes = counters_offset(l) + (l.groups + 1) * int64_t{4};
  }
  return status;
}

cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream) {
  const ConvParams& p = bp.conv;
  Launch l{};
  cudaError_t status = launch_for(p, l);
  if (status != cudaSuccess) {
    return status;
  }
  float* partials = nullptr;
  unsigned int* counters = nullptr;
  if (bp.grad_weight != nullptr || bp.grad_bias != nullptr) {
    if (bp.workspace == nullptr) {
      return cudaErrorInvalidValue;
    }
    partials = static_cast<float*>(bp.workspace);
    counters = reinterpret_cast<unsigned int*>(static_cast<char*>(bp.workspace) +
                                               counters_offset(l));
    status = cudaMemsetAsync(counters, 0, (l.groups + 1) * sizeof(unsigned int), stream);
    if (status != cudaSuccess) {
      return status;
    }
  } else if (bp.grad_input == nullptr) {
    return cudaSuccess;
  }
  const auto* grad_y = static_cast<const float*>(bp.grad_output);
  const auto* y = static_cast<const float*>(p.output);
  const auto* x = static_cast<const float*>(p.input);
  const auto* weight = static_cast<const float*>(p.weight);
  auto* grad_x = static_cast<float*>(bp.grad_input);
  auto* grad_w = static_cast<float*>(bp.grad_weight);
  auto* grad_b = static_cast<float*>(bp.grad_bias);
  const dim3 grid(static_cast<uint32_t>(l.ctas));
  const auto smem = static_cast<size_t>(l.shared_bytes);
  if (l.groups > 0) {
    small_backward_bands_kernel<true><<<grid, kThreads, smem, stream>>>(
        l.q, grad_y, y, x, weight, grad_x, grad_w, grad_b, partials, counters);
  } else {
    small_backward_bands_kernel<false><<<grid, kThreads, smem, stream>>>(
        l.q, grad_y, y, x, weight, grad_x, grad_w, grad_b, partials, counters);
  }
  return cudaGetLastError();
}

}  // namespace small_backward_bands
}  // namespace fusedconv
