// The vector-row depthwise kernels' domain and launch geometry (common/depthwise_rows.cuh): host
// code without CUDA headers, which GoogleTest checks (tests/cpp/test_depthwise_rows_domain.cpp).
//
// A row walk reads whole rows as vectors of 16, 8 or 4 bytes. It needs dense NCHW planes (the
// callers check the layout), a square 3x3 or 5x5 kernel at stride 1 or 2 without dilation,
// 'same' padding ((k - 1) / 2 before the first row and column), input rows exactly `stride`
// times as wide as output rows, and output rows of whole vectors of at least two elements (a
// 5x5 halo of two columns then fits in one neighbouring vector).
#pragma once

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_rows {

constexpr int kRows = 4;  // rows of the target a thread owns

struct RowGeometry {
  int kernel = 0;        // 3 or 5
  int stride = 0;        // 1 or 2
  int vector_bytes = 0;  // 16, 8 or 4
};

// The widest vector (16, 8 or 4 bytes) that divides a row of `width` elements into whole
// vectors of at least two elements; 0 where none does.
inline int row_vector_bytes(int64_t width, int64_t element_bytes) {
  for (int bytes = 16; bytes >= 4; bytes /= 2) {
    const int64_t elements = bytes / element_bytes;
    if (elements >= 2 && width % elements == 0) {
      return bytes;
    }
  }
  return 0;
}

// Threads of a walk over `planes` target planes of target_height rows: kRows rows x `columns`
// target columns each (one vector, or two of the stride-2 grad_input's transposed walk).
inline int64_t walk_threads(int64_t planes, int64_t target_height, int64_t target_width,
                            int64_t columns) {
  return planes * ((target_height + kRows - 1) / kRows) * (target_width / columns);
}

// The geometry a row walk needs (see the top of this file), float32 / float16 / bfloat16.
inline bool row_geometry(const ConvParams& p, RowGeometry& g) {
  g = RowGeometry{};
  const int64_t k = p.kernel_h;
  const int64_t s = p.stride_h;
  const bool shape = (k == 3 || k == 5) && p.kernel_w == k && (s == 1 || s == 2) &&
                     p.stride_w == s && p.dilation_h == 1 && p.dilation_w == 1 &&
                     p.pad_top == (k - 1) / 2 && p.pad_left == (k - 1) / 2 &&
                     p.dtype != DType::kFloat64 && p.out_width > 0 &&
                     p.in_width == s * p.out_width;
  const int bytes = shape ? row_vector_bytes(p.out_width, element_bytes(p.dtype)) : 0;
  if (bytes == 0) {
    return false;
  }
  // 32-bit thread indices (FastDivisor's dividends), a block to spare: the forward's walk and
  // grad_input's (two vectors a thread at stride 2).
  constexpr int64_t kIndexLimit = (int64_t{1} << 31) - 1024;
  const int64_t count = bytes / element_bytes(p.dtype);
  if (walk_threads(p.batch * p.out_channels, p.out_height, p.out_width, count) >= kIndexLimit ||
      walk_threads(p.batch * p.in_channels, p.in_height, p.in_width, count * s) >= kIndexLimit) {
    return false;
  }
  g.kernel = static_cast<int>(k);
  g.stride = static_cast<int>(s);
  g.vector_bytes = bytes;
  return true;
}

// Whether every pointer is aligned to the vector (rows of whole vectors keep each row aligned).
inline bool vector_aligned(const RowGeometry& g, const void* a, const void* b, const void* c) {
  const uintptr_t bytes = static_cast<uintptr_t>(g.vector_bytes);
  return reinterpret_cast<uintptr_t>(a) % bytes == 0 &&
         reinterpret_cast<uintptr_t>(b) % bytes == 0 &&
         reinterpret_cast<uintptr_t>(c) % bytes == 0;
}

}  // namespace depthwise_rows
}  // namespace fusedconv
