// What the emulated kernel tests share: a convolution case, random inputs in a storage type, the
// NaN-poisoned output, and the float64 reference every output element is checked against.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"
#include "fusedconv/params.h"

namespace emulation {

using fusedconv::ConvParams;
using fusedconv::DType;

struct Case {
  int batch, groups, cin_g, cout_g, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h,
      pad_w, dilation_h, dilation_w;
  bool channels_last, bias;
};

inline std::string name(const Case& c) {
  char text[200];
  std::snprintf(text, sizeof text, "n%dg%d_%dto%d_%dx%d_k%dx%d_s%dx%d_p%dx%d_d%dx%d%s%s",
                c.batch, c.groups, c.cin_g, c.cout_g, c.height, c.width, c.kernel_h, c.kernel_w,
                c.stride_h, c.stride_w, c.pad_h, c.pad_w, c.dilation_h, c.dilation_w,
                c.channels_last ? "_cl" : "", c.bias ? "" : "_nobias");
  return text;
}

// Storage <-> float for the three types.
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
T from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }
template <>
inline __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
inline double from_float<double>(float v) { return v; }
template <typename T>
DType dtype_of();
template <>
inline DType dtype_of<float>() { return DType::kFloat32; }
template <>
inline DType dtype_of<__half>() { return DType::kFloat16; }
template <>
inline DType dtype_of<__nv_bfloat16>() { return DType::kBFloat16; }
template <>
inline DType dtype_of<double>() { return DType::kFloat64; }

inline fusedconv::Strides4 dense(int64_t c, int64_t h, int64_t w, bool channels_last) {
  return channels_last ? fusedconv::Strides4{h * w * c, 1, w * c, c}
                       : fusedconv::Strides4{c * h * w, h * w, w, 1};
}

// f'(z) from y = f(z), as the backward kernels recover it (docs/DESIGN.md): 0 where y <= 0,
// sqrt(9 + 24y) / 6 on (0, 3], 1 above and at a NaN y (PyTorch's CUDA kernels pass the gradient
// through there).
inline double slope_from_output(double y) {
  if (std::isnan(y)) return 1.0;
  if (y <= 0) return 0.0;
  return y <= 3 ? std::sqrt(9 + 24 * y) / 6 : 1.0;
}

inline double reference_activation(double z) {
  const double hardswish = z * std::min(std::max(z + 3.0, 0.0), 6.0) / 6.0;
  return std::max(hardswish, 0.0);
}

// The geometry of case `c` (dense tensors in its layout, output sizes) with no tensors yet.
inline ConvParams case_params(const Case& c, DType dtype) {
  ConvParams p{};
  p.batch = c.batch;
  p.groups = c.groups;
  p.in_channels = int64_t{c.groups} * c.cin_g;
  p.out_channels = int64_t{c.groups} * c.cout_g;
  p.in_height = c.height;
  p.in_width = c.width;
  p.kernel_h = c.kernel_h;
  p.kernel_w = c.kernel_w;
  p.stride_h = c.stride_h;
  p.stride_w = c.stride_w;
  p.pad_top = c.pad_h;
  p.pad_left = c.pad_w;
  p.dilation_h = c.dilation_h;
  p.dilation_w = c.dilation_w;
  p.out_height = (c.height + 2 * c.pad_h - c.dilation_h * (c.kernel_h - 1) - 1) / c.stride_h + 1;
  p.out_width = (c.width + 2 * c.pad_w - c.dilation_w * (c.kernel_w - 1) - 1) / c.stride_w + 1;
  p.input_strides = dense(p.in_channels, c.height, c.width, c.channels_last);
  p.weight_strides = dense(c.cin_g, c.kernel_h, c.kernel_w, false);
  p.output_strides = dense(p.out_channels, p.out_height, p.out_width, c.channels_last);
  p.dtype = dtype;
  return p;
}

// A kernel family's entry points (forward/families.h).
struct Family {
  bool (*applies)(const ConvParams&);
  cudaError_t (*launch)(const ConvParams&, cudaStream_t);
};

// Runs `family` on random inputs of case `c` in storage type T, output poisoned with NaN, and
// checks every output element against the float64 reference.
template <typename T>
// `input_offset` elements past an allocation's (16-byte aligned) start: a misaligned input view
// (x.flatten()[1:].view(...)), whose kernels must not take their aligned-vector paths.
// `channels_last_weight`: the weight in channels_last (what a channels_last module's weight is).
void run_case(const Family& family, const Case& c, uint32_t seed, int64_t input_offset = 0,
              bool channels_last_weight = false) {
  SCOPED_TRACE(name(c) + (input_offset ? " input offset " + std::to_string(input_offset) : ""));
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  ConvParams p = case_params(c, dtype_of<T>());
  if (channels_last_weight) {
    p.weight_strides = dense(c.cin_g, c.kernel_h, c.kernel_w, true);
  }
  const int64_t cin = p.in_channels, cout = p.out_channels;
  const int64_t out_h = p.out_height, out_w = p.out_width;
  const int64_t input_count = c.batch * cin * c.height * c.width;
  std::vector<float4> input_words((input_count + input_offset) * sizeof(T) / sizeof(float4) + 1);
  T* input = reinterpret_cast<T*>(input_words.data()) + input_offset;
  std::vector<T> output(c.batch * cout * out_h * out_w);
  std::vector<T> weight(cout * c.cin_g * c.kernel_h * c.kernel_w), bias(cout);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.cin_g * c.kernel_h * c.kernel_w));
  for (int64_t i = 0; i < input_count; ++i) input[i] = from_float<T>(normal(random));
  for (T& v : weight) v = from_float<T>(normal(random) * scale);
  for (T& v : bias) v = from_float<T>(normal(random));
  for (T& v : output) v = from_float<T>(std::numeric_limits<float>::quiet_NaN());

  p.input = input;
  p.weight = weight.data();
  p.bias = c.bias ? bias.data() : nullptr;
  p.output = output.data();
  ASSERT_TRUE(family.applies(p));
  ASSERT_EQ(family.launch(p, nullptr), cudaSuccess);

  const auto at = [](const fusedconv::Strides4& s, int64_t n, int64_t ch, int64_t h, int64_t w) {
    return n * s.n + ch * s.c + h * s.h + w * s.w;
  };
  // float32: float32 accumulation of exact products against float64; 16-bit: the float64
  // result rounded once, within one unit in the last place of the type (plus float32 noise).
  const double relative = sizeof(T) == 4 ? 1e-5 : (p.dtype == DType::kBFloat16 ? 0x1p-7 : 0x1p-10);
  int checked = 0, positive = 0;
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t oc = 0; oc < cout; ++oc) {
      const int64_t g = oc / c.cout_g;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
          double z = c.bias ? to_float(bias[oc]) : 0.0;
          for (int64_t ci = 0; ci < c.cin_g; ++ci) {
            for (int64_t ky = 0; ky < c.kernel_h; ++ky) {
              for (int64_t kx = 0; kx < c.kernel_w; ++kx) {
                const int64_t ih = oh * c.stride_h - c.pad_h + ky * c.dilation_h;
                const int64_t iw = ow * c.stride_w - c.pad_w + kx * c.dilation_w;
                if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
                z += double(to_float(input[at(p.input_strides, n, g * c.cin_g + ci, ih, iw)])) *
                     to_float(weight[at(p.weight_strides, oc, ci, ky, kx)]);
              }
            }
          }
          const double expected = reference_activation(z);
          const double actual = to_float(output[at(p.output_strides, n, oc, oh, ow)]);
          ASSERT_FALSE(std::isnan(actual)) << "unwritten output n" << n << " c" << oc << " h" << oh
                                           << " w" << ow;
          ASSERT_NEAR(actual, expected, relative * std::fabs(expected) + 1e-5)
              << "n" << n << " c" << oc << " h" << oh << " w" << ow;
          ++checked;
          positive += expected > 0;
        }
      }
    }
  }
  EXPECT_EQ(checked, static_cast<int>(output.size()));
  EXPECT_GT(positive, 0);
}

}  // namespace emulation
