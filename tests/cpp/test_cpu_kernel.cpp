// The fused CPU path (cpu.h) against a naive seven-loop convolution in float64. Each case builds the
// logical NCHW tensors first and then scatters them into whatever memory layout the case names, so
// the reference never sees strides and a stride bug in the kernel cannot cancel out.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

#include "cpu_kernel_harness.h"
#include "fusedconv/cpu.h"
#include "fusedconv/params.h"

namespace {

std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> cases;
  const auto add = [&cases](ConvCase c) {
    // A fixed seed per case, so a failure reproduces exactly.
    c.seed = 1234u + static_cast<uint32_t>(cases.size());
    cases.push_back(std::move(c));
  };
  ConvCase c;

  c = ConvCase{};
  c.name = "basic_3x3";
  add(c);

  c = ConvCase{};
  c.name = "kernelbench_like_batch3_pad1";
  c.batch = 3;
  c.in_height = 10;
  c.in_width = 9;
  c.out_channels = 5;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  add(c);

  c = ConvCase{};
  c.name = "batch0";
  c.batch = 0;
  add(c);

  c = ConvCase{};
  c.name = "batch0_channels_last";
  c.batch = 0;
  c.input_layout = Layout::kChannelsLast;
  c.output_layout = Layout::kChannelsLast;
  add(c);

  c = ConvCase{};
  c.name = "no_bias";
  c.batch = 3;
  c.has_bias = false;
  add(c);

  c = ConvCase{};
  c.name = "stride2_symmetric_pad";
  c.batch = 3;
  c.in_channels = 4;
  c.in_height = 9;
  c.in_width = 11;
  c.out_channels = 6;
  c.stride_h = c.stride_w = 2;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  add(c);

  c = ConvCase{};
  c.name = "stride3_asymmetric_pad";
  c.in_height = 11;
  c.in_width = 13;
  c.kernel_h = 3;
  c.kernel_w = 2;
  c.stride_h = c.stride_w = 3;
  c.pad_top = 0;
  c.pad_bottom = 2;
  c.pad_left = 2;
  c.pad_right = 1;
  add(c);

  c = ConvCase{};
  c.name = "stride_2x3_last_window_in_end_padding";
  c.batch = 3;
  c.in_height = 7;
  c.in_width = 10;
  c.stride_h = 2;
  c.stride_w = 3;
  c.pad_top = 1;
  c.pad_bottom = 2;
  c.pad_left = 0;
  c.pad_right = 2;
  add(c);

  c = ConvCase{};
  c.name = "same_even_kernel_2x4";
  c.in_height = 6;
  c.in_width = 7;
  c.kernel_h = 2;
  c.kernel_w = 4;
  c.pad_top = 0;
  c.pad_bottom = 1;
  c.pad_left = 1;
  c.pad_right = 2;
  add(c);

  c = ConvCase{};
  c.name = "dilation2_pad2";
  c.in_height = 9;
  c.in_width = 10;
  c.dilation_h = c.dilation_w = 2;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 2;
  add(c);

  c = ConvCase{};
  c.name = "dilation_2x1_stride_2x1_asymmetric_pad";
  c.batch = 3;
  c.in_height = 10;
  c.in_width = 8;
  c.dilation_h = 2;
  c.dilation_w = 1;
  c.stride_h = 2;
  c.stride_w = 1;
  c.pad_top = 1;
  c.pad_bottom = 0;
  c.pad_left = 3;
  c.pad_right = 2;
  add(c);

  // Output rows and columns that lie entirely in the padding: z is the bias alone there.
  c = ConvCase{};
  c.name = "padding_wider_than_kernel";
  c.in_height = 4;
  c.in_width = 5;
  c.kernel_h = 2;
  c.kernel_w = 2;
  c.pad_top = c.pad_bottom = 3;
  c.pad_left = 4;
  c.pad_right = 3;
  add(c);

  c = ConvCase{};
  c.name = "kernel_larger_than_input";
  c.in_height = 3;
  c.in_width = 3;
  c.kernel_h = c.kernel_w = 5;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 2;
  add(c);

  c = ConvCase{};
  c.name = "groups2";
  c.batch = 3;
  c.in_channels = 4;
  c.out_channels = 6;
  c.groups = 2;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  add(c);

  c = ConvCase{};
  c.name = "groups3_no_bias_stride2";
  c.in_channels = 6;
  c.out_channels = 3;
  c.groups = 3;
  c.has_bias = false;
  c.in_height = 9;
  c.in_width = 9;
  c.stride_h = c.stride_w = 2;
  add(c);

  c = ConvCase{};
  c.name = "depthwise_groups4";
  c.in_channels = 4;
  c.out_channels = 4;
  c.groups = 4;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  add(c);

  c = ConvCase{};
  c.name = "kernel_1x5";
  c.in_height = 6;
  c.in_width = 9;
  c.kernel_h = 1;
  c.kernel_w = 5;
  c.pad_left = c.pad_right = 2;
  add(c);

  c = ConvCase{};
  c.name = "kernel_5x1_dilation_1x3";
  c.in_height = 9;
  c.in_width = 6;
  c.kernel_h = 5;
  c.kernel_w = 1;
  c.dilation_w = 3;
  c.pad_top = 2;
  c.pad_bottom = 1;
  add(c);

  c = ConvCase{};
  c.name = "pointwise_stride2";
  c.batch = 3;
  c.in_channels = 5;
  c.out_channels = 7;
  c.kernel_h = c.kernel_w = 1;
  c.stride_h = c.stride_w = 2;
  add(c);

  c = ConvCase{};
  c.name = "channels_last_input";
  c.batch = 3;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  c.input_layout = Layout::kChannelsLast;
  add(c);

  c = ConvCase{};
  c.name = "channels_last_output";
  c.batch = 3;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  c.output_layout = Layout::kChannelsLast;
  add(c);

  c = ConvCase{};
  c.name = "channels_last_everywhere_groups2_stride2";
  c.batch = 3;
  c.in_channels = 4;
  c.out_channels = 6;
  c.groups = 2;
  c.in_height = 9;
  c.in_width = 10;
  c.stride_h = c.stride_w = 2;
  c.pad_top = 1;
  c.pad_bottom = 0;
  c.pad_left = 0;
  c.pad_right = 1;
  c.input_layout = Layout::kChannelsLast;
  c.weight_layout = Layout::kChannelsLast;
  c.output_layout = Layout::kChannelsLast;
  add(c);

  c = ConvCase{};
  c.name = "every_other_column_input";
  c.batch = 3;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  c.input_layout = Layout::kEveryOtherColumn;
  add(c);

  c = ConvCase{};
  c.name = "every_other_column_input_stride2_dilation2";
  c.in_height = 11;
  c.in_width = 12;
  c.stride_h = c.stride_w = 2;
  c.dilation_h = c.dilation_w = 2;
  c.pad_top = 2;
  c.pad_bottom = 1;
  c.pad_left = 1;
  c.pad_right = 2;
  c.input_layout = Layout::kEveryOtherColumn;
  add(c);

  c = ConvCase{};
  c.name = "every_other_column_output";
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  c.output_layout = Layout::kEveryOtherColumn;
  add(c);

  c = ConvCase{};
  c.name = "ohwi_weight";
  c.in_channels = 5;
  c.out_channels = 3;
  c.weight_layout = Layout::kChannelsLast;
  add(c);

  // Enough (image, channel) planes that every OpenMP thread gets several.
  c = ConvCase{};
  c.name = "many_planes";
  c.batch = 3;
  c.in_channels = 6;
  c.out_channels = 16;
  c.groups = 2;
  c.in_height = 12;
  c.in_width = 13;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = 1;
  add(c);

  return cases;
}

struct CpuConvParam {
  ConvCase conv;
  DType dtype;
};

void PrintTo(const CpuConvParam& param, std::ostream* os) {
  PrintTo(param.conv, os);
  *os << (param.dtype == DType::kFloat32 ? " float32" : " float64");
}

std::vector<CpuConvParam> cpu_conv_params() {
  std::vector<CpuConvParam> params;
  for (const ConvCase& c : conv_cases()) {
    params.push_back({c, DType::kFloat32});
    params.push_back({c, DType::kFloat64});
  }
  return params;
}

class ConvHardSwishReLUCpu : public ::testing::TestWithParam<CpuConvParam> {};

TEST_P(ConvHardSwishReLUCpu, MatchesNaiveReference) {
  if (GetParam().dtype == DType::kFloat32) {
    check_forward<float>(GetParam().conv);
  } else {
    check_forward<double>(GetParam().conv);
  }
}

TEST_P(ConvHardSwishReLUCpu, ActivationGradMatchesReferenceDerivative) {
  if (GetParam().dtype == DType::kFloat32) {
    check_activation_grad<float>(GetParam().conv);
  } else {
    check_activation_grad<double>(GetParam().conv);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configurations, ConvHardSwishReLUCpu, ::testing::ValuesIn(cpu_conv_params()),
    [](const ::testing::TestParamInfo<CpuConvParam>& info) {
      return info.param.conv.name + (info.param.dtype == DType::kFloat32 ? "_float32" : "_float64");
    });

// The grad kernel on hand-picked outputs covering every branch (including y == 3, NaN and +inf)
// across enough elements for several OpenMP chunks, against the functor it is meant to apply.
template <typename T>
void check_grad_matches_functor() {
  const std::vector<T> special = {T(0),   T(-0.0), std::numeric_limits<T>::min(), T(0.25),
                                  T(1),   T(2.5),  T(3),  T(3.5), T(100),
                                  std::numeric_limits<T>::quiet_NaN(),
                                  std::numeric_limits<T>::infinity()};
  constexpr int64_t kNumel = 10007;
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> output_distribution(0.0, 6.0);
  const std::vector<double> grad_output_values = random_values<T>(rng, kNumel, 1.0);
  std::vector<T> output(kNumel);
  for (int64_t i = 0; i < kNumel; ++i) {
    output[static_cast<size_t>(i)] =
        i % 3 == 0 ? special[static_cast<size_t>(i / 3) % special.size()]
                   : static_cast<T>(output_distribution(rng));
  }
  const std::vector<T> grad_output(grad_output_values.begin(), grad_output_values.end());
  std::vector<T> grad_input(kNumel, std::numeric_limits<T>::quiet_NaN());

  ActivationGradParams p{};
  p.numel = kNumel;
  p.dtype = std::is_same<T, float>::value ? DType::kFloat32 : DType::kFloat64;
  p.grad_output = grad_output.data();
  p.output = output.data();
  p.grad_input = grad_input.data();
  ASSERT_TRUE(fusedconv::hardswish_relu_grad_cpu(p));

  for (size_t i = 0; i < output.size(); ++i) {
    if (std::isnan(output[i])) {
      // As PyTorch's CPU hardswish backward: a NaN output gives a NaN gradient (CUDA's, and the
      // functor's grad_from_output, pass grad_output through instead).
      ASSERT_TRUE(std::isnan(grad_input[i])) << "element " << i;
      continue;
    }
    const T expected =
        output[i] <= T(0)
            ? T(0)
            : grad_output[i] * fusedconv::HardSwishReLU<T>::grad_from_output(output[i]);
    ASSERT_EQ(grad_input[i], expected) << "element " << i << ", y = " << output[i];
  }
}

TEST(HardSwishReLUGradCpu, MatchesFunctorFloat32) { check_grad_matches_functor<float>(); }
TEST(HardSwishReLUGradCpu, MatchesFunctorFloat64) { check_grad_matches_functor<double>(); }

TEST(HardSwishReLUGradCpu, EmptyIsANoOp) {
  ActivationGradParams p{};
  p.numel = 0;
  p.dtype = DType::kFloat32;
  EXPECT_TRUE(fusedconv::hardswish_relu_grad_cpu(p));
}

// The CPU path is float32/float64 only; other dtypes must be refused before anything is written.
class CpuUnsupportedDType : public ::testing::TestWithParam<DType> {};

TEST_P(CpuUnsupportedDType, ConvReturnsFalseAndWritesNothing) {
  ConvCase c;
  c.name = "unsupported_dtype";
  c.seed = 7;
  ConvFixture<float> fixture(c);
  ConvParams p = fixture.params();
  p.dtype = GetParam();
  EXPECT_FALSE(fusedconv::conv_hardswish_relu_cpu(p));
  for (const float value : fixture.output_buffer) {
    ASSERT_TRUE(std::isnan(value));
  }
}

TEST_P(CpuUnsupportedDType, GradReturnsFalseAndWritesNothing) {
  const std::vector<float> grad_output(64, 1.0f);
  const std::vector<float> output(64, 1.0f);
  std::vector<float> grad_input(64, std::numeric_limits<float>::quiet_NaN());
  ActivationGradParams p{};
  p.numel = 64;
  p.dtype = GetParam();
  p.grad_output = grad_output.data();
  p.output = output.data();
  p.grad_input = grad_input.data();
  EXPECT_FALSE(fusedconv::hardswish_relu_grad_cpu(p));
  for (const float value : grad_input) {
    ASSERT_TRUE(std::isnan(value));
  }
}

INSTANTIATE_TEST_SUITE_P(HalfPrecision, CpuUnsupportedDType,
                         ::testing::Values(DType::kFloat16, DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(info.param == DType::kFloat16 ? "float16"
                                                                            : "bfloat16");
                         });

}  // namespace

// Geometry the torch layer refuses with a message must not reach a kernel through the C API
// either: a zero stride would divide by zero, a negative padding or dilation index out of bounds.
TEST(CpuInvalidGeometry, ConvReturnsFalseAndWritesNothing) {
  ConvCase c;
  c.name = "invalid_geometry";
  c.seed = 11;
  ConvFixture<float> fixture(c);
  const std::vector<void (*)(ConvParams&)> breakers = {
      [](ConvParams& p) { p.stride_h = 0; },       [](ConvParams& p) { p.stride_w = -1; },
      [](ConvParams& p) { p.dilation_h = 0; },     [](ConvParams& p) { p.dilation_w = -2; },
      [](ConvParams& p) { p.pad_top = -1; },       [](ConvParams& p) { p.pad_left = -4; },
      [](ConvParams& p) { p.kernel_h = 0; },       [](ConvParams& p) { p.groups = 0; },
      [](ConvParams& p) { p.groups = 5; },         [](ConvParams& p) { p.batch = -1; },
      [](ConvParams& p) { p.out_width = -3; },
  };
  for (size_t i = 0; i < breakers.size(); ++i) {
    ConvParams p = fixture.params();
    ASSERT_TRUE(fusedconv::valid_geometry(p));
    breakers[i](p);
    EXPECT_FALSE(fusedconv::valid_geometry(p)) << "breaker " << i;
    EXPECT_FALSE(fusedconv::conv_hardswish_relu_cpu(p)) << "breaker " << i;
  }
  for (const float value : fixture.output_buffer) {
    ASSERT_TRUE(std::isnan(value));
  }
}
