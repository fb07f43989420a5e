// f = relu o hardswish, its value and its derivative recovered from the output alone (CUTLASS's
// `HardSwish<T>` functor habit: one small host/device struct shared by every kernel and the tests).
#pragma once

#include <cmath>
#include <type_traits>

#include "fusedconv/host_device.h"

namespace fusedconv {

template <typename T>
struct HardSwishReLU {
  // relu(hardswish(z)) with hardswish(z) = z * min(max(z + 3, 0), 6) * (1 / 6), the order and
  // the rounded 1/6 of PyTorch's CUDA kernel. The multiplication matters on the GPU: an IEEE
  // division is a slow-path-checked subroutine there, and in the wgmma kernel's epilogue the
  // divisions were most of the issued instructions. Every max/min keeps a NaN (NaN in, NaN out,
  // and -inf gives -inf * 0 = NaN), as torch.relu(F.hardswish(z)) does.
  // On the GPU in float32: z * gate with gate = clamp(z / 6 + 1/2, 0, 1) from one saturating
  // FMA, then one NaN-keeping max: 3 instructions where the form above takes 6, in the fast
  // kernels' epilogues (which issue this for every output). Within 2 ulp of the form above; the
  // same NaN and infinity results (a NaN saturates to gate 0 and z * 0 is NaN again; -inf * 0 is
  // NaN; +inf * 1 is +inf).
  static FUSEDCONV_HOST_DEVICE T value(T z) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float gate;
      asm("fma.rn.sat.f32 %0, %1, %2, %3;" : "=f"(gate) : "f"(z), "f"(1.0f / 6.0f), "f"(0.5f));
      return max_keep_nan(z * gate, 0.0f);
    }
#endif
    const T shifted = min_keep_nan(max_keep_nan(z + T(3), T(0)), T(6));
    return max_keep_nan(z * shifted * (T(1) / T(6)), T(0));
  }

  // f'(z) from y = f(z) (docs/DESIGN.md, "What it computes"):
  //   y <= 0      -> 0   (relu passes no gradient where its output is not positive)
  //   0 < y <= 3  -> (2z + 3) / 6 with z = (sqrt(9 + 24y) - 3) / 2, i.e. sqrt(9 + 24y) / 6;
  //                  y == 3 gives 1.5 (exactly on the host), PyTorch's hardswish slope at z == 3
  //                  on CUDA (its CPU kernel's vectorised elements give 1: docs/DESIGN.md)
  //   y > 3       -> 1
  // NaN fails every comparison and lands on 1, matching PyTorch, whose hardswish and relu backward
  // both pass the incoming gradient through at a NaN.
  // Branch-free (selects, no divergent branches per element): the fused backward evaluates it for
  // every staged element. The root is taken of whatever 9 + 24y is and only selected on (0, 3].
  static FUSEDCONV_HOST_DEVICE T grad_from_output(T y) {
    const T slope = y <= T(3) ? root_over_six(T(9) + T(24) * y) : T(1);
    return y <= T(0) ? T(0) : slope;
  }

  // dL/dz from dL/dy and y. Where relu passes nothing (y <= 0) this is an exact 0, not
  // grad_y * 0: PyTorch's relu backward selects, so a non-finite grad_y there gives 0, not NaN.
  static FUSEDCONV_HOST_DEVICE T backward(T grad_y, T y) {
    return y <= T(0) ? T(0) : grad_y * grad_from_output(y);  // a select, as above
  }

  // backward as PyTorch's CPU kernels give it: their vectorised hardswish backward returns NaN
  // at a NaN input (CUDA's passes grad_y through, as `backward` does), so a NaN output, from a
  // NaN pre-activation, gives a NaN gradient that spreads through the convolution's backward.
  // Every branch is computed and then selected, so that the CPU loops vectorise (with
  // -fno-math-errno, sqrt is one instruction); the root of a negative argument is never selected.
  static T backward_cpu(T grad_y, T y) {
    using std::sqrt;
    const T root = sqrt(T(9) + T(24) * y) / T(6);  // NaN for a NaN y: kept below
    const T slope = y > T(3) ? T(1) : root;
    const T grad = grad_y * slope;
    return y <= T(0) ? T(0) : grad;
  }

 private:
  // max(a, b) and min(a, b) for a bound b that is never NaN; a NaN `a` comes back. On the GPU
  // in float32 one NaN-propagating FMNMX each (PTX max.NaN / min.NaN) where the comparison
  // form cost a compare and a select; elsewhere the comparisons.
  static FUSEDCONV_HOST_DEVICE T max_keep_nan(T a, T b) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float result;
      asm("max.NaN.f32 %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b));
      return result;
    }
#endif
    return a < b ? b : a;
  }
  static FUSEDCONV_HOST_DEVICE T min_keep_nan(T a, T b) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float result;
      asm("min.NaN.f32 %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b));
      return result;
    }
#endif
    return a > b ? b : a;
  }

  // sqrt(t) / 6. On the GPU in float32 through the reciprocal square root (MUFU.RSQ, a few ulp):
  // IEEE sqrt and division cost ~30 instructions, which the fused backward pays for every staged
  // element of g. Elsewhere (host, float64) exactly rounded.
  static FUSEDCONV_HOST_DEVICE float root_over_six(float t) {
#if defined(__CUDA_ARCH__)
    return t * rsqrtf(t) * (1.0f / 6.0f);
#else
    using std::sqrt;
    return sqrt(t) / 6.0f;
#endif
  }
  static FUSEDCONV_HOST_DEVICE double root_over_six(double t) {
    using std::sqrt;
    return sqrt(t) / 6.0;
  }
};

}  // namespace fusedconv
