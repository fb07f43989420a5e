// PTX wrappers every kernel family shares: asynchronous copies (cp.async), the m16n8k8 TF32 and
// m16n8k16 16-bit mma.sync, ldmatrix, and, on the sm_90a device pass only, mbarriers, the
// async-proxy fence, bulk copies and warpgroup MMAs (wgmma). One wrapper per instruction; the
// kernels' own synchronisation (named-barrier numbering, turn order) stays with the kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// The device pass that has wgmma: nvcc defines __CUDA_ARCH_FEAT_SM90_ALL for sm_90a only.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FUSEDCONV_WGMMA_DEVICE 1
#endif

namespace fusedconv {

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

// The same through L1 (cp.async.ca): for rows re-read by neighbouring taps of one CTA, which
// .cg would fetch from L2 each time.
__device__ __forceinline__ void copy_async_16_l1(void* shared_destination, const void* source,
                                                 int src_bytes) {
  const unsigned int destination =
      static_cast<unsigned int>(__cvta_generic_to_shared(shared_destination));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(destination),
               "l"(source), "r"(src_bytes));
}

__device__ __forceinline__ void copy_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::);
}

__device__ __forceinline__ void copy_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most kPending committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void copy_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
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

// D = A * B + C on the FP64 tensor cores, A 8x4 (row), B 4x8 (col). Lane l holds A[l / 4][l % 4],
// B[l % 4][l / 4] and D[l / 4][2 (l % 4) + {0, 1}] (PTX ISA, "mma.m8n8k4 with .f64").
__device__ __forceinline__ void dmma_m8n8k4(double (&d)[2], double a, double b) {
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
               : "+d"(d[0]), "+d"(d[1])
               : "d"(a), "d"(b));
}

__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// Four 8x8 matrices of 16-bit elements from shared memory, one 16-byte row address per lane
// (lanes 8j..8j+7 give matrix j's rows); lane l receives row l / 4, elements 2 (l % 4) + {0, 1}
// of each matrix, the m16n8k16 fragment order.
__device__ __forceinline__ void load_matrix_x4(uint32_t (&fragment)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(fragment[0]), "=r"(fragment[1]), "=r"(fragment[2]), "=r"(fragment[3])
               : "r"(address));
}

// acc += A * B for one m16n8k16 tile of bfloat16 (kBFloat16) or float16 operands, float32
// accumulation; a and b in the PTX fragment order.
template <bool kBFloat16>
__device__ __forceinline__ void mma_16bit(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (kBFloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

}  // namespace fusedconv

#if FUSEDCONV_WGMMA_DEVICE
#include "common/ptx_sm90.cuh"
#endif
