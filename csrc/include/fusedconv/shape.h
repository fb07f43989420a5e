// Output-size arithmetic of a 2-D convolution, shared by input validation and the C++ tests.
#pragma once

#include <cstdint>

namespace fusedconv {

// Rows (or columns) the kernel spans once dilated: d * (k - 1) + 1.
inline int64_t dilated_kernel_extent(int64_t kernel, int64_t dilation) {
  return dilation * (kernel - 1) + 1;
}

// Output length along one axis, as torch.nn.functional.conv2d computes it. Returns a value <= 0
// when the padded input is smaller than the dilated kernel; callers report that as an error.
inline int64_t conv_output_size(int64_t input, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                                int64_t stride, int64_t dilation) {
  const int64_t span = input + pad_begin + pad_end - dilated_kernel_extent(kernel, dilation);
  if (span < 0) {
    return 0;
  }
  return span / stride + 1;
}

}  // namespace fusedconv
