// What the tensor-core kernels (forward and backward) share: the 3xTF32 operand splits, the
// m16n8k8 TF32 MMA, 4-byte cp.async staging, the dense-NCHW test, the per-device limits a launch
// is sized by, and the host-side plan memo and environment switches of the launchers. Included
// by the kernels' .cu files only.
//
// 3xTF32: each float32 operand is split into a TF32 big part and a TF32 small part (x - big) and
// a product taken as small*big + big*small + big*big (small*small is below float32 rounding).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fusedconv/params.h"
#include "fusedconv/tf32.h"

namespace fusedconv {
namespace tensorcore {

constexpr int kMaxDevices = 64;

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t result;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(result) : "f"(x));
  return result;
}

// Activation-side split (inputs, gradients): big = tf32(x) rounded to nearest, small =
// tf32(x - big); a non-finite x keeps all of itself in big (small = 0), so inf stays inf instead
// of inf - inf = NaN. The same bits as cvt.rna.tf32 on both parts, written out: there is no
// such instruction in SASS, and nvcc's expansion of it re-tests every operand for finiteness
// (~11 instructions per element here, 8 written out). Adding half a TF32 ulp to the magnitude
// bits and truncating rounds ties away from zero, as .rna does, and x - big is finite for a
// finite x (at worst -inf next to FLT_MAX, which both forms keep).
__device__ __forceinline__ void split_input(float x, uint32_t& big, uint32_t& small) {
  const bool finite = fabsf(x) < __uint_as_float(0x7f800000u);
  big = finite ? tf32_round_bits(__float_as_uint(x)) : __float_as_uint(x) & 0xffffe000u;
  const uint32_t residual = __float_as_uint(x - __uint_as_float(big));
  small = finite ? tf32_round_bits(residual) : 0u;
}

// Weight-side split: big = x truncated to TF32, so small = x - big has x's sign, and an exactly
// representable nonzero x gets a same-signed small part of 2^-24 relative (below float32
// rounding) instead of 0. Then w_small * inf is an infinity of w_big * inf's sign, never NaN
// (opposite signs would give inf - inf, a zero small part 0 * inf), and an infinite activation
// gives +-inf exactly as PyTorch's float32 convolution does.
__device__ __forceinline__ void split_weight(float x, uint32_t& big, uint32_t& small) {
  big = __float_as_uint(x) & 0xffffe000u;
  const float residual = x - __uint_as_float(big);
  small = to_tf32(residual != 0.0f || x == 0.0f ? residual : x * 5.9604645e-08f);
}

// 4-byte asynchronous global -> shared copy; src_bytes = 0 writes a zero without reading.
__device__ __forceinline__ void copy_async_4(void* shared_destination, const void* source,
                                             int src_bytes) {
  const unsigned int destination =
      static_cast<unsigned int>(__cvta_generic_to_shared(shared_destination));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(destination),
               "l"(source), "r"(src_bytes));
}

// 16-byte asynchronous copy (both addresses 16-byte aligned), zero-filled past src_bytes.
__device__ __forceinline__ void copy_async_16(void* shared_destination, const void* source,
                                              int src_bytes) {
  const unsigned int destination =
      static_cast<unsigned int>(__cvta_generic_to_shared(shared_destination));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(destination),
               "l"(source), "r"(src_bytes));
}

__device__ __forceinline__ void copy_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::);
}

// acc += A * B for one m16n8k8 TF32 tile; a0..a3 and b0, b1 in the PTX fragment order.
__device__ __forceinline__ void mma_tf32(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_tf32(float (&acc)[4], const uint4& a, uint32_t b0,
                                         uint32_t b1) {
  mma_tf32(acc, a.x, a.y, a.z, a.w, b0, b1);
}

inline bool is_dense_nchw(const Strides4& s, int64_t channels, int64_t height, int64_t width) {
  return s.w == 1 && s.h == width && s.c == height * width && s.n == channels * height * width;
}

// Whether `pointer` is 16-byte aligned. The tensor-core kernels' vector accesses (16-byte
// cp.async and float4 loads of rows, 8-byte pair stores) assume it of each tensor's start; a
// dense view with a storage offset (x.flatten()[1:].view(...)) lacks it, and a misaligned vector
// access is a sticky CUDA error.
inline bool aligned_16(const void* pointer) {
  return (reinterpret_cast<uintptr_t>(pointer) & 15u) == 0;
}

// What every tensor-core kernel needs, before any shared-memory question and whatever the
// storage type: groups 1, dense NCHW input and output starting 16-byte aligned, 32-bit indexing
// inside one image (batch offsets are 64-bit).
inline bool dense_nchw(const ConvParams& p) {
  if (p.groups != 1 || !aligned_16(p.input) || !aligned_16(p.output)) {
    return false;
  }
  if (!is_dense_nchw(p.input_strides, p.in_channels, p.in_height, p.in_width) ||
      !is_dense_nchw(p.output_strides, p.out_channels, p.out_height, p.out_width)) {
    return false;
  }
  return p.in_channels * p.in_height * p.in_width < (int64_t{1} << 31) &&
         p.out_channels * p.out_height * p.out_width < (int64_t{1} << 31);
}

// The above in float32, which all but the wgmma forward (float16 and bfloat16 too) require.
inline bool dense_float32_nchw(const ConvParams& p) {
  return p.dtype == DType::kFloat32 && dense_nchw(p);
}

// The configurations the wgmma forward is written for, whatever the storage type: dense_nchw with
// stride 1 and dilation 1 (the mma.sync forward takes any stride and dilation).
inline bool unit_stride_dense_nchw(const ConvParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
         dense_nchw(p);
}

// The same in float32: the backward kernels' configurations.
inline bool fast_path_shape_supported(const ConvParams& p) {
  return p.dtype == DType::kFloat32 && unit_stride_dense_nchw(p);
}

// Words of a staged plane of `raw_words` words, padded to `residue` (mod 32) so the fragment
// loads of a warp fall into distinct banks.
inline int padded_pitch(int64_t raw_words, int residue) {
  return static_cast<int>(raw_words + ((residue - raw_words % 32) + 64) % 32);
}

// Most rows of a plane of width `width` that one tile touches, where tile t holds the `pixels`
// consecutive flattened pixels from t * pixels on. Exact, not the bound (width + pixels - 2) /
// width + 1: a 512-pixel tile of a 128-wide plane spans 4 rows, not 5, one staged halo row less.
// The start offsets (t * pixels) mod width repeat with period width / gcd(pixels, width); past
// 64 of them the bound is used.
inline int64_t spanned_rows(int64_t width, int64_t pixels) {
  int64_t a = width, b = pixels;
  while (b != 0) {
    const int64_t r = a % b;
    a = b;
    b = r;
  }
  const int64_t period = width / a;
  if (period > 64) {
    return (width + pixels - 2) / width + 1;  // the bound: keeps the host loop short
  }
  int64_t rows = 0;
  for (int64_t t = 0; t < period; ++t) {
    const int64_t offset = (t * pixels) % width;
    const int64_t span = (offset + pixels - 1) / width + 1;
    rows = span > rows ? span : rows;
  }
  return rows;
}

// What a launch needs to know of the current device, read once per device.
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

// A call's shape and device limits, the key under which a kernel family memoizes its plan: the
// host-side tile search then runs once per shape and thread instead of on every call (a forward
// call planned up to three times: workspace size, dispatch, launch). Pointers and strides are
// not part of it: plans depend on shapes only (the dense-layout checks come before planning).
struct PlanKey {
  int64_t fields[20];

  bool operator==(const PlanKey& other) const {
    return std::memcmp(fields, other.fields, sizeof(fields)) == 0;
  }
};

inline PlanKey plan_key(const ConvParams& p, const DeviceLimits& limits, int64_t variant) {
  return PlanKey{{p.batch, p.in_channels, p.in_height, p.in_width, p.out_channels, p.out_height,
                  p.out_width, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_top,
                  p.pad_left, p.dilation_h, p.dilation_w, p.groups, limits.sm_count,
                  limits.max_shared_bytes, limits.cc_major * 100 + limits.cc_minor, variant}};
}

// The last shape a thread planned and its plan (one per plan function: `thread_local`).
template <typename Plan>
struct PlanMemo {
  bool valid = false;
  PlanKey key{};
  bool applies = false;
  Plan plan{};

  // The memoized answer of make(plan) -> applies for `key`, computing it on a new key.
  template <typename Make>
  bool get(const PlanKey& wanted, Plan& out, Make&& make) {
    if (!valid || !(key == wanted)) {
      valid = false;  // a throwing make cannot leave a stale entry behind (none throws today)
      applies = make(plan);
      key = wanted;
      valid = true;
    }
    out = plan;
    return applies;
  }
};

// A process-wide opt-out read from the environment: on when set to anything that does not start
// with '0' ("1", "yes"; also "false", so README documents =1). Callers read it once into a
// function-local static, so the hot path never calls getenv.
inline bool environment_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && value[0] != '0';
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

}  // namespace tensorcore
}  // namespace fusedconv
