// Register-array helpers for the kernels that sum several MMA chains: the tensor core's own
// accumulation truncates, so each chain starts from zero and is added into float32 totals with
// round-to-nearest adds (the error bounds are in each kernel's comments).
#pragma once

#include <cuda_runtime.h>

namespace fusedconv {

__device__ __forceinline__ void fill(float& value, float with) { value = with; }

// Every element of a (multi-dimensional) register array set to `with`.
template <typename T, int kSize>
__device__ __forceinline__ void fill(T (&values)[kSize], float with) {
#pragma unroll
  for (int i = 0; i < kSize; ++i) {
    fill(values[i], with);
  }
}

__device__ __forceinline__ void add_into(float& total, float value) { total += value; }

// totals += values, element by element, for register arrays of any rank.
template <typename T, int kSize>
__device__ __forceinline__ void add_into(T (&totals)[kSize], const T (&values)[kSize]) {
#pragma unroll
  for (int i = 0; i < kSize; ++i) {
    add_into(totals[i], values[i]);
  }
}

}  // namespace fusedconv
