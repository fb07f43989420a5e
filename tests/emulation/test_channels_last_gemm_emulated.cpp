// The channels_last GEMM's own source (csrc/cuda/forward/channels_last_gemm.cu) run on the host
// through tests/emulation (its cp.async copies, ldmatrix fragments and m16n8k16 / m16n8k8 MMAs
// by the PTX layouts) against a float64 reference: bfloat16, float16 and float32 in 3xTF32 (TF32
// disallowed: float32's error, 1e-5), 1x1 and 3x3, strides, padding, stems' 3 channels, few
// whole-chunk channels staged as runs.
#include "forward/families.h"
#include "kernel_check.h"

namespace emulation {
namespace {

cudaError_t launch_tf32(const ConvParams& p, cudaStream_t stream) {
  return fusedconv::channels_last_gemm::launch(p, /*allow_tf32=*/true, stream);
}

cudaError_t launch_three_tf32(const ConvParams& p, cudaStream_t stream) {
  return fusedconv::channels_last_gemm::launch(p, /*allow_tf32=*/false, stream);
}

const Family kGemm{fusedconv::channels_last_gemm::applies, launch_tf32};
const Family kGemmThreeTf32{fusedconv::channels_last_gemm::applies, launch_three_tf32};

// {batch, groups, cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kCases[] = {
    {2, 1, 16, 32, 6, 7, 1, 1, 1, 1, 0, 0, 1, 1, true, true},     // 1x1
    {1, 1, 32, 24, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, true, true},     // 3x3
    {1, 1, 16, 40, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, true, false},    // stride 2
    {1, 1, 3, 16, 12, 11, 3, 3, 2, 2, 1, 1, 1, 1, true, true},    // a stem's 3 channels
    // Whole-chunk channels staged as runs (kVectorRuns): a 3x3 row's 24 elements in one step,
    // 5x5 at stride 2 (40 in two), 16 channels with dilated rows (48 in two); dilated columns
    // are not contiguous, so taps.
    {2, 1, 8, 32, 10, 9, 3, 3, 1, 1, 1, 1, 1, 1, true, true},
    {1, 1, 8, 16, 11, 12, 5, 5, 2, 2, 2, 2, 1, 1, true, false},
    {1, 1, 16, 24, 8, 9, 3, 3, 1, 1, 1, 1, 2, 1, true, true},
    {1, 1, 8, 16, 9, 10, 3, 3, 1, 1, 2, 2, 1, 2, true, true},
    // Taps through L1 (8 channels: 16 or 32 bytes a pixel, less than a 64-byte k step; dilated
    // columns, so no runs): two images, column stride 2, 24 output channels.
    {2, 1, 8, 24, 8, 11, 3, 3, 1, 2, 1, 2, 1, 2, true, true},
};

class ChannelsLastGemmEmulated : public ::testing::TestWithParam<Case> {};

// The weight in channels_last, as a channels_last module's is (the GEMM reads its channel chunks).
TEST_P(ChannelsLastGemmEmulated, BFloat16) {
  run_case<__nv_bfloat16>(kGemm, GetParam(), 41, 0, true);
}
TEST_P(ChannelsLastGemmEmulated, Float16) { run_case<__half>(kGemm, GetParam(), 42, 0, true); }
// One TF32 product misses this tolerance (float32's) on every case: the split is what passes it.
TEST_P(ChannelsLastGemmEmulated, Float32ThreeTf32) {
  run_case<float>(kGemmThreeTf32, GetParam(), 43, 0, true);
}

INSTANTIATE_TEST_SUITE_P(Cases, ChannelsLastGemmEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
