// The floor backward's gradient pass with the bias gradient summed in it: grad_input = g =
// grad_output * f'(output), as activation_grad.cu writes it, and grad_bias[c] = the sum of g
// over channel c, from the same read of grad_output and output. ATen sums grad_bias in a
// reduction of its own over g (in channels_last bfloat16 the largest kernel of a training
// step: benchmarks/NOTES.md); here it costs no pass. The sums are of the stored (rounded) g in
// the accumulator type, as ATen's are, in a fixed order that depends on the shape and the SM
// count only: bitwise identical run to run, and for a view as for its aligned copy. grad_input
// may be null (grad_bias alone): g is then not stored.
//
// Channels innermost (channels_last, channel_stride 1): a CTA per (block of channel columns,
//   chunk of rows); its threads are (column, lane) pairs, columns fastest, so that a warp reads
//   consecutive 16-byte vectors of consecutive rows; each thread sums its column over every
//   lanes-th row of the chunk.
// Planes (NCHW, channel_stride = H*W): a CTA per (channel, chunk of that channel's elements,
//   image-major), its threads walking the chunk as one flat index.
// Each CTA adds its threads' sums in a fixed order in shared memory and writes one partial per
// channel; a second kernel sums each channel's partials (a warp per channel, a fixed tree).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace activation_bias_grad {
namespace {

constexpr int kThreads = 256;
constexpr int kCtasPerSm = 8;  // enough 16-byte loads in flight to stream at copy bandwidth
// Accesses per thread at least this many, so that the partials (a CTA's per channel) stay small
// beside the tensors when the channels are many and the rows or planes few.
constexpr int64_t kMinAccessesPerThread = 8;
constexpr int64_t kMaxChunks = 65535;  // grid.y

// The grid depends on the shape and the SM count only, never on the pointers: an access is
// `vector` consecutive elements of one channel run (a 16-byte vector's where the runs are whole
// vectors), moved by one 16-byte load where the tensors are aligned and element by element
// where not, so that the workspace size and the order of every sum are the same for a view and
// for its aligned copy.
struct BiasGrid {
  int vector;                      // elements per access
  int32_t columns_per_cta, lanes;  // channels innermost: the CTA's (column, lane) pairs
  int64_t rows;                    // channels innermost: numel / channels
  FastDivisor plane_accesses;      // planes: accesses per plane (channel_stride / vector)
  int64_t extent;                  // rows, or accesses per channel (images x plane accesses)
  int64_t column_blocks;           // grid.x: blocks of columns, or channels (planes)
  int64_t chunks, per_chunk;       // grid.y: chunks of the extent, and their size
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

BiasGrid make_grid(const ActivationGradParams& p, int sm_count) {
  const int per_vector = static_cast<int>(16 / element_bytes(p.dtype));
  const int64_t target = int64_t{sm_count} * kCtasPerSm;
  BiasGrid g{};
  int64_t lanes_per_chunk = kThreads;  // threads sharing a chunk's extent
  if (p.channel_stride == 1) {
    g.vector = p.channels % per_vector == 0 ? per_vector : 1;
    const int64_t columns = p.channels / g.vector;
    g.column_blocks = ceil_div(columns, kThreads);
    g.columns_per_cta = static_cast<int32_t>(ceil_div(columns, g.column_blocks));  // balanced
    g.lanes = kThreads / g.columns_per_cta;
    g.rows = p.numel / p.channels;
    g.extent = g.rows;
    lanes_per_chunk = g.lanes;
  } else {
    g.vector = p.channel_stride % per_vector == 0 ? per_vector : 1;
    const int64_t accesses = p.channel_stride / g.vector;
    g.plane_accesses = FastDivisor::make(static_cast<uint32_t>(accesses));
    g.column_blocks = p.channels;
    g.extent = p.numel / (p.channels * p.channel_stride) * accesses;  // < 2^31 (valid)
  }
  const int64_t most = ceil_div(g.extent, lanes_per_chunk * kMinAccessesPerThread);
  int64_t chunks = ceil_div(target, g.column_blocks);
  chunks = chunks < most ? chunks : most;
  chunks = chunks < kMaxChunks ? chunks : kMaxChunks;
  chunks = chunks < 1 ? 1 : chunks;
  g.per_chunk = ceil_div(g.extent, chunks);
  g.chunks = ceil_div(g.extent, g.per_chunk);
  return g;
}

// g at elements [index, index + kVector) of one channel run: written to grad_input (where it is
// wanted), and each element's stored value, read back in the accumulator type, returned in
// `sums`. kAligned: one 16-byte load / store per tensor (kVector elements are 16 bytes then).
template <typename Storage, int kVector, bool kAligned>
__device__ __forceinline__ void gradient_at(const ActivationGradParams& p, int64_t index,
                                            typename StorageTraits<Storage>::Acc (&sums)[kVector]) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  const Storage* __restrict__ grad_output = static_cast<const Storage*>(p.grad_output);
  const Storage* __restrict__ output = static_cast<const Storage*>(p.output);
  Storage* __restrict__ grad_input = static_cast<Storage*>(p.grad_input);
  if constexpr (kAligned) {
    static_assert(kVector * sizeof(Storage) == 16, "a 16-byte vector");
    Vector16<Storage> grad, y;
    grad.bits = __ldg(reinterpret_cast<const uint4*>(grad_output + index));
    y.bits = __ldg(reinterpret_cast<const uint4*>(output + index));
#pragma unroll
    for (int e = 0; e < kVector; ++e) {
      grad.values[e] = Traits::store(HardSwishReLU<Acc>::backward(Traits::load(grad.values[e]),
                                                                  Traits::load(y.values[e])));
      sums[e] = Traits::load(grad.values[e]);
    }
    if (grad_input != nullptr) {
      *reinterpret_cast<uint4*>(grad_input + index) = grad.bits;
    }
  } else {
#pragma unroll
    for (int e = 0; e < kVector; ++e) {
      const Storage value = Traits::store(HardSwishReLU<Acc>::backward(
          Traits::load(grad_output[index + e]), Traits::load(output[index + e])));
      if (grad_input != nullptr) {
        grad_input[index + e] = value;
      }
      sums[e] = Traits::load(value);
    }
  }
}

// Channels innermost: CTA (block of columns, chunk of rows); partials[chunk x channels + c].
template <typename Storage, int kVector, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    bias_grad_rows_kernel(const ActivationGradParams p, const BiasGrid g,
                          typename StorageTraits<Storage>::Acc* partials) {
  using Acc = typename StorageTraits<Storage>::Acc;
  __shared__ Acc sums[kThreads][kVector];
  const int t = static_cast<int>(threadIdx.x);
  const int local_column = t % g.columns_per_cta;
  const int lane = t / g.columns_per_cta;
  const int64_t column = int64_t{blockIdx.x} * g.columns_per_cta + local_column;
  const bool active = lane < g.lanes && column * kVector < p.channels;
  Acc acc[kVector];
#pragma unroll
  for (int e = 0; e < kVector; ++e) {
    acc[e] = Acc(0);
  }
  if (active) {
    const int64_t first = int64_t{blockIdx.y} * g.per_chunk;
    const int64_t end = first + g.per_chunk < g.rows ? first + g.per_chunk : g.rows;
    for (int64_t row = first + lane; row < end; row += g.lanes) {
      Acc values[kVector];
      gradient_at<Storage, kVector, kAligned>(p, row * p.channels + column * kVector, values);
#pragma unroll
      for (int e = 0; e < kVector; ++e) {
        acc[e] += values[e];
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kVector; ++e) {
    sums[t][e] = acc[e];
  }
  __syncthreads();
  if (!active || lane != 0) {
    return;
  }
  // Lane 0 of each column adds the lanes' sums in lane order.
  Acc* out = partials + int64_t{blockIdx.y} * p.channels + column * kVector;
#pragma unroll
  for (int e = 0; e < kVector; ++e) {
    Acc total = Acc(0);
    for (int l = 0; l < g.lanes; ++l) {
      total += sums[local_column + l * g.columns_per_cta][e];
    }
    out[e] = total;
  }
}

// Planes: CTA (channel, chunk of the channel's accesses, image-major);
// partials[chunk x channels + channel].
template <typename Storage, int kVector, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    bias_grad_planes_kernel(const ActivationGradParams p, const BiasGrid g,
                            typename StorageTraits<Storage>::Acc* partials) {
  using Acc = typename StorageTraits<Storage>::Acc;
  __shared__ Acc sums[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t channel = blockIdx.x;
  // Below 2^31: the extent is (valid).
  const uint32_t first = static_cast<uint32_t>(int64_t{blockIdx.y} * g.per_chunk);
  const uint32_t end = static_cast<uint32_t>(
      first + g.per_chunk < g.extent ? first + g.per_chunk : g.extent);
  Acc acc = Acc(0);
  for (uint32_t j = first + t; j < end; j += kThreads) {
    uint32_t within = 0;
    const uint32_t image = g.plane_accesses.divide(j, within);
    const int64_t index =
        (int64_t{image} * p.channels + channel) * p.channel_stride + int64_t{within} * kVector;
    Acc values[kVector];
    gradient_at<Storage, kVector, kAligned>(p, index, values);
#pragma unroll
    for (int e = 0; e < kVector; ++e) {
      acc += values[e];
    }
  }
  sums[t] = acc;
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (t < half) {
      sums[t] += sums[t + half];
    }
    __syncthreads();
  }
  if (t == 0) {
    partials[int64_t{blockIdx.y} * p.channels + channel] = sums[0];
  }
}

// grad_bias[c] = the sum of channel c's partials: lane l adds chunks l, l + 32, ..., then the
// warp adds its lanes by a butterfly.
template <typename Storage>
__global__ void __launch_bounds__(kThreads)
    bias_grad_reduce_kernel(int64_t channels, int64_t chunks,
                            const typename StorageTraits<Storage>::Acc* partials,
                            Storage* grad_bias) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  const int64_t channel = (int64_t{blockIdx.x} * kThreads + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (channel >= channels) {
    return;  // whole warps: channel is the same across a warp
  }
  Acc total = Acc(0);
  for (int64_t chunk = lane; chunk < chunks; chunk += 32) {
    total += partials[chunk * channels + channel];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  if (lane == 0) {
    grad_bias[channel] = Traits::store(total);
  }
}

bool valid(const ActivationGradParams& p) {
  return p.numel >= 0 && p.numel < (int64_t{1} << 31) && p.channels >= 1 &&
         p.channel_stride >= 1 && p.numel % (p.channels * p.channel_stride) == 0;
}

template <typename Storage, int kVector, bool kAligned>
void launch_pass(const ActivationGradParams& p, const BiasGrid& g,
                 typename StorageTraits<Storage>::Acc* partials, cudaStream_t stream) {
  const dim3 grid(static_cast<uint32_t>(g.column_blocks), static_cast<uint32_t>(g.chunks));
  if (p.channel_stride == 1) {
    bias_grad_rows_kernel<Storage, kVector, kAligned>
        <<<grid, kThreads, 0, stream>>>(p, g, partials);
  } else {
    bias_grad_planes_kernel<Storage, kVector, kAligned>
        <<<grid, kThreads, 0, stream>>>(p, g, partials);
  }
}

}  // namespace
}  // namespace activation_bias_grad

cudaError_t hardswish_relu_bias_grad_workspace_bytes(const ActivationGradParams& params,
                                                     int64_t& bytes) {
  bytes = 0;
  if (!activation_bias_grad::valid(params)) {
    return cudaErrorInvalidValue;
  }
  if (params.numel == 0) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const activation_bias_grad::BiasGrid g = activation_bias_grad::make_grid(params, limits.sm_count);
  const int64_t acc_bytes = params.dtype == DType::kFloat64 ? 8 : 4;
  bytes = g.chunks * params.channels * acc_bytes;
  return cudaSuccess;
}

cudaError_t launch_hardswish_relu_bias_grad(const ActivationGradParams& params,
                                            cudaStream_t stream) {
  namespace abg = activation_bias_grad;
  if (!abg::valid(params) || params.grad_bias == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (params.numel == 0) {  // no element: every channel's sum is zero (all-zero bits)
    return cudaMemsetAsync(params.grad_bias, 0, params.channels * element_bytes(params.dtype),
                           stream);
  }
  if (params.workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  DeviceLimits limits{};
  cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const abg::BiasGrid g = abg::make_grid(params, limits.sm_count);
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    using Acc = typename StorageTraits<Storage>::Acc;
    constexpr int kPerVector = 16 / static_cast<int>(sizeof(Storage));
    Acc* partials = static_cast<Acc*>(params.workspace);
    const bool aligned = aligned_16(params.grad_output) && aligned_16(params.output) &&
                         aligned_16(params.grad_input);  // null (not wanted) counts
    if (g.vector == kPerVector && aligned) {
      abg::launch_pass<Storage, kPerVector, true>(params, g, partials, stream);
    } else if (g.vector == kPerVector) {
      abg::launch_pass<Storage, kPerVector, false>(params, g, partials, stream);
    } else {
      abg::launch_pass<Storage, 1, false>(params, g, partials, stream);
    }
    cudaError_t launched = cudaGetLastError();
    if (launched != cudaSuccess) {
      return launched;
    }
    const int64_t threads = params.channels * 32;
    const uint32_t blocks = static_cast<uint32_t>(abg::ceil_div(threads, abg::kThreads));
    abg::bias_grad_reduce_kernel<Storage><<<blocks, abg::kThreads, 0, stream>>>(
        params.channels, g.chunks, partials, static_cast<Storage*>(params.grad_bias));
    return cudaGetLastError();
  });
}

}  // namespace fusedconv
