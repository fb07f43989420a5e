// The dense backward's own sources run on the host through tests/emulation: the small-problem
// backward (csrc/cuda/backward/small_backward.cu, one launch for every gradient, and
// small_backward_bands.cu, 3x3 stride-1 layers by bands of rows) and the fused dgrad / wgrad
// (dgrad.cu, wgrad.cu on mma.sync, 3xTF32, through the backward planner): grad_input,
// grad_weight and grad_bias from grad_y and the saved y against float64, float32 layers;
// gradients poisoned with NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backward/small_backward.h"
#include "backward/small_backward_bands.h"
#include "fusedconv/launch.h"
#include "kernel_check.h"

namespace emulation {
namespace {

struct BackwardFamily {
  bool (*applies)(const ConvParams&);
  cudaError_t (*workspace_bytes)(const ConvParams&, bool, int64_t&);
  cudaError_t (*launch)(const fusedconv::ConvBackwardParams&, cudaStream_t);
};

// Dense (groups 1) NCHW float32: every gradient, or grad_input alone.
void check_backward(const BackwardFamily& family, const Case& c, bool params_wanted,
                    uint32_t seed) {
  SCOPED_TRACE(name(c));
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  ConvParams p = case_params(c, DType::kFloat32);  // groups 1, NCHW
  const int64_t cin = p.in_channels, cout = p.out_channels;
  const int64_t out_h = p.out_height, out_w = p.out_width;
  const fusedconv::Strides4 xs = p.input_strides, ys = p.output_strides;
  const int64_t taps = c.kernel_h * c.kernel_w;
  std::vector<float> x(c.batch * cin * c.height * c.width), weight(cout * cin * taps);
  std::vector<float> bias(cout), y(c.batch * cout * out_h * out_w), dy(y.size());
  for (float& v : x) v = normal(random);
  for (float& v : weight) v = normal(random) / std::sqrt(static_cast<float>(cin * taps));
  for (float& v : bias) v = normal(random);
  for (float& v : dy) v = normal(random);
  const auto at = [](const fusedconv::Strides4& s, int64_t n, int64_t ch, int64_t h, int64_t w) {
    return n * s.n + ch * s.c + h * s.h + w * s.w;
  };
  const auto input_at = [&](int64_t oh, int64_t ow, int64_t r, int64_t s, int64_t& ih,
                            int64_t& iw) {
    ih = oh * c.stride_h - c.pad_h + r * c.dilation_h;
    iw = ow * c.stride_w - c.pad_w + s * c.dilation_w;
    return ih >= 0 && ih < c.height && iw >= 0 && iw < c.width;
  };
  std::vector<double> g(y.size());
  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow) {
          double z = bias[co];
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t r = 0; r < c.kernel_h; ++r)
              for (int64_t s = 0; s < c.kernel_w; ++s) {
                int64_t ih, iw;
                if (input_at(oh, ow, r, s, ih, iw))
                  z += double(x[at(xs, n, ci, ih, iw)]) *
                       weight[(co * cin + ci) * taps + r * c.kernel_w + s];
              }
          const int64_t i = at(ys, n, co, oh, ow);
          y[i] = static_cast<float>(reference_activation(z));
          g[i] = y[i] <= 0 ? 0.0 : dy[i] * slope_from_output(y[i]);
        }
  std::vector<float> dx(x.size(), NAN), dw(weight.size(), NAN), db(cout, NAN);

  p.input = x.data();
  p.weight = weight.data();
  p.bias = bias.data();
  p.output = y.data();
  ASSERT_TRUE(family.applies(p));
  int64_t bytes = 0;
  ASSERT_EQ(family.workspace_bytes(p, params_wanted, bytes), cudaSuccess);
  std::vector<float4> workspace(bytes / 16 + 1);
  std::memset(static_cast<void*>(workspace.data()), 0xFF, workspace.size() * sizeof(float4));
  fusedconv::ConvBackwardParams bp{p, dy.data(), dx.data(), params_wanted ? dw.data() : nullptr,
                                   params_wanted ? db.data() : nullptr, workspace.data()};
  ASSERT_EQ(family.launch(bp, nullptr), cudaSuccess);

  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t ci = 0; ci < cin; ++ci)
      for (int64_t ih = 0; ih < c.height; ++ih)
        for (int64_t iw = 0; iw < c.width; ++iw) {
          double expected = 0, scale = 0;
          for (int64_t co = 0; co < cout; ++co)
            for (int64_t oh = 0; oh < out_h; ++oh)
              for (int64_t ow = 0; ow < out_w; ++ow)
                for (int64_t r = 0; r < c.kernel_h; ++r)
                  for (int64_t s = 0; s < c.kernel_w; ++s) {
                    int64_t th, tw;
                    if (!input_at(oh, ow, r, s, th, tw) || th != ih || tw != iw) continue;
                    const double term = g[at(ys, n, co, oh, ow)] *
                                        weight[(co * cin + ci) * taps + r * c.kernel_w + s];
                    expected += term;
                    scale += std::fabs(term);
                  }
          ASSERT_NEAR(dx[at(xs, n, ci, ih, iw)], expected, 1e-5 * (std::fabs(expected) + scale) + 1e-7)
              << "grad_input n" << n << " c" << ci << " h" << ih << " w" << iw;
        }
  if (!params_wanted) return;
  for (int64_t co = 0; co < cout; ++co) {
    double bias_sum = 0, bias_scale = 0;
    for (int64_t n = 0; n < c.batch; ++n)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow) {
          bias_sum += g[at(ys, n, co, oh, ow)];
          bias_scale += std::fabs(g[at(ys, n, co, oh, ow)]);
        }
    ASSERT_NEAR(db[co], bias_sum, 1e-5 * (std::fabs(bias_sum) + bias_scale) + 1e-7)
        << "grad_bias c" << co;
    for (int64_t ci = 0; ci < cin; ++ci)
      for (int64_t r = 0; r < c.kernel_h; ++r)
        for (int64_t s = 0; s < c.kernel_w; ++s) {
          double expected = 0, scale = 0;
          for (int64_t n = 0; n < c.batch; ++n)
            for (int64_t oh = 0; oh < out_h; ++oh)
              for (int64_t ow = 0; ow < out_w; ++ow) {
                int64_t ih, iw;
                if (!input_at(oh, ow, r, s, ih, iw)) continue;
                const double term = g[at(ys, n, co, oh, ow)] * x[at(xs, n, ci, ih, iw)];
                expected += term;
                scale += std::fabs(term);
              }
          ASSERT_NEAR(dw[(co * cin + ci) * taps + r * c.kernel_w + s], expected,
                      1e-5 * (std::fabs(expected) + scale) + 1e-7)
              << "grad_weight co" << co << " ci" << ci << " tap " << r << "," << s;
        }
  }
}

// The fused dgrad / wgrad (backward/dgrad.cu, wgrad.cu: mma.sync, 3xTF32) through the backward
// planner under the "fused" policy, where it plans them.
fusedconv::BackwardPlan fused_plan(const ConvParams& p, bool params_wanted, cudaError_t& status) {
  const auto previous = fusedconv::set_plan_policy(fusedconv::PlanPolicy::kFused);
  fusedconv::BackwardMask mask;
  mask.grad_input = true;
  mask.grad_weight = mask.grad_bias = params_wanted;
  // grad_y is as aligned as y (both fresh allocations): y stands in for it when planning.
  const fusedconv::ConvBackwardParams bp{p, p.output, nullptr, nullptr, nullptr, nullptr};
  fusedconv::BackwardPlan plan;
  status = fusedconv::plan_backward(bp, mask, /*allow_tf32=*/false, plan);
  fusedconv::set_plan_policy(previous);
  return plan;
}

bool fused_applies(const ConvParams& p) {
  cudaError_t status;
  return fused_plan(p, true, status).kernel == fusedconv::BackwardKernel::kFused &&
         status == cudaSuccess;
}

cudaError_t fused_workspace_bytes(const ConvParams& p, bool params_wanted, int64_t& bytes) {
  cudaError_t status;
  bytes = fused_plan(p, params_wanted, status).workspace_bytes;
  return status;
}

cudaError_t fused_launch(const fusedconv::ConvBackwardParams& bp, cudaStream_t stream) {
  cudaError_t status;
  const fusedconv::BackwardPlan plan = fused_plan(bp.conv, bp.grad_weight != nullptr, status);
  if (status != cudaSuccess) {
    return status;
  }
  return fusedconv::launch_planned_backward(bp, plan, /*allow_tf32=*/false, stream);
}

const BackwardFamily kFusedBackward{fused_applies, fused_workspace_bytes, fused_launch};

const BackwardFamily kSmall{fusedconv::small_backward::applies,
                            fusedconv::small_backward::workspace_bytes,
                            fusedconv::small_backward::launch};
const BackwardFamily kBands{fusedconv::small_backward_bands::applies,
                            fusedconv::small_backward_bands::workspace_bytes,
                            fusedconv::small_backward_bands::launch};

// {batch, groups = 1, cin, cout, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kSmallCases[] = {
    {2, 1, 3, 16, 10, 11, 3, 3, 1, 1, 0, 0, 1, 1, false, true},  // KernelBench v0's layer
    {2, 1, 3, 8, 9, 10, 3, 3, 2, 1, 1, 1, 1, 2, false, true},
    {1, 1, 16, 5, 7, 6, 1, 1, 1, 1, 0, 0, 1, 1, false, true},    // 1x1
    {1, 1, 2, 4, 9, 9, 5, 3, 1, 2, 2, 1, 1, 1, false, true},     // run-time taps
};
const Case kBandsCases[] = {
    {2, 1, 3, 16, 12, 11, 3, 3, 1, 1, 0, 0, 1, 1, false, true},
    {1, 1, 3, 8, 20, 9, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
};

// Dense stride-1 float32 beyond the small-problem kernel's channels: the fused dgrad / wgrad.
const Case kFusedCases[] = {
    {2, 1, 8, 32, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, false, true},   // v0.1-like
    {1, 1, 12, 40, 8, 7, 3, 3, 1, 1, 0, 0, 1, 1, false, true},   // channels past a chunk
    {1, 1, 8, 24, 5, 6, 5, 5, 1, 1, 2, 2, 1, 1, false, true},
};

class SmallBackwardEmulated : public ::testing::TestWithParam<Case> {};
class FusedBackwardEmulated : public ::testing::TestWithParam<Case> {};
class SmallBackwardBandsEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(SmallBackwardEmulated, AllGradients) { check_backward(kSmall, GetParam(), true, 31); }
TEST_P(SmallBackwardEmulated, GradInputOnly) { check_backward(kSmall, GetParam(), false, 32); }
TEST_P(SmallBackwardBandsEmulated, AllGradients) { check_backward(kBands, GetParam(), true, 33); }
TEST_P(SmallBackwardBandsEmulated, GradInputOnly) {
  check_backward(kBands, GetParam(), false, 34);
}

TEST_P(FusedBackwardEmulated, AllGradients) {
  check_backward(kFusedBackward, GetParam(), true, 35);
}
TEST_P(FusedBackwardEmulated, GradInputOnly) {
  check_backward(kFusedBackward, GetParam(), false, 36);
}

const auto kName = [](const ::testing::TestParamInfo<Case>& info) { return name(info.param); };
INSTANTIATE_TEST_SUITE_P(Cases, FusedBackwardEmulated, ::testing::ValuesIn(kFusedCases), kName);
INSTANTIATE_TEST_SUITE_P(Cases, SmallBackwardEmulated, ::testing::ValuesIn(kSmallCases), kName);
INSTANTIATE_TEST_SUITE_P(Cases, SmallBackwardBandsEmulated, ::testing::ValuesIn(kBandsCases),
                         kName);

}  // namespace
}  // namespace emulation
