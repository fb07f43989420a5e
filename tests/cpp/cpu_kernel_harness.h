// Test harness of the CPU path's tests (test_cpu_kernel.cpp, its only includer): the float64
// reference, tensors scattered into a case's memory layout, per-dtype tolerances, and the forward
// and activation-gradient checks against the naive reference.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fusedconv/activation.h"
#include "fusedconv/cpu.h"
#include "fusedconv/params.h"
#include "fusedconv/shape.h"

namespace {

using fusedconv::ActivationGradParams;
using fusedconv::ConvParams;
using fusedconv::DType;
using fusedconv::Strides4;

double reference_activation(double z) {
  return std::max(z * std::clamp(z + 3.0, 0.0, 6.0) / 6.0, 0.0);
}

// d/dz relu(hardswish(z)), PyTorch's 1.5 at z == 3.
double reference_activation_derivative(double z) {
  if (z <= 0.0) {
    return 0.0;
  }
  return z <= 3.0 ? (2.0 * z + 3.0) / 6.0 : 1.0;
}

enum class Layout {
  kContiguous,        // NCHW (OIHW for weights)
  kChannelsLast,      // NHWC (OHWI for weights)
  kEveryOtherColumn,  // NCHW inside a buffer twice as wide; the skipped columns hold NaN
};

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kChannelsLast:
      return "channels_last";
    case Layout::kEveryOtherColumn:
      return "every_other_column";
  }
  return "unknown";
}

struct Shape4 {
  int64_t n, c, h, w;
  int64_t numel() const { return n * c * h * w; }
  // Offset of (n, c, h, w) in a dense NCHW vector: how the test stores logical tensors.
  int64_t logical_index(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return ((in * c + ic) * h + ih) * w + iw;
  }
};

struct StridedStorage {
  Strides4 strides;
  int64_t elements;  // buffer length, gaps included
};

StridedStorage describe_storage(const Shape4& s, Layout layout) {
  switch (layout) {
    case Layout::kContiguous:
      return {{s.c * s.h * s.w, s.h * s.w, s.w, 1}, s.numel()};
    case Layout::kChannelsLast:
      return {{s.h * s.w * s.c, 1, s.w * s.c, s.c}, s.numel()};
    case Layout::kEveryOtherColumn: {
      const int64_t row = 2 * s.w;
      return {{s.c * s.h * row, s.h * row, row, 2}, s.n * s.c * s.h * row};
    }
  }
  return {{0, 0, 0, 0}, 0};
}

int64_t storage_offset(const Strides4& st, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * st.n + c * st.c + h * st.h + w * st.w;
}

// Visits every logical element of `shape` as (dense NCHW index, storage offset).
template <typename Visit>
void for_each_element(const Shape4& shape, const Strides4& strides, Visit&& visit) {
  for (int64_t n = 0; n < shape.n; ++n) {
    for (int64_t c = 0; c < shape.c; ++c) {
      for (int64_t h = 0; h < shape.h; ++h) {
        for (int64_t w = 0; w < shape.w; ++w) {
          visit(shape.logical_index(n, c, h, w), storage_offset(strides, n, c, h, w));
        }
      }
    }
  }
}

// Normal values, rounded to T so that the float64 reference sees exactly what the kernel sees.
// Exact zeros are redrawn: a zero input would hide a wrong index that happens to read it.
template <typename T>
std::vector<double> random_values(std::mt19937& rng, int64_t count, double stddev) {
  std::normal_distribution<double> distribution(0.0, stddev);
  std::vector<double> values(static_cast<size_t>(count));
  for (double& value : values) {
    T drawn = T(0);
    while (drawn == T(0)) {
      drawn = static_cast<T>(distribution(rng));
    }
    value = static_cast<double>(drawn);
  }
  return values;
}

// Writes a logical NCHW tensor into a NaN-filled buffer of the given layout: any read of a gap
// poisons the result.
template <typename T>
std::vector<T> scatter(const std::vector<double>& logical, const Shape4& shape,
                       const StridedStorage& storage) {
  std::vector<T> buffer(static_cast<size_t>(storage.elements),
                        std::numeric_limits<T>::quiet_NaN());
  for_each_element(shape, storage.strides, [&](int64_t index, int64_t offset) {
    buffer[static_cast<size_t>(offset)] = static_cast<T>(logical[static_cast<size_t>(index)]);
  });
  return buffer;
}

struct ConvCase {
  std::string name;
  int64_t batch = 1;
  int64_t in_channels = 3, in_height = 8, in_width = 8;
  int64_t out_channels = 4;
  int64_t kernel_h = 3, kernel_w = 3;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  bool has_bias = true;
  Layout input_layout = Layout::kContiguous;
  Layout weight_layout = Layout::kContiguous;
  Layout output_layout = Layout::kContiguous;
  uint32_t seed = 0;

  int64_t out_height() const {
    return fusedconv::conv_output_size(in_height, pad_top, pad_bottom, kernel_h, stride_h,
                                       dilation_h);
  }
  int64_t out_width() const {
    return fusedconv::conv_output_size(in_width, pad_left, pad_right, kernel_w, stride_w,
                                       dilation_w);
  }
  Shape4 input_shape() const { return {batch, in_channels, in_height, in_width}; }
  Shape4 weight_shape() const { return {out_channels, in_channels / groups, kernel_h, kernel_w}; }
  Shape4 output_shape() const { return {batch, out_channels, out_height(), out_width()}; }
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name << " {N" << c.batch << " C" << c.in_channels << " H" << c.in_height << " W"
      << c.in_width << " Cout" << c.out_channels << " k" << c.kernel_h << "x" << c.kernel_w
      << " stride " << c.stride_h << "," << c.stride_w << " pad t" << c.pad_top << " b"
      << c.pad_bottom << " l" << c.pad_left << " r" << c.pad_right << " dilation " << c.dilation_h
      << "," << c.dilation_w << " groups " << c.groups << (c.has_bias ? " bias" : " no-bias")
      << " in " << layout_name(c.input_layout) << " weight " << layout_name(c.weight_layout)
      << " out " << layout_name(c.output_layout) << " seed " << c.seed << "}";
}

// Naive convolution over logical NCHW tensors: the pre-activation z, in float64.
std::vector<double> reference_pre_activation(const ConvCase& c, const std::vector<double>& input,
                                             const std::vector<double>& weight,
                                             const std::vector<double>& bias) {
  const Shape4 in = c.input_shape();
  const Shape4 wt = c.weight_shape();
  const Shape4 out = c.output_shape();
  const int64_t in_per_group = c.in_channels / c.groups;
  const int64_t out_per_group = c.out_channels / c.groups;
  std::vector<double> z(static_cast<size_t>(out.numel()));
  for (int64_t n = 0; n < out.n; ++n) {
    for (int64_t co = 0; co < out.c; ++co) {
      const int64_t group = co / out_per_group;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        for (int64_t ow = 0; ow < out.w; ++ow) {
          double sum = c.has_bias ? bias[static_cast<size_t>(co)] : 0.0;
          for (int64_t ci = 0; ci < in_per_group; ++ci) {
            for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
              for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
                const int64_t ih = oh * c.stride_h - c.pad_top + kh * c.dilation_h;
                const int64_t iw = ow * c.stride_w - c.pad_left + kw * c.dilation_w;
                if (ih < 0 || ih >= c.in_height || iw < 0 || iw >= c.in_width) {
                  continue;  // zero padding
                }
                sum += input[static_cast<size_t>(
                           in.logical_index(n, group * in_per_group + ci, ih, iw))] *
                       weight[static_cast<size_t>(wt.logical_index(co, ci, kh, kw))];
              }
            }
          }
          z[static_cast<size_t>(out.logical_index(n, co, oh, ow))] = sum;
        }
      }
    }
  }
  return z;
}

template <typename T>
struct Tolerance;

template <>
struct Tolerance<float> {
  static constexpr double kAbs = 1e-4;
  static constexpr double kRel = 1e-4;
  // A float32 accumulation may land on the other side of a kink (z == 0 or z == 3) when the exact
  // z is this close to it; the derivative jumps there, so the gradient check skips such elements.
  static constexpr double kKinkMargin = 1e-3;
};

template <>
struct Tolerance<double> {
  static constexpr double kAbs = 1e-10;
  static constexpr double kRel = 1e-10;
  static constexpr double kKinkMargin = 1e-9;
};

template <typename T>
bool within_tolerance(double actual, double expected) {
  return std::abs(actual - expected) <= Tolerance<T>::kAbs + Tolerance<T>::kRel * std::abs(expected);
}

// Everything one forward call needs, built from a case: logical tensors, their strided buffers and
// the params pointing at them.
template <typename T>
struct ConvFixture {
  explicit ConvFixture(const ConvCase& c) : conv(c) {
    std::mt19937 rng(c.seed);
    const Shape4 in = c.input_shape();
    const Shape4 wt = c.weight_shape();
    // Weights scaled so that z has a standard deviation near 1.5: every branch of the activation
    // (z <= 0, 0 < z < 3, z > 3) gets hit in every case.
    const double fan_in = static_cast<double>(wt.c * wt.h * wt.w);
    input = random_values<T>(rng, in.numel(), 1.0);
    weight = random_values<T>(rng, wt.numel(), 1.5 / std::sqrt(fan_in));
    bias = random_values<T>(rng, c.out_channels, 0.5);

    input_storage = describe_storage(in, c.input_layout);
    weight_storage = describe_storage(wt, c.weight_layout);
    output_storage = describe_storage(c.output_shape(), c.output_layout);
    input_buffer = scatter<T>(input, in, input_storage);
    weight_buffer = scatter<T>(weight, wt, weight_storage);
    bias_buffer.assign(bias.begin(), bias.end());
    // NaN-poisoned: an output element the kernel never writes fails the comparison.
    output_buffer.assign(static_cast<size_t>(output_storage.elements),
                         std::numeric_limits<T>::quiet_NaN());
  }

  ConvParams params() {
    ConvParams p{};
    p.batch = conv.batch;
    p.in_channels = conv.in_channels;
    p.in_height = conv.in_height;
    p.in_width = conv.in_width;
    p.out_channels = conv.out_channels;
    p.out_height = conv.out_height();
    p.out_width = conv.out_width();
    p.kernel_h = conv.kernel_h;
    p.kernel_w = conv.kernel_w;
    p.stride_h = conv.stride_h;
    p.stride_w = conv.stride_w;
    p.pad_top = conv.pad_top;
    p.pad_left = conv.pad_left;
    p.dilation_h = conv.dilation_h;
    p.dilation_w = conv.dilation_w;
    p.groups = conv.groups;
    p.input_strides = input_storage.strides;
    p.weight_strides = weight_storage.strides;
    p.output_strides = output_storage.strides;
    p.dtype = std::is_same<T, float>::value ? DType::kFloat32 : DType::kFloat64;
    p.input = input_buffer.data();
    p.weight = weight_buffer.data();
    p.bias = conv.has_bias ? bias_buffer.data() : nullptr;
    p.output = output_buffer.data();
    return p;
  }

  // The kernel's output in logical NCHW order, as float64.
  std::vector<double> gathered_output() const {
    const Shape4 out = conv.output_shape();
    std::vector<double> gathered(static_cast<size_t>(out.numel()));
    for_each_element(out, output_storage.strides, [&](int64_t index, int64_t offset) {
      gathered[static_cast<size_t>(index)] =
          static_cast<double>(output_buffer[static_cast<size_t>(offset)]);
    });
    return gathered;
  }

  ConvCase conv;
  std::vector<double> input, weight, bias;
  StridedStorage input_storage{}, weight_storage{}, output_storage{};
  std::vector<T> input_buffer, weight_buffer, bias_buffer, output_buffer;
};

// Collects mismatches and reports the first few with their NCHW coordinates, instead of one
// failure line per element.
class MismatchReport {
 public:
  explicit MismatchReport(Shape4 shape) : shape_(shape) {}

  void add(int64_t index, double actual, double expected) {
    if (count_ < kShown) {
      const int64_t w = index % shape_.w;
      const int64_t h = (index / shape_.w) % shape_.h;
      const int64_t c = (index / (shape_.w * shape_.h)) % shape_.c;
      const int64_t n = index / (shape_.w * shape_.h * shape_.c);
      details_ << "\n  at (n=" << n << ", c=" << c << ", h=" << h << ", w=" << w
               << "): got " << actual << ", expected " << expected;
    }
    ++count_;
  }
  int64_t count() const { return count_; }
  std::string details() const { return details_.str(); }

 private:
  static constexpr int64_t kShown = 8;
  Shape4 shape_;
  int64_t count_ = 0;
  std::ostringstream details_;
};

template <typename T>
void check_forward(const ConvCase& c) {
  ASSERT_GT(c.out_height(), 0) << "bad test case";
  ASSERT_GT(c.out_width(), 0) << "bad test case";
  ASSERT_EQ(c.in_channels % c.groups, 0) << "bad test case";
  ASSERT_EQ(c.out_channels % c.groups, 0) << "bad test case";

  ConvFixture<T> fixture(c);
  ASSERT_TRUE(fusedconv::conv_hardswish_relu_cpu(fixture.params()));

  const std::vector<double> z =
      reference_pre_activation(c, fixture.input, fixture.weight, fixture.bias);
  const std::vector<double> actual = fixture.gathered_output();
  MismatchReport report(c.output_shape());
  for (size_t i = 0; i < z.size(); ++i) {
    const double expected = reference_activation(z[i]);
    if (!within_tolerance<T>(actual[i], expected)) {
      report.add(static_cast<int64_t>(i), actual[i], expected);
    }
  }
  EXPECT_EQ(report.count(), 0) << "of " << z.size() << " outputs differ:" << report.details();

  // The kernel must write its output elements and nothing else: gaps of a strided output keep
  // their NaN.
  std::vector<bool> is_element(fixture.output_buffer.size(), false);
  for_each_element(c.output_shape(), fixture.output_storage.strides,
                   [&](int64_t, int64_t offset) { is_element[static_cast<size_t>(offset)] = true; });
  int64_t gaps_written = 0;
  for (size_t i = 0; i < is_element.size(); ++i) {
    gaps_written += !is_element[i] && !std::isnan(fixture.output_buffer[i]) ? 1 : 0;
  }
  EXPECT_EQ(gaps_written, 0) << "elements outside the output view were overwritten";
}

// grad_input = grad_output * f'(y) from the kernel's own output y, checked against the derivative
// taken at the reference pre-activation z.
template <typename T>
void check_activation_grad(const ConvCase& c) {
  ConvFixture<T> fixture(c);
  ASSERT_TRUE(fusedconv::conv_hardswish_relu_cpu(fixture.params()));
  const std::vector<double> z =
      reference_pre_activation(c, fixture.input, fixture.weight, fixture.bias);
  const std::vector<double> y = fixture.gathered_output();

  std::mt19937 rng(c.seed + 7919u);
  const std::vector<double> grad_output_values =
      random_values<T>(rng, static_cast<int64_t>(y.size()), 1.0);
  const std::vector<T> output(y.begin(), y.end());
  const std::vector<T> grad_output(grad_output_values.begin(), grad_output_values.end());
  std::vector<T> grad_input(y.size(), std::numeric_limits<T>::quiet_NaN());

  ActivationGradParams p{};
  p.numel = static_cast<int64_t>(y.size());
  p.dtype = std::is_same<T, float>::value ? DType::kFloat32 : DType::kFloat64;
  p.grad_output = grad_output.data();
  p.output = output.data();
  p.grad_input = grad_input.data();
  ASSERT_TRUE(fusedconv::hardswish_relu_grad_cpu(p));

  MismatchReport report(c.output_shape());
  int64_t compared = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    const bool near_kink = std::abs(z[i]) < Tolerance<T>::kKinkMargin ||
                           std::abs(z[i] - 3.0) < Tolerance<T>::kKinkMargin;
    if (near_kink) {
      continue;
    }
    ++compared;
    const double expected = grad_output_values[i] * reference_activation_derivative(z[i]);
    const double actual = static_cast<double>(grad_input[i]);
    if (!within_tolerance<T>(actual, expected)) {
      report.add(static_cast<int64_t>(i), actual, expected);
    }
  }
  EXPECT_EQ(report.count(), 0) << "of " << compared << " gradients differ:" << report.details();
  // A near-empty comparison would let a broken kernel pass.
  EXPECT_GE(compared, static_cast<int64_t>(z.size() * 9 / 10));
}

}  // namespace
