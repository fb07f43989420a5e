// A depthwise channel's compile-time k x k filter loaded into registers as float, once per
// plane (the NCHW planes kernels: forward/depthwise_planes.cuh and the planes grad_input in
// backward/depthwise_backward.cu), instead of one load per tap and element.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {

// `weight` points at the channel's filter; `strides` are the weight tensor's.
template <typename Storage, int kKernel>
__device__ __forceinline__ void load_filter(const Storage* __restrict__ weight,
                                            const Strides4& strides,
                                            float (&filter)[kKernel * kKernel]) {
#pragma unroll
  for (int t = 0; t < kKernel * kKernel; ++t) {
    filter[t] = StorageTraits<Storage>::load(weight[int64_t{t / kKernel} * strides.h +
                                                    int64_t{t % kKernel} * strides.w]);
  }
}

}  // namespace fusedconv
