// Host launch of the wgmma forward: the weight-split prep kernel (streamed variant) and the
// kernel instantiation for the call's storage type, precision mode and layout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/device_limits.h"
#include "forward/families.h"
#include "forward/wgmma/kernels.cuh"
#include "forward/wgmma/wgmma_plan.h"
#include "forward/wgmma/traits.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {
namespace {

constexpr int kPrepThreads = 256;

template <bool kThreeTf32, bool kChannelsLast, typename Storage>
cudaError_t launch_in_layout(const ConvParams& p, const Layout& layout,
                             const DeviceLimits& limits, cudaStream_t stream) {
  if (!layout.streamed) {
    constexpr auto kernel = conv_hardswish_relu_wgmma_kernel<kThreeTf32, kChannelsLast, Storage>;
    const cudaError_t status = opt_in_shared_memory<kernel>(limits);
    if (status != cudaSuccess) {
      return status;
    }
    kernel<<<layout.grid, threads_for(kResidentConsumers), layout.shared_bytes, stream>>>(p,
                                                                                     layout);
    return cudaGetLastError();
  }
  if (p.workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t words = int64_t{layout.chunks} * layout.out_blocks * layout.k_steps * 512;
  split_streamed_weights_kernel<kThreeTf32, Storage>
      <<<prep_blocks(words, kPrepThreads), kPrepThreads, 0, stream>>>(p, layout);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    return status;
  }
  constexpr auto kernel =
      conv_hardswish_relu_wgmma_streamed_kernel<kThreeTf32, kChannelsLast, Storage>;
  status = opt_in_shared_memory<kernel>(limits);
  if (status != cudaSuccess) {
    return status;
  }
  kernel<<<layout.grid, threads_for(kStreamedConsumers), layout.shared_bytes, stream>>>(p,
                                                                                     layout);
  return cudaGetLastError();
}

template <bool kThreeTf32, typename Storage>
cudaError_t launch_with(const ConvParams& p, const Layout& layout, const DeviceLimits& limits,
                        cudaStream_t stream) {
  return layout.channels_last
             ? launch_in_layout<kThreeTf32, true, Storage>(p, layout, limits, stream)
             : launch_in_layout<kThreeTf32, false, Storage>(p, layout, limits, stream);
}

}  // namespace

cudaError_t launch(const ConvParams& params, bool allow_tf32, cudaStream_t stream) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  Layout layout{};
  const bool three_tf32 = three_tf32_for(params, allow_tf32);
  if (!choose_layout(params, three_tf32, limits, layout)) {
    return cudaErrorInvalidConfiguration;
  }
  switch (params.dtype) {
    case DType::kFloat32:
      return three_tf32 ? launch_with<true, float>(params, layout, limits, stream)
                        : launch_with<false, float>(params, layout, limits, stream);
    case DType::kFloat16:
      return launch_with<false, __half>(params, layout, limits, stream);
    case DType::kBFloat16:
      return launch_with<false, __nv_bfloat16>(params, layout, limits, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace wgmma
}  // namespace fusedconv
