// Depthwise filters staged in shared memory, tap-major, for the channels_last vector kernels
// (the forward's in forward/depthwise.cu, grad_input's in depthwise_backward_channels_last.cu).
// Their threads take consecutive 16-byte channel vectors (thread index mod channel vectors), so
// a warp's per-tap weight loads, one scalar per channel, touch 32 cache lines each. A CTA first
// copies the filters of the channel vectors it covers (all of them, up to one per thread) into
// [tap][slot] 16-byte vectors: a tap's weights are then one conflict-free 16-byte load per lane.
// A depthwise candidate (fusedconv/launch.h): used only where the switch is on.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace staged_filters {

constexpr int64_t kMaxBytes = 48 * 1024;  // a CTA's shared memory without the opt-in

// Where a channels_last vector kernel reads its channels' weights for a tap:
//   kPerTap:   one scalar load per channel (a vector's worth per tap), each touching 32 lines
//              per warp instruction: at 8 channels a vector most of the forward's L1
//              wavefronts, the loads that made bfloat16 lose to cuDNN.
//   kResident: the vector's whole filters are one contiguous, 16-byte aligned run (a dense
//              weight; 144 bytes for 3x3 16-bit), loaded once as k x k vectors into registers.
//   kStaged:   from shared memory, staged by `stage` below (a depthwise candidate).
enum class Filters : int { kPerTap, kResident, kStaged };

// Shared memory for CTAs of `threads` over `vectors` channel vectors of a kernel of `taps` taps:
// taps 16-byte vectors per slot, one slot per channel vector a CTA covers.
inline int64_t bytes(int64_t taps, int64_t vectors, int64_t threads) {
  return taps * (vectors < threads ? vectors : threads) * 16;
}

// The CTA's slots: channel vectors first, first + 1, ... (mod the vector count), `count` of them.
struct Slots {
  uint32_t first;
  int count;
};

// Copies the filters of this CTA's channel vectors into `staged` ([tap][slot], 16 bytes each)
// and waits for the whole CTA: every thread must call it, before any early return.
template <typename Storage, int kKernel, int kThreads>
__device__ __forceinline__ Slots stage(const Storage* __restrict__ weight, const Strides4& strides,
                                       const FastDivisor& vectors, uint4* staged) {
  constexpr int kVector = Vector16<Storage>::kCount;
  constexpr int kTaps = kKernel * kKernel;
  Slots slots;
  vectors.divide(blockIdx.x * kThreads, slots.first);
  const uint32_t count = vectors.divisor;
  slots.count = static_cast<int>(count < kThreads ? count : kThreads);
  Storage* elements = reinterpret_cast<Storage*>(staged);
  // In global order (slot, channel, tap): contiguous reads of a dense weight.
  for (int i = static_cast<int>(threadIdx.x); i < slots.count * kVector * kTaps; i += kThreads) {
    const int slot = i / (kVector * kTaps);
    const int v = (i / kTaps) % kVector;
    const int tap = i % kTaps;
    uint32_t group = slots.first + static_cast<uint32_t>(slot);
    group = group >= count ? group - count : group;
    const int64_t channel = int64_t{group} * kVector + v;
    elements[(tap * slots.count + slot) * kVector + v] =
        weight[channel * strides.n + int64_t{tap / kKernel} * strides.h +
               int64_t{tap % kKernel} * strides.w];
  }
  __syncthreads();
  return slots;
}

// The slot of channel vector `vector` (one of the CTA's).
__device__ __forceinline__ int slot_of(uint32_t vector, const Slots& slots, uint32_t count) {
  return static_cast<int>(vector >= slots.first ? vector - slots.first
                                                : vector + count - slots.first);
}

}  // namespace staged_filters
}  // namespace fusedconv
