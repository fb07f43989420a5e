// Host emulation of the CUDA runtime subset the CUDA-core kernels use (tests/emulation/README):
// vector types, the launch parameters as thread-local variables, __syncthreads as a barrier of
// the CTA's std::threads, and an emulated launch. Never used in the real build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

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
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float __uint_as_float(unsigned bits) {
  float value;
  __builtin_memcpy(&value, &bits, sizeof value);
  return value;
}
inline float __double2float_rn(double value) { return static_cast<float>(value); }
inline unsigned __float_as_uint(float value) {
  unsigned bits;
  __builtin_memcpy(&bits, &value, sizeof bits);
  return bits;
}

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 4,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotSupported = 801,
  cudaErrorInvalidDevice = 101
};
typedef struct CUstream_st* cudaStream_t;

// One emulated device: an H100's shared memory (227 KB opt-in per block) and compute capability
// 9.0, but 8 SMs, so grids sized by the SM count stay small enough to run a thread per CUDA
// thread (the kernels must be right on any SM count).
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local uint3 blockDim;
inline thread_local uint3 gridDim;

namespace emulation {
// The current CTA's barrier and dynamic shared memory (set per emulated thread).
void sync_threads();
void sync_warp();
// Slot `slot` (0-63: two sets of 32 lanes) of the calling thread's warp's exchange buffer.
uint64_t& warp_slot(unsigned slot);
unsigned lane_id();
void* dynamic_shared();
cudaError_t last_error();
}  // namespace emulation

namespace emulation {
constexpr int kOptInSharedBytes = 232448;
constexpr int kSmCount = 8;
// A kernel's dynamic shared memory limit, as cudaFuncSetAttribute raised it (48 KB before).
void set_max_dynamic_shared(const void* kernel, int bytes);
int max_dynamic_shared(const void* kernel);
}  // namespace emulation

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attribute) {
    case cudaDevAttrMultiProcessorCount: *value = emulation::kSmCount; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emulation::kOptInSharedBytes; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
  }
  return cudaSuccess;
}
template <typename Function>
inline cudaError_t cudaFuncSetAttribute(Function* kernel, cudaFuncAttribute, int value) {
  if (value > emulation::kOptInSharedBytes) return cudaErrorInvalidValue;
  emulation::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

namespace emulation {
std::mutex& atomics_mutex();
}  // namespace emulation

// Atomics and fences: one lock for every atomic (CTAs run one after another, so only the
// threads of one CTA contend).
template <typename T>
inline T atomicAdd(T* address, T value) {
  std::lock_guard<std::mutex> lock(emulation::atomics_mutex());
  const T old = *address;
  *address = old + value;
  return old;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes,
                                   cudaStream_t /*stream*/ = nullptr) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

inline void __syncthreads() { emulation::sync_threads(); }
inline void __syncwarp(unsigned /*mask*/ = 0xFFFFFFFFu) { emulation::sync_warp(); }

namespace emulation {
// Lane `lane` receives lane source(lane)'s value; every running lane of the warp takes part
// (full masks only, as the kernels use them).
// Two slot sets used in turn: a lane cannot write exchange k + 2's slot before every lane has
// passed exchange k + 1's barrier, so after its read of exchange k; one barrier per exchange.
template <typename T, typename Source>
inline T shuffle(T value, Source source) {
  static_assert(sizeof(T) <= 8, "one 8-byte slot per lane");
  thread_local unsigned exchanges = 0;
  const unsigned set = 32 * (exchanges++ & 1u);
  const unsigned lane = lane_id();
  std::memcpy(&warp_slot(set + lane), &value, sizeof(T));
  sync_warp();
  T result;
  std::memcpy(&result, &warp_slot(set + source(lane)), sizeof(T));
  return result;
}
}  // namespace emulation

template <typename T>
inline T __shfl_down_sync(unsigned /*mask*/, T value, unsigned delta, int width = 32) {
  return emulation::shuffle(value, [&](unsigned lane) {
    return lane % width + delta < static_cast<unsigned>(width) ? lane + delta : lane;
  });
}
template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask, int width = 32) {
  return emulation::shuffle(value, [&](unsigned lane) {
    const unsigned source = lane ^ static_cast<unsigned>(lane_mask);
    return source / width == lane / width ? source : lane;  // within the lane's segment
  });
}
inline cudaError_t cudaGetLastError() { return emulation::last_error(); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
template <typename T>
inline T __ldg(const T* pointer) {
  return *pointer;
}
template <typename T>
inline T __ldcg(const T* pointer) {
  return *pointer;
}
// CUDA's global min / max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a < b ? b : a; }
