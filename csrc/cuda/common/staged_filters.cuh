// Depthwise filters staged in shared memory, tap-major, for the channels_last vector kernels
// (the forward's in forward/depthwise.cu, grad_input's in depthwise_backward_channels_last.cu).
// Their threads take consecutive 16-byte channel vectors (thread index mod channel vectors), so
// a warp's per-tap weight loads, one scalar per channel, touch 32 cache lines each. A CTA first
// copies every channel vector's filters into [tap][vector] 16-byte vectors: a tap's weights are
// then one 16-byte load per lane, consecutive across the warp (at most two lanes of a quarter
// warp on one bank, where the vectors wrap around within it). The copy is paid once per CTA,
// so a staged CTA walks several items per thread (`items_per_thread`). A depthwise candidate:
// used where common/depthwise_candidates.h says.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/dtype.cuh"
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

// Shared memory for `vectors` channel vectors of a kernel of `taps` taps.
inline int64_t bytes(int64_t taps, int64_t vectors) { return taps * vectors * 16; }

// Items (strips or pixels of a channel vector) each thread of a staged CTA walks: the copy
// costs every thread about channels x taps / threads scalar loads, an item about 5 x taps
// loads, so one item per 320 channels keeps the copy near a quarter of the loads (at most 16).
inline int64_t items_per_thread(int64_t channels) {
  const int64_t items = (channels + 319) / 320;
  return items < 1 ? 1 : items > 16 ? 16 : items;
}

// Copies the filters of all `vectors` channel vectors into `staged` ([tap][vector], 16 bytes
// each) and waits for the whole CTA: every thread must call it, before any early return.
template <typename Storage, int kKernel, int kThreads>
__device__ __forceinline__ void stage(const Storage* __restrict__ weight, const Strides4& strides,
                                      int vectors, uint4* staged) {
  constexpr int kVector = Vector16<Storage>::kCount;
  constexpr int kTaps = kKernel * kKernel;
  Storage* elements = reinterpret_cast<Storage*>(staged);
  // In shared order (tap, channel): consecutive lanes store consecutive elements (no bank
  // conflicts; in global order the lanes' stores were vectors x 16 bytes apart, one bank for
  // whole multiples of 8 vectors) and read channels k x k elements apart, which the first tap
  // brings into L1 for the rest.
  const int channels = vectors * kVector;
  for (int i = static_cast<int>(threadIdx.x); i < kTaps * channels; i += kThreads) {
    const int tap = i / channels;
    const int64_t channel = i - tap * channels;
    elements[i] = weight[channel * strides.n + int64_t{tap / kKernel} * strides.h +
                         int64_t{tap % kKernel} * strides.w];
  }
  __syncthreads();
}

}  // namespace staged_filters
}  // namespace fusedconv
