// 3xTF32: float32 accuracy from TF32 tensor cores. Each float32 operand is split into a TF32 big
// part and a TF32 small part (x - big), and a product taken as small*big + big*small + big*big
// (small*small is below float32 rounding). TF32 mode keeps the big parts only (one product).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/ptx.cuh"
#include "fusedconv/tf32.h"

namespace fusedconv {

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

// The activation-side split in either mode: 3xTF32 (split_input) or TF32 (small = 0).
template <bool kThreeTf32>
__device__ __forceinline__ void split_activation(float value, uint32_t& big, uint32_t& small) {
  if (kThreeTf32) {
    uint32_t b, s;
    split_input(value, b, s);
    big = b;
    small = s;
  } else {
    big = to_tf32(value);
    small = 0u;
  }
}

// The weight-side split in either mode: 3xTF32 (split_weight) or TF32 (big rounded to nearest,
// small = 0).
template <bool kThreeTf32>
__device__ __forceinline__ void split_weight_operand(float value, uint32_t& big,
                                                     uint32_t& small) {
  if (kThreeTf32) {
    split_weight(value, big, small);
  } else {
    big = to_tf32(value);
    small = 0u;
  }
}

// acc += A * B for one m16n8k8 tile in 3xTF32 (small*big, big*small, then big*big, the largest
// term last) or, without kThreeTf32, TF32 (big*big; the small parts are not read). A fragments
// as 16-byte words {a0, a1, a2, a3} in the PTX order.
template <bool kThreeTf32>
__device__ __forceinline__ void mma_three_tf32(float (&acc)[4], const uint4& a_big,
                                               const uint4& a_small, uint32_t b_big0,
                                               uint32_t b_big1, uint32_t b_small0,
                                               uint32_t b_small1) {
  if (kThreeTf32) {
    mma_tf32(acc, a_small, b_big0, b_big1);
    mma_tf32(acc, a_big, b_small0, b_small1);
  }
  mma_tf32(acc, a_big, b_big0, b_big1);
}

// The same with A fragments as register arrays.
template <bool kThreeTf32>
__device__ __forceinline__ void mma_three_tf32(float (&acc)[4], const uint32_t (&a_big)[4],
                                               const uint32_t (&a_small)[4], uint32_t b_big0,
                                               uint32_t b_big1, uint32_t b_small0,
                                               uint32_t b_small1) {
  mma_three_tf32<kThreeTf32>(acc, make_uint4(a_big[0], a_big[1], a_big[2], a_big[3]),
                             make_uint4(a_small[0], a_small[1], a_small[2], a_small[3]), b_big0,
                             b_big1, b_small0, b_small1);
}

}  // namespace fusedconv
