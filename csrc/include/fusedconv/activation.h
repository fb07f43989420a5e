// f = relu o hardswish, its value and its derivative recovered from the output alone (CUTLASS's
// `HardSwish<T>` functor habit: one small host/device struct shared by every kernel and the tests).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FUSEDCONV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDCONV_HOST_DEVICE inline
#endif

namespace fusedconv {

template <typename T>
struct HardSwishReLU {
  // relu(hardswish(z)) with PyTorch's formula hardswish(z) = z * min(max(z + 3, 0), 6) / 6.
  // Written with comparisons, not fmin/fmax, so a NaN pre-activation stays NaN exactly as
  // torch.relu(F.hardswish(z)) keeps it.
  static FUSEDCONV_HOST_DEVICE T value(T z) {
    T shifted = z + T(3);
    shifted = shifted < T(0) ? T(0) : shifted;
    shifted = shifted > T(6) ? T(6) : shifted;
    const T hardswish = z * shifted / T(6);
    return hardswish < T(0) ? T(0) : hardswish;
  }

  // f'(z) from y = f(z) (DESIGN.md, "What it computes"):
  //   y <= 0      -> 0   (relu passes no gradient where its output is not positive)
  //   0 < y <= 3  -> (2z + 3) / 6 with z = (sqrt(9 + 24y) - 3) / 2, i.e. sqrt(9 + 24y) / 6;
  //                  y == 3 gives 1.5, PyTorch's hardswish slope at z == 3
  //   y > 3       -> 1
  // NaN fails every comparison and lands on 1, matching PyTorch, whose hardswish and relu backward
  // both pass the incoming gradient through at a NaN.
  static FUSEDCONV_HOST_DEVICE T grad_from_output(T y) {
    if (y <= T(0)) {
      return T(0);
    }
    if (y <= T(3)) {
      using std::sqrt;
      return sqrt(T(9) + T(24) * y) / T(6);
    }
    return T(1);
  }

  // dL/dz from dL/dy and y. Where relu passes nothing (y <= 0) this is an exact 0, not
  // grad_y * 0: PyTorch's relu backward selects, so a non-finite grad_y there gives 0, not NaN.
  static FUSEDCONV_HOST_DEVICE T backward(T grad_y, T y) {
    return y <= T(0) ? T(0) : grad_y * grad_from_output(y);
  }
};

}  // namespace fusedconv
