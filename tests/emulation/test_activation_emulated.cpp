// The floor path's element-wise passes (csrc/cuda/forward/activation_inplace.cu, the in-place
// activation with the bias of NCHW or channels_last channels; csrc/cuda/backward/
// activation_grad.cu, g = dy * f'(y); activation_bias_grad.cu, g with grad_bias summed) run on
// the host through tests/emulation: four storage types, 16-byte vectors and the scalar path (a
// misaligned start, a tail), non-finite values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "fusedconv/launch.h"
#include "kernel_check.h"

namespace emulation {
namespace {

double to_double(double v) { return v; }
template <typename T>
double to_double(T v) { return to_float(v); }

// relu(hardswish(z)) in float64 with eager PyTorch's non-finite results: NaN stays NaN, -inf
// gives -inf * 0 = NaN, +inf gives +inf.
double reference_value(double z) {
  if (std::isnan(z) || z == -INFINITY) return NAN;
  if (z == INFINITY) return INFINITY;
  return reference_activation(z);
}

template <typename T>
double tolerance(double expected) {
  const double relative = sizeof(T) == 8 ? 1e-14 : sizeof(T) == 4 ? 1e-6
                          : dtype_of<T>() == DType::kBFloat16 ? 0x1p-7 : 0x1p-10;
  return relative * std::fabs(expected) + (sizeof(T) >= 4 ? 1e-7 : 1e-4);
}

template <typename T>
void expect_matches(double actual, double expected, int64_t i) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(actual)) << "element " << i;
  } else if (std::isinf(expected)) {
    EXPECT_EQ(actual, expected) << "element " << i;
  } else {
    EXPECT_NEAR(actual, expected, tolerance<T>(expected)) << "element " << i;
  }
}

struct Layout {
  int64_t numel, offset;          // elements, and the start's offset from a 16-byte boundary
  int64_t channels, channel_stride;  // bias layout; channels 0: no bias
};

template <typename T>
void check_inplace(const Layout& l, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "numel " << l.numel << " offset " << l.offset
                                    << " channels " << l.channels << " stride "
                                    << l.channel_stride);
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float4> words((l.numel + l.offset) * sizeof(T) / 16 + 2);
  T* data = reinterpret_cast<T*>(words.data()) + l.offset;
  std::vector<T> bias(std::max<int64_t>(l.channels, 1));
  std::vector<double> z(l.numel);
  for (T& b : bias) b = from_float<T>(normal(random));
  const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -3.0f, 3.0f};
  for (int64_t i = 0; i < l.numel; ++i) {
    data[i] = from_float<T>(i % 97 < 6 ? specials[i % 97] : normal(random));
    const int64_t channel = l.channels > 0 ? (i / l.channel_stride) % l.channels : 0;
    z[i] = to_double(data[i]) + (l.channels > 0 ? to_double(bias[channel]) : 0.0);
  }
  fusedconv::ActivationParams p{l.numel, dtype_of<T>(), data};
  if (l.channels > 0) {
    p.bias = bias.data();
    p.channels = l.channels;
    p.channel_stride = l.channel_stride;
  }
  ASSERT_EQ(fusedconv::launch_hardswish_relu_inplace(p, nullptr), cudaSuccess);
  for (int64_t i = 0; i < l.numel; ++i) {
    // The bias is added in the accumulator type, then the value rounded once.
    expect_matches<T>(to_double(data[i]), reference_value(z[i]), i);
  }
}

template <typename T>
void check_grad(const Layout& l, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "numel " << l.numel << " offset " << l.offset);
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t words = (l.numel + l.offset) * sizeof(T) / 16 + 2;
  std::vector<float4> dy_words(words), y_words(words), g_words(words);
  T* dy = reinterpret_cast<T*>(dy_words.data()) + l.offset;
  T* y = reinterpret_cast<T*>(y_words.data()) + l.offset;
  T* g = reinterpret_cast<T*>(g_words.data()) + l.offset;
  for (int64_t i = 0; i < l.numel; ++i) {
    dy[i] = from_float<T>(normal(random));
    y[i] = from_float<T>(i % 89 == 0 ? NAN : std::fabs(normal(random)) - 1.0f);  // y <= 0 too
    g[i] = from_float<T>(NAN);
  }
  fusedconv::ActivationGradParams p{l.numel, dtype_of<T>(), dy, y, g};
  ASSERT_EQ(fusedconv::launch_hardswish_relu_grad(p, nullptr), cudaSuccess);
  for (int64_t i = 0; i < l.numel; ++i) {
    const double yi = to_double(y[i]);
    const double expected = yi <= 0 ? 0.0 : to_double(dy[i]) * slope_from_output(yi);
    expect_matches<T>(to_double(g[i]), expected, i);
  }
}

// The g pass that also sums grad_bias (the floor backward's): g as check_grad's, and each
// channel's sum of g; with grad_input null it sums without storing g.
template <typename T>
void check_bias_grad(const Layout& l, bool store_g, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "numel " << l.numel << " offset " << l.offset
                                    << " channels " << l.channels << " stride "
                                    << l.channel_stride << (store_g ? "" : " grad_bias only"));
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t words = (l.numel + l.offset) * sizeof(T) / 16 + 2;
  std::vector<float4> dy_words(words), y_words(words), g_words(words);
  T* dy = reinterpret_cast<T*>(dy_words.data()) + l.offset;
  T* y = reinterpret_cast<T*>(y_words.data()) + l.offset;
  T* g = reinterpret_cast<T*>(g_words.data()) + l.offset;
  std::vector<T> grad_bias(l.channels, from_float<T>(NAN));
  for (int64_t i = 0; i < l.numel; ++i) {
    dy[i] = from_float<T>(normal(random));
    y[i] = from_float<T>(std::fabs(normal(random)) - 1.0f);
    g[i] = from_float<T>(NAN);
  }
  fusedconv::ActivationGradParams p{l.numel, dtype_of<T>(), dy, y, store_g ? g : nullptr};
  p.grad_bias = grad_bias.data();
  p.channels = l.channels;
  p.channel_stride = l.channel_stride;
  int64_t bytes = 0;
  ASSERT_EQ(fusedconv::hardswish_relu_bias_grad_workspace_bytes(p, bytes), cudaSuccess);
  std::vector<float4> workspace(bytes / 16 + 1);
  p.workspace = workspace.data();
  ASSERT_EQ(fusedconv::launch_hardswish_relu_bias_grad(p, nullptr), cudaSuccess);
  std::vector<double> sums(l.channels, 0.0), scales(l.channels, 0.0);
  for (int64_t i = 0; i < l.numel; ++i) {
    const double yi = to_double(y[i]);
    const double expected = yi <= 0 ? 0.0 : to_double(dy[i]) * slope_from_output(yi);
    const int64_t channel = (i / l.channel_stride) % l.channels;
    sums[channel] += expected;
    scales[channel] += std::fabs(expected);
    if (store_g) {
      expect_matches<T>(to_double(g[i]), expected, i);
    } else {
      EXPECT_TRUE(std::isnan(to_double(g[i]))) << "g stored at " << i;
    }
  }
  for (int64_t c = 0; c < l.channels; ++c) {
    // Sums of float32 terms rounded once: a relative error of the sum of magnitudes.
    const double unit = sizeof(T) >= 4 ? 1e-5 : 0x1p-7;
    EXPECT_NEAR(to_double(grad_bias[c]), sums[c], unit * (std::fabs(sums[c]) + scales[c]))
        << "grad_bias " << c;
  }
}

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) {
  const Layout& l = info.param;
  return "n" + std::to_string(l.numel) + "_at" + std::to_string(l.offset) + "_c" +
         std::to_string(l.channels) + "x" + std::to_string(l.channel_stride);
}

// {numel, offset, channels, channel_stride}
const Layout kLayouts[] = {
    {1, 0, 0, 1},          {7, 1, 0, 1},       {4099, 0, 0, 1},   {4099, 3, 0, 1},
    {2 * 6 * 35, 0, 6, 35},  // NCHW: 2 images, 6 channels of 5x7
    {2 * 6 * 35, 1, 6, 35},  // the same, misaligned (scalar path)
    {2 * 35 * 6, 0, 6, 1},   // channels_last
    {3 * 10 * 13, 2, 10, 1},
};

class ActivationEmulated : public ::testing::TestWithParam<Layout> {};

TEST_P(ActivationEmulated, InplaceFloat32) { check_inplace<float>(GetParam(), 1); }
TEST_P(ActivationEmulated, InplaceFloat64) { check_inplace<double>(GetParam(), 2); }
TEST_P(ActivationEmulated, InplaceBFloat16) { check_inplace<__nv_bfloat16>(GetParam(), 3); }
TEST_P(ActivationEmulated, InplaceFloat16) { check_inplace<__half>(GetParam(), 4); }
TEST_P(ActivationEmulated, GradFloat32) { check_grad<float>(GetParam(), 5); }
TEST_P(ActivationEmulated, GradFloat64) { check_grad<double>(GetParam(), 6); }
TEST_P(ActivationEmulated, GradBFloat16) { check_grad<__nv_bfloat16>(GetParam(), 7); }
TEST_P(ActivationEmulated, GradFloat16) { check_grad<__half>(GetParam(), 8); }

// Bias sums need channels (layouts with none are check_grad's only).
const Layout kBiasLayouts[] = {
    {2 * 6 * 35, 0, 6, 35}, {2 * 6 * 35, 1, 6, 35}, {2 * 35 * 6, 0, 6, 1},
    {3 * 10 * 13, 2, 10, 1}, {4 * 64 * 49, 0, 64, 49}, {4 * 49 * 64, 0, 64, 1},
};

class BiasGradEmulated : public ::testing::TestWithParam<Layout> {};

TEST_P(BiasGradEmulated, Float32) { check_bias_grad<float>(GetParam(), true, 9); }
TEST_P(BiasGradEmulated, Float32BiasOnly) { check_bias_grad<float>(GetParam(), false, 10); }
TEST_P(BiasGradEmulated, BFloat16) { check_bias_grad<__nv_bfloat16>(GetParam(), true, 11); }
TEST_P(BiasGradEmulated, Float16) { check_bias_grad<__half>(GetParam(), true, 12); }

INSTANTIATE_TEST_SUITE_P(Layouts, BiasGradEmulated, ::testing::ValuesIn(kBiasLayouts),
                         layout_name);

INSTANTIATE_TEST_SUITE_P(Layouts, ActivationEmulated, ::testing::ValuesIn(kLayouts),
                         layout_name);

}  // namespace
}  // namespace emulation
