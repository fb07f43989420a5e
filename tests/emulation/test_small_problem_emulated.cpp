// The small-problem forward's own source (csrc/cuda/forward/small_problem.cu: DMMA m8n8k4 and
// FFMA kernels for <= 16 output channels) run on the host through tests/emulation against a
// float64 reference: KernelBench v0-like stems (3 -> 16), few output channels, padding, stride.
#include "forward/families.h"
#include "kernel_check.h"

namespace emulation {
namespace {

const Family kSmallProblem{fusedconv::small_problem::applies, fusedconv::small_problem::launch};

// {batch, groups, cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kCases[] = {
    {2, 1, 3, 16, 12, 12, 3, 3, 1, 1, 0, 0, 1, 1, false, true},   // KernelBench v0, smaller
    {1, 1, 2, 8, 10, 9, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
    {1, 1, 1, 5, 11, 13, 5, 5, 2, 2, 2, 2, 1, 1, false, false},   // 5 channels, stride 2
};

class SmallProblemEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(SmallProblemEmulated, Float32) { run_case<float>(kSmallProblem, GetParam(), 51); }

INSTANTIATE_TEST_SUITE_P(Cases, SmallProblemEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
