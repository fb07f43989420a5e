// The mma.sync forward's own source (csrc/cuda/forward/mma_sync/) run on the host through
// tests/emulation (its cp.async copies queued until their waits, its m16n8k8 TF32 MMAs by the
// PTX fragment layouts) against a float64 reference: 3xTF32, several channel chunks, strides,
// padding and dilation, three storage types.
#include <vector>

#include "forward/families.h"
#include "kernel_check.h"

namespace emulation {
namespace {

bool mma_sync_applies(const ConvParams& p) {
  bool applies = false;
  int64_t workspace_bytes = 0;
  return fusedconv::mma_sync::forward_applies(p, applies, workspace_bytes) == cudaSuccess &&
         applies;
}

// 3xTF32 (float32 accuracy), with the split weights' workspace where the plan asks for one.
cudaError_t mma_sync_launch(const ConvParams& params, cudaStream_t stream) {
  bool applies = false;
  int64_t workspace_bytes = 0;
  cudaError_t status = fusedconv::mma_sync::forward_applies(params, applies, workspace_bytes);
  if (status != cudaSuccess) {
    return status;
  }
  std::vector<float4> workspace(static_cast<size_t>(workspace_bytes) / sizeof(float4) + 1);
  ConvParams p = params;
  p.workspace = workspace_bytes > 0 ? workspace.data() : nullptr;
  return fusedconv::mma_sync::launch(p, false, stream);
}

const Family kMmaSync{mma_sync_applies, mma_sync_launch};

// {batch, groups, cin_g, cout_g, H, W, kh, kw, sh, sw, ph, pw, dh, dw, channels_last, bias}
const Case kCases[] = {
    {1, 1, 8, 16, 10, 12, 3, 3, 1, 1, 1, 1, 1, 1, false, true},
    {2, 1, 3, 16, 9, 11, 3, 3, 1, 1, 0, 0, 1, 1, false, true},     // 3 channels (stems)
    {1, 1, 8, 24, 12, 10, 5, 5, 2, 2, 2, 2, 1, 1, false, false},   // stride 2
    {1, 1, 16, 16, 9, 9, 3, 3, 1, 1, 2, 2, 2, 2, false, true},     // dilation
    {1, 1, 40, 16, 6, 7, 3, 3, 1, 1, 1, 1, 1, 1, false, true},     // several channel chunks
};

class MmaSyncEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(MmaSyncEmulated, Float32) { run_case<float>(kMmaSync, GetParam(), 31); }
TEST_P(MmaSyncEmulated, BFloat16) { run_case<__nv_bfloat16>(kMmaSync, GetParam(), 32); }

INSTANTIATE_TEST_SUITE_P(Cases, MmaSyncEmulated, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return name(info.param);
                         });

}  // namespace
}  // namespace emulation
