// What a launch needs to know of the current device, read once per device, and the occupancy
// and shared-memory opt-in helpers sized by it. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fusedconv {

constexpr int kMaxDevices = 64;

struct DeviceLimits {
  int sm_count;
  int max_shared_bytes;  // opt-in dynamic shared memory per block (227 KB on H100)
  int cc_major, cc_minor;  // compute capability: the wgmma kernel needs exactly 9.0
};

inline cudaError_t device_limits(DeviceLimits& limits) {
  static DeviceLimits cache[kMaxDevices] = {};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    return status;
  }
  if (device >= kMaxDevices) {
    return cudaErrorInvalidDevice;
  }
  if (cache[device].sm_count == 0) {
    DeviceLimits read{};
    status = cudaDeviceGetAttribute(&read.sm_count, cudaDevAttrMultiProcessorCount, device);
    if (status == cudaSuccess) {
      status = cudaDeviceGetAttribute(&read.max_shared_bytes,
                                      cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status == cudaSuccess) {
      status = cudaDeviceGetAttribute(&read.cc_major, cudaDevAttrComputeCapabilityMajor, device);
    }
    if (status == cudaSuccess) {
      status = cudaDeviceGetAttribute(&read.cc_minor, cudaDevAttrComputeCapabilityMinor, device);
    }
    if (status != cudaSuccess) {
      return status;
    }
    cache[device] = read;
  }
  limits = cache[device];
  return cudaSuccess;
}

// CTAs of `shared_bytes` dynamic shared memory that fit on one SM at once, at most `cap` (shared
// memory per SM is about the per-block opt-in limit plus 1 KB, and each CTA's driver reserve is
// 1 KB).
inline int64_t ctas_per_sm(const DeviceLimits& limits, int64_t shared_bytes, int64_t cap) {
  const int64_t fit = (int64_t{limits.max_shared_bytes} + 1024) / (shared_bytes + 1024);
  return fit < 1 ? 1 : (fit > cap ? cap : fit);
}

// Opts kKernel in to the device's whole shared memory once per device (a per-call
// cudaFuncSetAttribute would cost microseconds on small problems). A template on the kernel's
// address, so each kernel instantiation has its own flags.
template <auto kKernel>
cudaError_t opt_in_shared_memory(const DeviceLimits& limits) {
  static bool opted_in[kMaxDevices] = {};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    return status;
  }
  if (!opted_in[device]) {
    status = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  limits.max_shared_bytes);
    if (status != cudaSuccess) {
      return status;
    }
    opted_in[device] = true;
  }
  return cudaSuccess;
}

// Blocks of a grid-stride prep kernel for `work` items: enough to cover them, at most 1024.
inline unsigned int prep_blocks(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned int>(blocks < 1024 ? (blocks < 1 ? 1 : blocks) : 1024);
}

}  // namespace fusedconv
