// The configuration predicates the kernel families' plans test first (layout, alignment, dtype,
// stride), and the staging geometry the mma.sync kernels share. Host code.
#pragma once

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {

inline bool is_dense_nchw(const Strides4& s, int64_t channels, int64_t height, int64_t width) {
  return s.w == 1 && s.h == width && s.c == height * width && s.n == channels * height * width;
}

inline bool is_dense_channels_last(const Strides4& s, int64_t channels, int64_t height,
                                   int64_t width) {
  return s.c == 1 && s.w == channels && s.h == width * channels &&
         s.n == height * width * channels;
}

// Dense NCHW (channels_last = false) or dense channels_last (true); false for other strides
// (the depthwise and grouped kernels take either layout, input and output alike).
inline bool dense_layout(const Strides4& s, int64_t channels, int64_t height, int64_t width,
                         bool& channels_last) {
  channels_last = !is_dense_nchw(s, channels, height, width);
  return !channels_last || is_dense_channels_last(s, channels, height, width);
}

// Whether `pointer` is 16-byte aligned. The tensor-core kernels' vector accesses (16-byte
// cp.async and float4 loads of rows, 8-byte pair stores) assume it of each tensor's start; a
// dense view with a storage offset (x.flatten()[1:].view(...)) lacks it, and a misaligned vector
// access is a sticky CUDA error.
inline bool aligned_16(const void* pointer) {
  return (reinterpret_cast<uintptr_t>(pointer) & 15u) == 0;
}

// What every tensor-core kernel needs, before any shared-memory question and whatever the
// storage type: groups 1, input and output dense in one layout (NCHW, or channels_last) and
// starting 16-byte aligned, 32-bit indexing inside one image (batch offsets are 64-bit).
inline bool dense_in_layout(const ConvParams& p, bool channels_last) {
  if (p.groups != 1 || !aligned_16(p.input) || !aligned_16(p.output)) {
    return false;
  }
  const auto dense = channels_last ? is_dense_channels_last : is_dense_nchw;
  if (!dense(p.input_strides, p.in_channels, p.in_height, p.in_width) ||
      !dense(p.output_strides, p.out_channels, p.out_height, p.out_width)) {
    return false;
  }
  return p.in_channels * p.in_height * p.in_width < (int64_t{1} << 31) &&
         p.out_channels * p.out_height * p.out_width < (int64_t{1} << 31);
}

inline bool dense_nchw(const ConvParams& p) { return dense_in_layout(p, false); }

// The above in float32, which all but the wgmma and mma.sync forwards (float16 and bfloat16
// too) require.
inline bool dense_float32_nchw(const ConvParams& p) {
  return p.dtype == DType::kFloat32 && dense_nchw(p);
}

inline bool unit_stride(const ConvParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1;
}

// The configurations the wgmma forward is written for, whatever the storage type: dense_nchw with
// stride 1 and dilation 1 (the mma.sync forward takes any stride and dilation).
inline bool unit_stride_dense_nchw(const ConvParams& p) {
  return unit_stride(p) && dense_nchw(p);
}

// The same in float32: the backward kernels' configurations.
inline bool fast_path_shape_supported(const ConvParams& p) {
  return p.dtype == DType::kFloat32 && unit_stride_dense_nchw(p);
}

// The same in dense channels_last (input and output; the weight may have any strides), which
// the wgmma forward also takes. A tensor dense in both layouts (one channel, or a 1x1 plane) is
// dense NCHW: callers test unit_stride_dense_nchw first.
inline bool unit_stride_dense_channels_last(const ConvParams& p) {
  return unit_stride(p) && dense_in_layout(p, true);
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

}  // namespace fusedconv
