// The depthwise forward kernels' own source (csrc/cuda/forward/depthwise.cu) run on the host
// through tests/emulation against a float64 reference: channel multipliers 1 and 2, kernels 3, 5
// and 7 at stride 1 and 2, padding and dilation, both layouts (channels_last with whole and
// partial channel vectors), three storage types.
#include "forward/families.h"
#include "fusedconv/launch.h"
#include "kernel_check.h"

namespace emulation {
namespace {

const Family kDepthwise{fusedconv::depthwise::applies, fusedconv::depthwise::launch};

// {batch, groups, cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kCases[] = {
    {2, 8, 1, 1, 12, 13, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
    {1, 6, 1, 2, 11, 9, 5, 5, 2, 2, 2, 2, 1, 1, false, true},     // multiplier 2, stride 2
    {1, 5, 1, 1, 16, 15, 7, 7, 1, 1, 3, 3, 1, 1, false, false},
    {1, 4, 1, 1, 10, 12, 3, 3, 1, 2, 2, 1, 2, 1, false, true},    // dilation, mixed stride
    {2, 16, 1, 1, 12, 13, 3, 3, 1, 1, 1, 1, 1, 1, true, true},    // whole channel vectors
    {1, 24, 1, 1, 11, 9, 5, 5, 2, 2, 2, 2, 1, 1, true, true},
    {1, 6, 1, 1, 9, 10, 3, 3, 2, 2, 1, 1, 1, 1, true, false},     // partial vectors
    {1, 8, 1, 2, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, true, true},      // channels_last, multiplier 2
    {1, 32, 1, 1, 40, 7, 7, 7, 1, 1, 3, 3, 1, 1, true, true},
    // Small NCHW planes, several a block for the planes candidate (emulated: 8 SMs): a partial
    // last block, channels wrapping across images inside a block, over 32 planes a block.
    {3, 24, 1, 1, 14, 14, 5, 5, 2, 2, 2, 2, 1, 1, false, true},
    {7, 3, 1, 1, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1, false, true},
    {10, 64, 1, 1, 7, 7, 5, 5, 1, 1, 2, 2, 1, 1, false, true},
    {4, 20, 1, 1, 6, 19, 3, 3, 1, 1, 0, 1, 1, 1, false, false},   // 3 column chunks, pad 0 / 1
};

class DepthwiseEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(DepthwiseEmulated, Float32) { run_case<float>(kDepthwise, GetParam(), 11); }
TEST_P(DepthwiseEmulated, BFloat16) { run_case<__nv_bfloat16>(kDepthwise, GetParam(), 12); }
TEST_P(DepthwiseEmulated, Float16) { run_case<__half>(kDepthwise, GetParam(), 13); }
TEST_P(DepthwiseEmulated, Float32Misaligned) { run_case<float>(kDepthwise, GetParam(), 16, 1); }

// The candidate kernels (common/depthwise_candidates.h: the NCHW planes kernels) wherever they
// apply, and none of them, whatever the measured rule picks.
TEST_P(DepthwiseEmulated, Float32AllCandidates) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kAll);
  run_case<float>(kDepthwise, GetParam(), 14);
  fusedconv::set_depthwise_candidates(previous);
}
TEST_P(DepthwiseEmulated, BFloat16NoCandidates) {
  const auto previous = fusedconv::set_depthwise_candidates(fusedconv::DepthwiseCandidates::kNone);
  run_case<__nv_bfloat16>(kDepthwise, GetParam(), 15);
  fusedconv::set_depthwise_candidates(previous);
}

INSTANTIATE_TEST_SUITE_P(Cases, DepthwiseEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
