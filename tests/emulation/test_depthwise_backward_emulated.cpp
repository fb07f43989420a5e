// The depthwise backward's own sources (csrc/cuda/backward/depthwise_backward.cu and
// depthwise_backward_channels_last.cu) run on the host through tests/emulation: grad_input,
// grad_weight and grad_bias from grad_y and the saved y against float64, both layouts, kernels
// 3, 5 and 7, strides 1 and 2, dilation, three storage types; gradients poisoned with NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backward/depthwise_backward.h"
#include "fusedconv/launch.h"
#include "kernel_check.h"

namespace emulation {
namespace {

// `input_wanted` / `params_wanted`: which gradients the call asks for (the others' pointers
// null, their buffers left poisoned).
// `offsets`: elements by which x, y and grad_y start past their buffers' (16-byte aligned)
// starts, as views into larger storage can.
template <typename T>
void check_backward(const Case& c, uint32_t seed, bool input_wanted = true,
                    bool params_wanted = true, std::array<int, 3> offsets = {0, 0, 0}) {
  SCOPED_TRACE(name(c));
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  ConvParams p = case_params(c, dtype_of<T>());  // depthwise, multiplier 1
  const int64_t channels = p.in_channels, k = c.kernel_h;
  const int64_t out_h = p.out_height, out_w = p.out_width;
  const fusedconv::Strides4 xs = p.input_strides, ys = p.output_strides;
  const int64_t x_count = c.batch * channels * c.height * c.width;
  const int64_t y_count = c.batch * channels * out_h * out_w;
  std::vector<T> x(x_count), weight(channels * k * k), bias(channels), y(y_count), dy(y_count);
  std::vector<T> dx(x_count), dw(channels * k * k), db(channels);
  for (T& v : x) v = from_float<T>(normal(random));
  for (T& v : weight) v = from_float<T>(normal(random) / static_cast<float>(k));
  for (T& v : bias) v = from_float<T>(normal(random));
  for (T& v : dy) v = from_float<T>(normal(random));
  const auto at = [](const fusedconv::Strides4& s, int64_t n, int64_t ch, int64_t h, int64_t w) {
    return n * s.n + ch * s.c + h * s.h + w * s.w;
  };
  // y = f(z) rounded to T, as the forward stored it; g = dy * f'(y) in float64.
  std::vector<double> g(y_count);
  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow) {
          double z = to_float(bias[ch]);
          for (int64_t r = 0; r < k; ++r)
            for (int64_t s = 0; s < k; ++s) {
              const int64_t ih = oh * c.stride_h - c.pad_h + r * c.dilation_h;
              const int64_t iw = ow * c.stride_w - c.pad_w + s * c.dilation_w;
              if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
              z += double(to_float(x[at(xs, n, ch, ih, iw)])) * to_float(weight[(ch * k + r) * k + s]);
            }
          const int64_t i = at(ys, n, ch, oh, ow);
          y[i] = from_float<T>(static_cast<float>(reference_activation(z)));
          const double yi = to_float(y[i]);
          g[i] = yi <= 0 ? 0.0 : to_float(dy[i]) * slope_from_output(yi);
        }
  for (T& v : dx) v = from_float<T>(NAN);
  for (T& v : dw) v = from_float<T>(NAN);
  for (T& v : db) v = from_float<T>(NAN);

  const auto moved = [](const std::vector<T>& values, int offset) {
    std::vector<T> storage(values.size() + offset);
    std::copy(values.begin(), values.end(), storage.begin() + offset);
    return storage;
  };
  std::vector<T> x_run = moved(x, offsets[0]), y_run = moved(y, offsets[1]);
  std::vector<T> dy_run = moved(dy, offsets[2]);
  p.input = x_run.data() + offsets[0];
  p.weight = weight.data();
  p.bias = bias.data();
  p.output = y_run.data() + offsets[1];
  ASSERT_TRUE(fusedconv::depthwise_backward::applies(p));
  int64_t bytes = 0;
  ASSERT_EQ(fusedconv::depthwise_backward::workspace_bytes(p, params_wanted, bytes), cudaSuccess);
  std::vector<float4> workspace(bytes / 16 + 1);
  fusedconv::ConvBackwardParams bp{p,
                                   dy_run.data() + offsets[2],
                                   input_wanted ? dx.data() : nullptr,
                                   params_wanted ? dw.data() : nullptr,
                                   params_wanted ? db.data() : nullptr,
                                   bytes > 0 ? workspace.data() : nullptr};
  ASSERT_EQ(fusedconv::depthwise_backward::launch(bp, nullptr), cudaSuccess);
  if (!input_wanted) {
    ASSERT_TRUE(std::all_of(dx.begin(), dx.end(), [](T v) { return std::isnan(to_float(v)); }));
  }
  if (!params_wanted) {
    ASSERT_TRUE(std::all_of(dw.begin(), dw.end(), [](T v) { return std::isnan(to_float(v)); }));
    ASSERT_TRUE(std::all_of(db.begin(), db.end(), [](T v) { return std::isnan(to_float(v)); }));
  }

  // float32: float32 sums of float64-exact terms. 16-bit: the output rounded once, and g itself
  // rounded to the type where a kernel stages it so (one rounding per term).
  const double unit = sizeof(T) == 4 ? 0.0 : (p.dtype == DType::kBFloat16 ? 0x1p-7 : 0x1p-10);
  const double relative = sizeof(T) == 4 ? 1e-5 : unit;
  const double per_term = sizeof(T) == 4 ? 1e-5 : unit;
  // grad_input: each element a sum of up to k*k products, rounded once.
  for (int64_t n = 0; n < (input_wanted ? c.batch : 0); ++n)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t ih = 0; ih < c.height; ++ih)
        for (int64_t iw = 0; iw < c.width; ++iw) {
          double expected = 0, scale = 0;
          for (int64_t r = 0; r < k; ++r)
            for (int64_t s = 0; s < k; ++s) {
              const int64_t th = ih + c.pad_h - r * c.dilation_h;
              const int64_t tw = iw + c.pad_w - s * c.dilation_w;
              if (th < 0 || tw < 0 || th % c.stride_h || tw % c.stride_w) continue;
              const int64_t oh = th / c.stride_h, ow = tw / c.stride_w;
              if (oh >= out_h || ow >= out_w) continue;
              const double term = g[at(ys, n, ch, oh, ow)] * to_float(weight[(ch * k + r) * k + s]);
              expected += term;
              scale += std::fabs(term);
            }
          const double actual = to_float(dx[at(xs, n, ch, ih, iw)]);
          ASSERT_NEAR(actual, expected, relative * std::fabs(expected) + per_term * scale + 1e-6)
              << "grad_input n" << n << " c" << ch << " h" << ih << " w" << iw;
        }
  // grad_weight and grad_bias: sums over the batch and the output plane, rounded once.
  for (int64_t ch = 0; ch < (params_wanted ? channels : 0); ++ch) {
    double bias_sum = 0, bias_scale = 0;
    for (int64_t n = 0; n < c.batch; ++n)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow) {
          bias_sum += g[at(ys, n, ch, oh, ow)];
          bias_scale += std::fabs(g[at(ys, n, ch, oh, ow)]);
        }
    ASSERT_NEAR(to_float(db[ch]), bias_sum,
                relative * std::fabs(bias_sum) + per_term * bias_scale)
        << "grad_bias c" << ch;
    for (int64_t r = 0; r < k; ++r)
      for (int64_t s = 0; s < k; ++s) {
        double expected = 0, scale = 0;
        for (int64_t n = 0; n < c.batch; ++n)
          for (int64_t oh = 0; oh < out_h; ++oh)
            for (int64_t ow = 0; ow < out_w; ++ow) {
              const int64_t ih = oh * c.stride_h - c.pad_h + r * c.dilation_h;
              const int64_t iw = ow * c.stride_w - c.pad_w + s * c.dilation_w;
              if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
              const double term = g[at(ys, n, ch, oh, ow)] * to_float(x[at(xs, n, ch, ih, iw)]);
              expected += term;
              scale += std::fabs(term);
            }
        ASSERT_NEAR(to_float(dw[(ch * k + r) * k + s]), expected,
                    relative * std::fabs(expected) + per_term * scale)
            << "grad_weight c" << ch << " tap " << r << "," << s;
      }
  }
}

// {batch, groups (= channels), cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, cl, bias}
const Case kCases[] = {
    {2, 8, 1, 1, 12, 13, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
    {1, 8, 1, 1, 11, 9, 5, 5, 2, 2, 2, 2, 1, 1, false, true},
    {1, 8, 1, 1, 10, 9, 7, 7, 1, 1, 3, 3, 1, 1, false, true},
    {1, 8, 1, 1, 10, 12, 3, 3, 1, 1, 2, 2, 2, 2, false, true},   // dilation
    // channels_last: whole 16-byte channel vectors (8 channels: two float32 vectors, one 16-bit)
    {2, 8, 1, 1, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1, true, true},
    {1, 8, 1, 1, 9, 7, 5, 5, 2, 2, 2, 2, 1, 1, true, true},
    {1, 8, 1, 1, 8, 7, 7, 7, 1, 1, 3, 3, 1, 1, true, true},
    {1, 16, 1, 1, 7, 9, 3, 3, 2, 2, 1, 1, 1, 1, true, true},
    // Small NCHW planes, several a block for the one pass by planes (emulated: 8 SMs): a partial
    // last block, channels wrapping across images inside a block, over 32 planes a block.
    {6, 24, 1, 1, 14, 14, 5, 5, 2, 2, 2, 2, 1, 1, false, true},
    {5, 3, 1, 1, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1, false, true},
    {10, 40, 1, 1, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
    // The one pass's tap walks: 'valid' 5x5 at stride 2 (each tap's outputs from the first),
    // unequal strides (the run-time walk).
    {3, 8, 1, 1, 11, 11, 5, 5, 2, 2, 0, 0, 1, 1, false, true},
    {2, 8, 1, 1, 9, 10, 3, 3, 2, 1, 1, 1, 1, 1, false, true},
};

class DepthwiseBackwardEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(DepthwiseBackwardEmulated, Float32) { check_backward<float>(GetParam(), 21); }
TEST_P(DepthwiseBackwardEmulated, BFloat16) { check_backward<__nv_bfloat16>(GetParam(), 22); }
TEST_P(DepthwiseBackwardEmulated, Float16) { check_backward<__half>(GetParam(), 23); }

// The candidate kernels (common/depthwise_candidates.h: the sliding weight pass, the NCHW planes
// grad_input) wherever they apply, and none of them.
TEST_P(DepthwiseBackwardEmulated, Float32AllCandidates) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  check_backward<float>(GetParam(), 24);
  fusedconv::set_depthwise_candidates(previous);
}
// One gradient at a time: grad_input alone, then grad_weight and grad_bias alone.
TEST_P(DepthwiseBackwardEmulated, Float32AllCandidatesInputOnly) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  check_backward<float>(GetParam(), 26, true, false);
  fusedconv::set_depthwise_candidates(previous);
}
TEST_P(DepthwiseBackwardEmulated, BFloat16AllCandidatesParamsOnly) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  check_backward<__nv_bfloat16>(GetParam(), 27, false, true);
  fusedconv::set_depthwise_candidates(previous);
}
// x, y and grad_y off their 16-byte boundaries (NCHW, where the one pass stages runs of them):
// grad_y's and y's boundaries apart (scalar staging) and alike (vectors from the boundary).
TEST_P(DepthwiseBackwardEmulated, Float32AllCandidatesRunsOffBoundaries) {
  if (GetParam().channels_last) GTEST_SKIP() << "NCHW runs only";
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  check_backward<float>(GetParam(), 28, true, true, {1, 3, 2});
  fusedconv::set_depthwise_candidates(previous);
}
TEST_P(DepthwiseBackwardEmulated, BFloat16AllCandidatesRunsOffBoundaries) {
  if (GetParam().channels_last) GTEST_SKIP() << "NCHW runs only";
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  check_backward<__nv_bfloat16>(GetParam(), 29, true, true, {1, 3, 3});
  fusedconv::set_depthwise_candidates(previous);
}
TEST_P(DepthwiseBackwardEmulated, BFloat16NoCandidates) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kNone);
  check_backward<__nv_bfloat16>(GetParam(), 25);
  fusedconv::set_depthwise_candidates(previous);
}

INSTANTIATE_TEST_SUITE_P(Cases, DepthwiseBackwardEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
