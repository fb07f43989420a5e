// Host emulation of the CUDA runtime subset the CUDA-core kernels use (tests/emulation/README):
// vector types, the launch parameters as thread-local variables, __syncthreads as a barrier of
// the CTA's std::threads, and an emulated launch. Never used in the real build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cmath>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4 };
typedef struct CUstream_st* cudaStream_t;

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local uint3 blockDim;
inline thread_local uint3 gridDim;

namespace emulation {
// The current CTA's barrier and dynamic shared memory (set per emulated thread).
void sync_threads();
void sync_warp();
void* dynamic_shared();
cudaError_t last_error();
}  // namespace emulation

inline void __syncthreads() { emulation::sync_threads(); }
inline void __syncwarp(unsigned /*mask*/ = 0xFFFFFFFFu) { emulation::sync_warp(); }
inline cudaError_t cudaGetLastError() { return emulation::last_error(); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
template <typename T>
inline T __ldg(const T* pointer) {
  return *pointer;
}
