// The grouped forward kernel's own source (csrc/cuda/forward/grouped.cu) run on the host through
// tests/emulation against a float64 reference: every family instance (unrolled 3x3 at stride 1
// and 2, the run-time geometry), both layouts, three storage types, NCHW row vectors with each
// lead, channel blocks of 4 and 8 with ragged edges, chunked input channels, ragged row tiles,
// misaligned input views.
#include "forward/families.h"
#include "kernel_check.h"

namespace emulation {
namespace {

const Family kGrouped{fusedconv::grouped::applies, fusedconv::grouped::launch};

// {batch, groups, cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kCases[] = {
    {2, 4, 4, 4, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, false, true},    // ResNeXt-like, vector 4
    {1, 2, 4, 8, 7, 18, 3, 3, 1, 1, 0, 0, 1, 1, false, true},    // vector 2, lead 0
    {1, 2, 8, 12, 6, 13, 3, 3, 1, 1, 2, 3, 1, 1, false, false},  // ragged kQ 8, no vectors
    {2, 3, 4, 4, 11, 16, 3, 3, 2, 2, 1, 1, 1, 1, false, true},   // stride 2 phases
    {1, 2, 32, 8, 8, 12, 3, 3, 1, 1, 1, 1, 1, 1, false, true},   // chunked input channels
    {1, 2, 3, 5, 12, 10, 5, 3, 2, 1, 2, 1, 2, 1, false, true},   // run-time geometry
    {1, 4, 2, 2, 5, 7, 1, 1, 1, 1, 0, 0, 1, 1, false, true},     // 1x1
    {2, 4, 4, 4, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, true, true},     // channels_last
    {1, 2, 8, 12, 6, 13, 3, 3, 2, 2, 1, 1, 1, 1, true, false},   // channels_last, stride 2
    {1, 3, 3, 5, 12, 10, 5, 3, 2, 1, 2, 1, 2, 1, true, true},    // channels_last, run time
    {1, 2, 4, 8, 3, 140, 3, 3, 1, 1, 1, 1, 1, 1, false, true},   // two column tiles
    {1, 2, 4, 4, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1, false, true},   // row tiles past the output
    {1, 2, 4, 4, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1, true, true},    // the same in channels_last
    {1, 2, 12, 8, 8, 12, 3, 3, 1, 1, 1, 1, 1, 1, true, true},    // channel vectors, partial chunk
    {1, 2, 32, 8, 8, 12, 3, 3, 2, 2, 1, 1, 1, 1, true, true},    // channel vectors, stride 2
    {1, 2, 8, 4, 9, 11, 5, 3, 1, 2, 2, 1, 1, 2, true, true},     // channel vectors, run time
};

class GroupedEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(GroupedEmulated, Float32) { run_case<float>(kGrouped, GetParam(), 1); }
TEST_P(GroupedEmulated, BFloat16) { run_case<__nv_bfloat16>(kGrouped, GetParam(), 2); }
TEST_P(GroupedEmulated, Float16) { run_case<__half>(kGrouped, GetParam(), 3); }
// A misaligned input view: neither layout's vector staging may run.
TEST_P(GroupedEmulated, Float32Misaligned) { run_case<float>(kGrouped, GetParam(), 4, 1); }
TEST_P(GroupedEmulated, BFloat16Misaligned) {
  run_case<__nv_bfloat16>(kGrouped, GetParam(), 5, 3);
}

INSTANTIATE_TEST_SUITE_P(Cases, GroupedEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
