// Question: can a tiled one-launch backward of the small-problem domain (float32 NCHW, groups 1,
// up to 16 output channels and 32 inputs per position) take KernelBench v0's backward (batch
// 128, 3 -> 16, 32x32, 3x3) near its ~16 MB of traffic, where the package's small backward
// (csrc/cuda/backward/small_backward.cu) took 184 us under ncu and 131 us in the profiler
// (seventeenth session, H100: issue-bound, a bounds test and a 64-bit address per tap)?
// Answer (eighteenth session, H100, us per launch with its counter memset, median of 50):
// 1.1-2.4x faster than the package kernel on every 3x3 shape tried, 60-85 us at v0 (package
// 137-145), but 4-5x the ~15 us predicted (256 CTAs of ~29k warp instructions); 1x1 lost 2 of 3
// (cin 8 and 32). v2 (8 loads in flight a thread, two levels of sums) won at 384-512 CTAs and
// lost 1-7 us at 32-256. Ported as csrc/cuda/backward/small_backward_bands.cu (3x3 stride 1);
// with that file linked the "package" line below is the bands kernel wherever it applies.
//
// Design (stride 1, dilation 1, square compile-time kernel K, any padding):
// - A CTA takes one band of R output rows and the same R input rows of one image.
// - It stages g = grad_y * f'(y) once for every output row and column its two jobs read, zero
//   outside the output plane (so no tap is tested), and x for its output rows' windows, zero in
//   the padding.
// - Weight sums: a thread per (co, ci, r) slides along each output row with a window of K x
//   values in registers: per position one g and one x shared load and K FMAs; the bias rides
//   on the (co, 0, 0) threads. Partials per CTA, then the last CTA adds them in CTA order
//   (counter zeroed by a memset, the threadFenceReduction pattern): bitwise deterministic.
// - grad_x: a thread per input pixel gathers every (co, r, s) from the staged g, weights
//   broadcast from shared memory.
// Padded zeros are multiplied, not skipped: a non-finite weight over the padding gives NaN at
// the border where the package kernel skips it (cuDNN multiplies too).
//
// Build and run (prints us per launch, median of 50, and errors against a float64 CPU
// reference; the package kernel in the same process for the A/B):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc/include -Icsrc/cuda \
//     -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
//     experiments/small_backward_tiled.cu csrc/cuda/backward/small_backward.cu \
//     csrc/cuda/backward/small_backward_bands.cu -o sbt
//   ./sbt [batch cin cout size kernel pad rows]     (default: 128 3 16 32 3 0 15)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backward/small_backward.h"
#include "fusedconv/activation.h"
#include "fusedconv/params.h"

#define CHECK(call)                                                                 \
  do {                                                                              \
    const cudaError_t status_ = (call);                                             \
    if (status_ != cudaSuccess) {                                                   \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(status_)); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

namespace {

using fusedconv::HardSwishReLU;

constexpr int kThreads = 256;
constexpr int kMaxOut = 16;
constexpr int kMaxInputs = 32;  // in_channels x K x K

struct Problem {
  int batch, cin, cout, in_h, in_w, out_h, out_w, pad;
  int rows;   // R: output and input rows per band
  int bands;  // ceil(max(out_h, in_h) / R)
};

// The staged tiles of band b (all in elements; see the top of the file).
struct Tile {
  int o0, o1;        // output rows [o0, o1) whose weight sums the CTA takes
  int i0, i1;        // input rows [i0, i1) whose grad_x it takes
  int g_row0, g_rows;  // staged g rows [g_row0, g_row0 + g_rows), zero off the plane
  int g_col0, g_cols;  // staged g columns likewise
  int x_row0, x_rows;  // staged x rows (o0 - pad ...), zero in the padding
  int x_cols;          // out_w + K - 1 columns from -pad
  int g_stride, x_stride;  // odd row pitches: rows of one column spread over the banks
};

template <int K>
__host__ __device__ Tile tile_of(const Problem& q, int band) {
  Tile t;
  t.o0 = min(band * q.rows, q.out_h);
  t.o1 = min(t.o0 + q.rows, q.out_h);
  t.i0 = min(band * q.rows, q.in_h);
  t.i1 = min(t.i0 + q.rows, q.in_h);
  // grad_x of row ih reads output rows ih + pad - r, r in [0, K).
  const int first = min(t.o0, t.i0 + q.pad - (K - 1));
  const int last = max(t.o1 - 1, t.i1 - 1 + q.pad);
  t.g_row0 = first;
  t.g_rows = max(0, last - first + 1);
  t.g_col0 = min(0, q.pad - (K - 1));
  t.g_cols = max(q.out_w - 1, q.in_w - 1 + q.pad) - t.g_col0 + 1;
  t.x_row0 = t.o0 - q.pad;
  t.x_rows = max(0, t.o1 - t.o0) + K - 1;
  t.x_cols = q.out_w + K - 1;
  t.g_stride = t.g_cols | 1;
  t.x_stride = t.x_cols | 1;
  return t;
}

template <int K>
int shared_floats(const Problem& q) {
  int most = 0;
  for (int b = 0; b < q.bands; ++b) {
    const Tile t = tile_of<K>(q, b);
    most = std::max(most, q.cout * t.g_rows * t.g_stride + q.cin * t.x_rows * t.x_stride);
  }
  return most + kMaxOut * kMaxInputs + kMaxOut * (kMaxInputs + 1);
}

// Loads in flight: U elements a thread per step, all loads issued before the first store (the
// plain loop waited one memory latency per element: 36 steps for g at v0).
template <int U, typename Load, typename Store>
__device__ __forceinline__ void stage(int total, Load load, Store store) {
  for (int base = threadIdx.x; base < total; base += kThreads * U) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int e = base + u * kThreads;
      v[u] = e < total ? load(e) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int e = base + u * kThreads;
      if (e < total) {
        store(e, v[u]);
      }
    }
  }
}

constexpr int kGroup = 16;  // CTAs whose partials one CTA adds at the first level (v2)

// v1: one load a step, a barrier between the weight sums and grad_x, the last CTA adds every
// CTA's partials. v2 (kV2): U = 8 loads in flight, no barrier between the two jobs (grad_x
// needs only g), two levels of fixed-order sums (groups of kGroup CTAs, then the groups).
template <int K, bool kV2>
__global__ void __launch_bounds__(kThreads)
    tiled_small_backward(Problem q, const float* __restrict__ grad_y, const float* __restrict__ y,
                         const float* __restrict__ x, const float* __restrict__ weight,
                         float* __restrict__ grad_x, float* __restrict__ grad_w,
                         float* __restrict__ grad_b, float* partials, unsigned int* counter) {
  extern __shared__ float shared[];
  const int n = blockIdx.x / q.bands, band = blockIdx.x % q.bands;
  const Tile t = tile_of<K>(q, band);
  constexpr int kTaps = K * K;
  const int k_count = q.cin * kTaps;
  float* g_s = shared;                                   // [cout][g_rows][g_stride]
  float* x_s = g_s + q.cout * t.g_rows * t.g_stride;     // [cin][x_rows][x_stride]
  float* w_s = x_s + q.cin * t.x_rows * t.x_stride;      // [cout][cin][K][K]
  float* sums = w_s + kMaxOut * kMaxInputs;              // [cout][k_count + 1]
  const int tid = threadIdx.x;

  // Stage g, x and the weights.
  const int g_plane = t.g_rows * t.g_cols;
  auto load_g = [&](int e) {
    const int co = e / g_plane, rc = e - co * g_plane;
    const int oh = t.g_row0 + rc / t.g_cols, ow = t.g_col0 + rc % t.g_cols;
    float g = 0.0f;
    if (oh >= 0 && oh < q.out_h && ow >= 0 && ow < q.out_w) {
      const long long at = ((long long)(n * q.cout + co) * q.out_h + oh) * q.out_w + ow;
      g = HardSwishReLU<float>::backward(grad_y[at], y[at]);
    }
    return g;
  };
  auto store_g = [&](int e, float g) {
    const int co = e / g_plane, rc = e - co * g_plane;
    g_s[(co * t.g_rows + rc / t.g_cols) * t.g_stride + rc % t.g_cols] = g;
  };
  const int x_plane = t.x_rows * t.x_cols;
  auto load_x = [&](int e) {
    const int ci = e / x_plane, rc = e - ci * x_plane;
    const int ih = t.x_row0 + rc / t.x_cols, iw = rc % t.x_cols - q.pad;
    return ih >= 0 && ih < q.in_h && iw >= 0 && iw < q.in_w
               ? x[((long long)(n * q.cin + ci) * q.in_h + ih) * q.in_w + iw]
               : 0.0f;
  };
  auto store_x = [&](int e, float v) {
    const int ci = e / x_plane, rc = e - ci * x_plane;
    x_s[(ci * t.x_rows + rc / t.x_cols) * t.x_stride + rc % t.x_cols] = v;
  };
  auto load_w = [&](int e) { return weight[e]; };  // dense [cout][cin][K][K]
  auto store_w = [&](int e, float v) { w_s[e] = v; };
  constexpr int U = kV2 ? 8 : 1;
  stage<U>(q.cout * g_plane, load_g, store_g);
  stage<U>(q.cin * x_plane, load_x, store_x);
  stage<U>(q.cout * k_count, load_w, store_w);
  __syncthreads();

  // Weight and bias sums over this band's output rows: a thread per (co, ci, r).
  const int out_rows = t.o1 - t.o0;
  const int triples = q.cout * q.cin * K;
  for (int item = tid; item < triples; item += kThreads) {
    const int co = item / (q.cin * K), rest = item - co * q.cin * K;
    const int ci = rest / K, r = rest - ci * K;
    float acc[K];
#pragma unroll
    for (int s = 0; s < K; ++s) {
      acc[s] = 0.0f;
    }
    float acc_bias = 0.0f;
    for (int row = 0; row < out_rows; ++row) {
      const float* g_row =
          g_s + (co * t.g_rows + (t.o0 + row - t.g_row0)) * t.g_stride - t.g_col0;
      const float* x_row = x_s + (ci * t.x_rows + row + r) * t.x_stride;
      float window[K];
#pragma unroll
      for (int s = 0; s < K - 1; ++s) {
        window[s] = x_row[s];
      }
      for (int ow = 0; ow < q.out_w; ++ow) {
        window[K - 1] = x_row[ow + K - 1];
        const float g = g_row[ow];
        acc_bias += g;
#pragma unroll
        for (int s = 0; s < K; ++s) {
          acc[s] = fmaf(g, window[s], acc[s]);
        }
#pragma unroll
        for (int s = 0; s < K - 1; ++s) {
          window[s] = window[s + 1];
        }
      }
    }
    float* co_sums = sums + co * (k_count + 1);
#pragma unroll
    for (int s = 0; s < K; ++s) {
      co_sums[ci * kTaps + r * K + s] = acc[s];
    }
    if (ci == 0 && r == 0) {
      co_sums[k_count] = acc_bias;
    }
  }
  const int slots = q.cout * (k_count + 1);
  float* cta_partials = partials + (long long)blockIdx.x * slots;
  if (!kV2) {
    __syncthreads();
    for (int e = tid; e < slots; e += kThreads) {
      cta_partials[e] = sums[e];
    }
  }

  // grad_x of this band's input rows: a thread per pixel, every (co, r, s) from the staged g.
  constexpr int kMaxCin = kMaxInputs / kTaps;
  const int pixels = (t.i1 - t.i0) * q.in_w;
  for (int e = tid; e < pixels; e += kThreads) {
    const int ih = t.i0 + e / q.in_w, iw = e % q.in_w;
    float acc[kMaxCin];
#pragma unroll
    for (int ci = 0; ci < kMaxCin; ++ci) {
      acc[ci] = 0.0f;
    }
    for (int co = 0; co < q.cout; ++co) {
      // g at output (ih + pad - r, iw + pad - s): staged, zero off the plane.
      const float* g_at = g_s + (co * t.g_rows + (ih + q.pad - t.g_row0)) * t.g_stride +
                          (iw + q.pad - t.g_col0);
      const float* w_co = w_s + co * k_count;
#pragma unroll
      for (int r = 0; r < K; ++r) {
#pragma unroll
        for (int s = 0; s < K; ++s) {
          const float g = g_at[-r * t.g_stride - s];
#pragma unroll
          for (int ci = 0; ci < kMaxCin; ++ci) {
            if (ci < q.cin) {
              acc[ci] = fmaf(g, w_co[ci * kTaps + r * K + s], acc[ci]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int ci = 0; ci < kMaxCin; ++ci) {
      if (ci < q.cin) {
        grad_x[((long long)(n * q.cin + ci) * q.in_h + ih) * q.in_w + iw] = acc[ci];
      }
    }
  }

  if (kV2) {
    __syncthreads();
    for (int e = tid; e < slots; e += kThreads) {
      cta_partials[e] = sums[e];
    }
  }

  // The last CTA adds every CTA's partials in CTA order (v1), or the last CTA of each group of
  // kGroup adds its group's, then the last of those adds the groups' in group order (v2).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  const int ctas = static_cast<int>(gridDim.x);
  const int group = kV2 ? blockIdx.x / kGroup : 0;
  const int group_first = group * (kV2 ? kGroup : ctas);
  const int group_size = kV2 ? min(kGroup, ctas - group_first) : ctas;
  const int groups = kV2 ? (ctas + kGroup - 1) / kGroup : 1;
  if (tid == 0) {
    last = atomicAdd(counter + group, 1u) == static_cast<unsigned int>(group_size - 1);
  }
  __syncthreads();
  if (!last) {
    return;
  }
  __threadfence();
  auto write = [&](int e, float total) {
    const int co = e / (k_count + 1), k = e - co * (k_count + 1);
    if (k == k_count) {
      grad_b[co] = total;
    } else {
      grad_w[co * k_count + k] = total;
    }
  };
  if (!kV2) {
    for (int e = tid; e < slots; e += kThreads) {
      float total = 0.0f;
#pragma unroll 8
      for (int b = 0; b < ctas; ++b) {
        total += __ldcg(partials + (long long)b * slots + e);
      }
      write(e, total);
    }
    return;
  }
  float* group_sums = partials + (long long)ctas * slots;  // [groups][slots]
  for (int e = tid; e < slots; e += kThreads) {
    float v[kGroup];
#pragma unroll
    for (int b = 0; b < kGroup; ++b) {
      v[b] = b < group_size ? __ldcg(partials + (long long)(group_first + b) * slots + e) : 0.0f;
    }
    float total = 0.0f;
#pragma unroll
    for (int b = 0; b < kGroup; ++b) {
      total += v[b];
    }
    group_sums[(long long)group * slots + e] = total;
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    last = atomicAdd(counter + groups, 1u) == static_cast<unsigned int>(groups - 1);
  }
  __syncthreads();
  if (!last) {
    return;
  }
  __threadfence();
  for (int e = tid; e < slots; e += kThreads) {
    float total = 0.0f;
#pragma unroll 8
    for (int b = 0; b < groups; ++b) {
      total += __ldcg(group_sums + (long long)b * slots + e);
    }
    write(e, total);
  }
}

float hardswish_relu(double z) {
  return HardSwishReLU<float>::value(static_cast<float>(z));
}

double max_relative(const std::vector<float>& a, const std::vector<double>& b) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(err / std::max(norm, 1e-300));
}

template <typename Fn>
float median_us(Fn fn) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> samples;
  for (int i = 0; i < 60; ++i) {
    CHECK(cudaEventRecord(start));
    fn();
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (i >= 10) {
      samples.push_back(ms * 1e3f);
    }
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int arg[7] = {128, 3, 16, 32, 3, 0, 15};
  for (int i = 1; i < argc && i <= 7; ++i) {
    arg[i - 1] = std::atoi(argv[i]);
  }
  Problem q{};
  q.batch = arg[0];
  q.cin = arg[1];
  q.cout = arg[2];
  q.in_h = q.in_w = arg[3];
  const int k = arg[4];
  q.pad = arg[5];
  q.rows = arg[6];
  q.out_h = q.out_w = q.in_h + 2 * q.pad - k + 1;
  q.bands = (std::max(q.out_h, q.in_h) + q.rows - 1) / q.rows;
  if ((k != 1 && k != 3) || q.cout > kMaxOut || q.cin * k * k > kMaxInputs || q.out_h < 1) {
    std::fprintf(stderr, "this study instantiates K = 1 and 3 within the small domain only\n");
    return 1;
  }
  const size_t nx = size_t(q.batch) * q.cin * q.in_h * q.in_w;
  const size_t nw = size_t(q.cout) * q.cin * k * k;
  const size_t ny = size_t(q.batch) * q.cout * q.out_h * q.out_w;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> x(nx), w(nw), b(q.cout), gy(ny), y(ny);
  for (auto& v : x) v = normal(rng);
  for (auto& v : w) v = normal(rng) / std::sqrt(float(q.cin * k * k));
  for (auto& v : b) v = normal(rng);
  for (auto& v : gy) v = normal(rng);
  // Forward on the host (float64 sums, the float32 activation), and the float64 reference.
  std::vector<double> gx_ref(nx, 0.0), gw_ref(nw, 0.0), gb_ref(q.cout, 0.0);
  for (int n = 0; n < q.batch; ++n)
    for (int co = 0; co < q.cout; ++co)
      for (int oh = 0; oh < q.out_h; ++oh)
        for (int ow = 0; ow < q.out_w; ++ow) {
          double z = b[co];
          for (int ci = 0; ci < q.cin; ++ci)
            for (int r = 0; r < k; ++r)
              for (int s = 0; s < k; ++s) {
                const int ih = oh + r - q.pad, iw = ow + s - q.pad;
                if (ih >= 0 && ih < q.in_h && iw >= 0 && iw < q.in_w)
                  z += double(x[((n * q.cin + ci) * q.in_h + ih) * q.in_w + iw]) *
                       w[((co * q.cin + ci) * k + r) * k + s];
              }
          const size_t at = ((size_t(n) * q.cout + co) * q.out_h + oh) * q.out_w + ow;
          y[at] = hardswish_relu(z);
          const double g = HardSwishReLU<double>::backward(gy[at], y[at]);
          gb_ref[co] += g;
          for (int ci = 0; ci < q.cin; ++ci)
            for (int r = 0; r < k; ++r)
              for (int s = 0; s < k; ++s) {
                const int ih = oh + r - q.pad, iw = ow + s - q.pad;
                if (ih >= 0 && ih < q.in_h && iw >= 0 && iw < q.in_w) {
                  const size_t xi = ((size_t(n) * q.cin + ci) * q.in_h + ih) * q.in_w + iw;
                  const size_t wi = ((co * q.cin + ci) * k + r) * k + s;
                  gw_ref[wi] += g * x[xi];
                  gx_ref[xi] += g * w[wi];
                }
              }
        }
  float *d_x, *d_w, *d_gy, *d_y, *d_gx, *d_gw, *d_gb, *d_partials;
  unsigned int* d_counter;
  const int slots = q.cout * (q.cin * k * k + 1);
  const int ctas = q.batch * q.bands;
  CHECK(cudaMalloc(&d_x, nx * 4));
  CHECK(cudaMalloc(&d_w, nw * 4));
  CHECK(cudaMalloc(&d_gy, ny * 4));
  CHECK(cudaMalloc(&d_y, ny * 4));
  CHECK(cudaMalloc(&d_gx, nx * 4));
  CHECK(cudaMalloc(&d_gw, nw * 4));
  CHECK(cudaMalloc(&d_gb, q.cout * 4));
  const int groups = (ctas + kGroup - 1) / kGroup;
  CHECK(cudaMalloc(&d_partials, size_t(ctas + groups) * slots * 4 + (1 << 20)));
  CHECK(cudaMalloc(&d_counter, (groups + 1) * 4));
  CHECK(cudaMemcpy(d_x, x.data(), nx * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_w, w.data(), nw * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_gy, gy.data(), ny * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_y, y.data(), ny * 4, cudaMemcpyHostToDevice));
  const int smem = (k == 1 ? shared_floats<1>(q) : shared_floats<3>(q)) * 4;
  auto tiled_launch = [&](auto kernel) {
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return [=] {
      CHECK(cudaMemsetAsync(d_counter, 0, (groups + 1) * 4));
      kernel<<<ctas, kThreads, smem>>>(q, d_gy, d_y, d_x, d_w, d_gx, d_gw, d_gb, d_partials,
                                       d_counter);
      CHECK(cudaGetLastError());
    };
  };
  auto tiled_v1 = k == 1 ? tiled_launch(tiled_small_backward<1, false>)
                         : tiled_launch(tiled_small_backward<3, false>);
  auto tiled_v2 = k == 1 ? tiled_launch(tiled_small_backward<1, true>)
                         : tiled_launch(tiled_small_backward<3, true>);
  // The package kernel on the same tensors.
  fusedconv::ConvBackwardParams bp{};
  fusedconv::ConvParams& p = bp.conv;
  p.batch = q.batch;
  p.in_channels = q.cin;
  p.in_height = q.in_h;
  p.in_width = q.in_w;
  p.out_channels = q.cout;
  p.out_height = q.out_h;
  p.out_width = q.out_w;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = 1;
  p.pad_top = p.pad_left = q.pad;
  p.dilation_h = p.dilation_w = 1;
  p.groups = 1;
  p.input_strides = {int64_t(q.cin) * q.in_h * q.in_w, int64_t(q.in_h) * q.in_w, q.in_w, 1};
  p.weight_strides = {int64_t(q.cin) * k * k, k * k, k, 1};
  p.output_strides = {int64_t(q.cout) * q.out_h * q.out_w, int64_t(q.out_h) * q.out_w, q.out_w,
                      1};
  p.dtype = fusedconv::DType::kFloat32;
  p.input = d_x;
  p.weight = d_w;
  p.output = d_y;
  bp.grad_output = d_gy;
  bp.grad_input = d_gx;
  bp.grad_weight = d_gw;
  bp.grad_bias = d_gb;
  bp.workspace = d_partials;
  int64_t package_bytes = 0;
  CHECK(fusedconv::small_backward::workspace_bytes(p, true, package_bytes));
  const bool package_fits = fusedconv::small_backward::applies(p) &&
                            package_bytes <= int64_t(ctas) * slots * 4 + (1 << 20);
  auto package = [&] { CHECK(fusedconv::small_backward::launch(bp, 0)); };

  std::vector<float> gx(nx), gw(nw), gb(q.cout);
  auto report = [&](const char* name, auto fn) {
    CHECK(cudaMemset(d_gx, 0xff, nx * 4));  // NaN: unwritten elements show
    CHECK(cudaMemset(d_gw, 0xff, nw * 4));
    CHECK(cudaMemset(d_gb, 0xff, q.cout * 4));
    fn();
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(gx.data(), d_gx, nx * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(gw.data(), d_gw, nw * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(gb.data(), d_gb, q.cout * 4, cudaMemcpyDeviceToHost));
    std::printf("%-9s %8.1f us   rel. L2 error grad_x %.1e grad_w %.1e grad_b %.1e\n", name,
                median_us(fn), max_relative(gx, gx_ref), max_relative(gw, gw_ref),
                max_relative(gb, gb_ref));
  };
  std::printf("batch %d, %d -> %d, %dx%d, %dx%d, pad %d; tiled: %d CTAs of %d rows, %d KB smem\n",
              q.batch, q.cin, q.cout, q.in_h, q.in_w, k, k, q.pad, ctas, q.rows, smem / 1024);
  report("tiled v1", tiled_v1);
  report("tiled v2", tiled_v2);
  if (package_fits) {
    report("package", package);
  }
  return 0;
}
