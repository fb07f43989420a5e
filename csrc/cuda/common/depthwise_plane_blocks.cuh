// Blocks of consecutive (image, channel) planes, the unit of the NCHW depthwise planes kernels
// (forward/depthwise_planes.cuh, backward/depthwise_backward_planes.cuh): in dense NCHW with
// channel multiplier 1, a block of consecutive planes is one contiguous run of each tensor, so a
// CTA stages it into shared memory and stores its results with coalesced accesses. Each staged
// plane sits at an odd pitch: threads that take consecutive planes at the same offset (the
// kernels' item order, plane fastest) read distinct banks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/device_limits.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace plane_blocks {

constexpr int kThreads = 256;
// A block's shared memory: under the default 48 KB (no opt-in), and small enough for several
// CTAs an SM.
constexpr int64_t kBlockFloats = 10 * 1024;

inline int odd(int64_t n) { return static_cast<int>(n | 1); }

// A compute phase of a block: `items` per plane, each of about `cost` inner steps.
struct Phase {
  int64_t items;
  int64_t cost;
};

// Planes a block: as many as `floats_per_plane` lets kBlockFloats hold, fewer where that would
// leave SMs without two blocks each; then, down to half of that, the count whose phases waste the
// least of their last round of kThreads items (a block of 37 planes of 7 rows takes 259 items:
// two rounds for 3 items; 36 planes take one); at least one.
inline cudaError_t planes_per_block(int64_t total_planes, int64_t floats_per_plane,
                                    const Phase (&phases)[2], int& planes) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t fit = kBlockFloats / floats_per_plane;
  const int64_t spread = (total_planes + 2 * limits.sm_count - 1) / (2 * limits.sm_count);
  const int64_t most = spread < fit ? (spread < 1 ? 1 : spread) : fit;
  int64_t best = most;
  double best_cost = 0.0;
  for (int64_t count = most; count >= 1 && 2 * count >= most; --count) {
    double cost = 0.0;  // a plane's share of the block's rounds
    for (const Phase& phase : phases) {
      const int64_t rounds = (count * phase.items + kThreads - 1) / kThreads;
      cost += static_cast<double>(rounds * phase.cost) / static_cast<double>(count);
    }
    if (count == most || cost < best_cost) {
      best = count;
      best_cost = cost;
    }
  }
  planes = static_cast<int>(best);
  return cudaSuccess;
}

// The planes of CTA blockIdx.x: the first (NCHW plane index), how many (the last block's
// fewer), and the first one's channel.
struct BlockSpan {
  int64_t first_plane;
  int planes;
  int first_channel;
};

__device__ __forceinline__ BlockSpan block_span(int per_block, int64_t total_planes,
                                                int channels) {
  const int64_t first_plane = int64_t{blockIdx.x} * per_block;
  const int64_t remaining = total_planes - first_plane;
  return {first_plane, remaining < per_block ? static_cast<int>(remaining) : per_block,
          static_cast<int>(first_plane % channels)};
}

// The block's channel of its plane `plane`, given the channel of its first plane.
__device__ __forceinline__ int plane_channel(int first_channel, int plane, int channels) {
  const int channel = first_channel + plane;
  return channel < channels ? channel : channel % channels;
}

// Elements of a run of Storage before its first 16-byte boundary: where the vector walks start.
template <typename Storage>
__device__ __forceinline__ uint32_t head_elements(const Storage* run) {
  const uint32_t misaligned = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(run)) & 15u;
  return ((16u - misaligned) & 15u) / static_cast<uint32_t>(sizeof(Storage));
}

// Flat element e of the block's run -> (plane, offset) of its staged copy, stepped one element.
struct PlaneCursor {
  uint32_t plane, offset;
  __device__ __forceinline__ PlaneCursor(const FastDivisor& elements, uint32_t e) {
    plane = elements.divide(e, offset);
  }
  __device__ __forceinline__ void step(const FastDivisor& elements) {
    if (++offset == elements.divisor) {
      offset = 0;
      ++plane;
    }
  }
};

// Copies `count` planes of `elements` values (one contiguous run of each source) into `target`
// at `pitch` floats a plane. From flat element `head` on (a 16-byte boundary of every source;
// `head` >= the total where the sources' boundaries differ) a thread takes kCount elements at a
// time through `vector(e, values)`, 16 bytes of each source in one load: a staging phase is
// bound by the bytes each thread has in flight. `scalar(e)` takes the rest one at a time.
template <int kCount, typename Scalar, typename Vector>
__device__ __forceinline__ void stage_planes(int count, const FastDivisor& elements, int pitch,
                                             float* __restrict__ target, uint32_t head,
                                             Scalar scalar, Vector vector) {
  const uint32_t total = static_cast<uint32_t>(count) * elements.divisor;
  const uint32_t first = head < total ? head : total;
  const uint32_t vectors = (total - first) / kCount;
  const uint32_t tail = first + vectors * kCount;
#pragma unroll 4
  for (uint32_t v = threadIdx.x; v < vectors; v += kThreads) {
    const uint32_t e = first + v * kCount;
    float values[kCount];
    vector(e, values);
    PlaneCursor at(elements, e);
#pragma unroll
    for (int i = 0; i < kCount; ++i) {
      target[at.plane * pitch + at.offset] = values[i];
      at.step(elements);
    }
  }
  for (uint32_t i = threadIdx.x; i < first + (total - tail); i += kThreads) {
    const uint32_t e = i < first ? i : tail + (i - first);
    uint32_t offset;
    const uint32_t plane = elements.divide(e, offset);
    target[plane * pitch + offset] = scalar(e);
  }
}

// stage_planes of one source, its values converted to float.
template <typename Storage>
__device__ __forceinline__ void stage_run(int count, const FastDivisor& elements, int pitch,
                                          float* __restrict__ target,
                                          const Storage* __restrict__ run) {
  using Vector = Vector16<Storage>;
  stage_planes<Vector::kCount>(
      count, elements, pitch, target, head_elements(run),
      [&](uint32_t e) { return StorageTraits<Storage>::load(run[e]); },
      [&](uint32_t e, float (&values)[Vector::kCount]) {
        Vector v;
        v.bits = *reinterpret_cast<const uint4*>(run + e);
#pragma unroll
        for (int i = 0; i < Vector::kCount; ++i) {
          values[i] = StorageTraits<Storage>::load(v.values[i]);
        }
      });
}

// The k x k filters of the block's `count` planes, at `pitch` floats a plane.
template <typename Storage>
__device__ __forceinline__ void stage_filters(const Storage* __restrict__ weight,
                                              const Strides4& strides, int kernel_w, int taps,
                                              int first_channel, int channels, int count,
                                              int pitch, float* __restrict__ target) {
  for (int e = static_cast<int>(threadIdx.x); e < count * taps; e += kThreads) {
    const int plane = e / taps;
    const int tap = e - plane * taps;
    const int channel = plane_channel(first_channel, plane, channels);
    target[plane * pitch + tap] = StorageTraits<Storage>::load(
        weight[int64_t{channel} * strides.n + int64_t{tap / kernel_w} * strides.h +
               int64_t{tap % kernel_w} * strides.w]);
  }
}

// Stores `count` staged planes of `elements` values (at `pitch`) as one contiguous run, 16
// bytes a store from the run's first 16-byte boundary on.
template <typename Storage>
__device__ __forceinline__ void store_planes(const float* __restrict__ source, int count,
                                             const FastDivisor& elements, int pitch,
                                             Storage* __restrict__ target) {
  using Vector = Vector16<Storage>;
  const uint32_t total = static_cast<uint32_t>(count) * elements.divisor;
  const uint32_t head = head_elements(target);
  const uint32_t first = head < total ? head : total;
  const uint32_t vectors = (total - first) / Vector::kCount;
  const uint32_t tail = first + vectors * Vector::kCount;
#pragma unroll 2
  for (uint32_t v = threadIdx.x; v < vectors; v += kThreads) {
    const uint32_t e = first + v * Vector::kCount;
    Vector out;
    PlaneCursor at(elements, e);
#pragma unroll
    for (int i = 0; i < Vector::kCount; ++i) {
      out.values[i] = StorageTraits<Storage>::store(source[at.plane * pitch + at.offset]);
      at.step(elements);
    }
    *reinterpret_cast<uint4*>(target + e) = out.bits;
  }
  for (uint32_t i = threadIdx.x; i < first + (total - tail); i += kThreads) {
    const uint32_t e = i < first ? i : tail + (i - first);
    uint32_t offset;
    const uint32_t plane = elements.divide(e, offset);
    target[e] = StorageTraits<Storage>::store(source[plane * pitch + offset]);
  }
}

}  // namespace plane_blocks
}  // namespace fusedconv
