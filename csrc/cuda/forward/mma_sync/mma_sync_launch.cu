// Host side of the mma.sync forward: its Layout per call (channel tiles, input-channel chunk,
// staged tile, shared-memory use), the weight-split prep launch and the kernel instantiation.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "common/plan_memo.h"
#include "forward/families.h"
#include "forward/mma_sync/kernels.cuh"
#include "forward/mma_sync/layout.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace mma_sync {
namespace {

int channel_tiles_for(int64_t out_channels) {
  return out_channels <= 16 ? 1 : (out_channels <= 32 ? 2 : 4);
}

Layout make_layout_with_chunk(const ConvParams& p, int chunk_channels) {
  Layout layout{};
  layout.channel_tiles = channel_tiles_for(p.out_channels);
  layout.channel_blocks = static_cast<int>((p.out_channels + layout.channel_tiles * 16 - 1) /
                                           (layout.channel_tiles * 16));
  layout.chunk_channels =
      static_cast<int>(p.in_channels < chunk_channels ? p.in_channels : chunk_channels);
  layout.chunks =
      static_cast<int>((p.in_channels + layout.chunk_channels - 1) / layout.chunk_channels);
  layout.chunk_k_steps =
      static_cast<int>((p.kernel_h * p.kernel_w * layout.chunk_channels + 7) / 8);
  const int64_t tile_rows = (spanned_rows(p.out_width, kTilePixels) - 1) * p.stride_h +
                            (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t tile_cols = (p.out_width - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  if (tile_rows * tile_cols > (int64_t{1} << 24)) {
    layout.shared_bytes = INT64_MAX;  // far beyond any shared memory; keeps the ints below safe
    return layout;
  }
  layout.tile_rows = static_cast<int>(tile_rows);
  layout.tile_cols = static_cast<int>(tile_cols);
  layout.plane_pitch = padded_pitch(int64_t{layout.tile_rows} * layout.tile_cols, 8);
  layout.tiles_per_image =
      static_cast<int>((p.out_height * p.out_width + kTilePixels - 1) / kTilePixels);
  layout.fragment_words = int64_t{layout.channel_blocks} * layout.chunks * layout.chunk_k_steps *
                          layout.channel_tiles * 32 * 4;
  layout.shared_bytes = int64_t{layout.chunk_k_steps} * 8 * 4 +
                        int64_t{2} * (layout.chunk_channels + 1) * layout.plane_pitch * 4;
  layout.chunk_totals = layout.chunks > 1 &&
                        int64_t{layout.chunks} * layout.chunk_k_steps > kMaxKStepsWithoutTotals;
  if (layout.chunk_totals) {
    layout.shared_bytes += int64_t{kThreads} * layout.channel_tiles * 16 * 4;
  }
  const int64_t shared_weight_bytes = 2 * block_fragment_words(layout) * 4;
  layout.shared_weights =
      layout.channel_tiles == 1 && shared_weight_bytes <= kMaxSharedWeightBytes &&
      layout.shared_bytes + shared_weight_bytes <= kMaxSharedBytesWithWeights;
  if (layout.shared_weights) {
    layout.shared_bytes += shared_weight_bytes;
  }
  return layout;
}

Layout make_layout(const ConvParams& p, const DeviceLimits& limits) {
  Layout layout =
      make_layout_with_chunk(p, preferred_chunk_channels(p.kernel_h * p.kernel_w));
  while (layout.chunk_channels > 8 && ctas_per_sm(limits, layout.shared_bytes, 2) < 2) {
    // Half the chunk, rounded up to whole k8 steps of channels.
    layout = make_layout_with_chunk(p, (layout.chunk_channels / 2 + 7) / 8 * 8);
  }
  return layout;
}

// Whether the kernel takes `params`: its shape rule holds and one chunk's staged tile fits the
// device's shared memory.
cudaError_t choose_layout(const ConvParams& params, bool& use, Layout& layout,
                              DeviceLimits& limits) {
  use = false;
  if (!dense_nchw(params) || params.dtype == DType::kFloat64) {
    return cudaSuccess;
  }
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  thread_local PlanMemo<Layout> memo;
  use = memo.get(plan_key(params, limits, 0), layout, [&](Layout& planned) {
    planned = make_layout(params, limits);
    // fragment_words < 2^31: the weight split's 32-bit index math (and a workspace below 16 GB).
    return planned.shared_bytes <= limits.max_shared_bytes &&
           planned.fragment_words < (int64_t{1} << 31);
  });
  return cudaSuccess;
}

template <typename Storage, int kMTiles, bool kThreeTf32, bool kSharedWeights>
cudaError_t launch_with(const ConvParams& p, const Layout& layout,
                        const DeviceLimits& limits, cudaStream_t stream) {
  constexpr auto kernel =
      conv_hardswish_relu_mma_sync_kernel<Storage, kMTiles, kThreeTf32, kSharedWeights>;
  cudaError_t status = opt_in_shared_memory<kernel>(limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (!kSharedWeights) {
    if (p.workspace == nullptr) {
      return cudaErrorInvalidValue;
    }
    split_weights_kernel<Storage, kMTiles, kThreeTf32>
        <<<prep_blocks(layout.fragment_words, kPrepThreads), kPrepThreads, 0, stream>>>(p,
                                                                                      layout);
    status = cudaGetLastError();
    if (status != cudaSuccess) {
      return status;
    }
  }
  // Persistent grid: as many CTAs as fit on every SM at once, shared among the channel blocks,
  // never more CTAs than tiles.
  const int64_t total_tiles = p.batch * layout.tiles_per_image;
  const int64_t per_sm = ctas_per_sm(limits, layout.shared_bytes, max_ctas_per_sm<kMTiles>());
  int64_t blocks = (limits.sm_count * per_sm + layout.channel_blocks - 1) / layout.channel_blocks;
  if (blocks > total_tiles) {
    blocks = total_tiles;
  }
  const dim3 grid(static_cast<unsigned int>(blocks),
                  static_cast<unsigned int>(layout.channel_blocks));
  kernel<<<grid, kThreads, static_cast<size_t>(layout.shared_bytes), stream>>>(p, layout);
  return cudaGetLastError();
}

// float32 in 3xTF32 or TF32; float16 / bfloat16 in one TF32 product, exact for them.
template <typename Storage, int kMTiles, bool kSharedWeights>
cudaError_t launch_with_precision(const ConvParams& params, const Layout& layout,
                                  const DeviceLimits& limits, bool three_tf32,
                                  cudaStream_t stream) {
  if (std::is_same<Storage, float>::value && three_tf32) {
    return launch_with<float, kMTiles, true, kSharedWeights>(params, layout, limits, stream);
  }
  return launch_with<Storage, kMTiles, false, kSharedWeights>(params, layout, limits, stream);
}

template <typename Storage>
cudaError_t launch_with_tiles(const ConvParams& params, const Layout& layout,
                              const DeviceLimits& limits, bool three_tf32, cudaStream_t stream) {
  switch (layout.channel_tiles) {
    case 1:
      return layout.shared_weights
                 ? launch_with_precision<Storage, 1, true>(params, layout, limits, three_tf32,
                                                           stream)
                 : launch_with_precision<Storage, 1, false>(params, layout, limits, three_tf32,
                                                            stream);
    case 2:
      return launch_with_precision<Storage, 2, false>(params, layout, limits, three_tf32, stream);
    default:
      return launch_with_precision<Storage, 4, false>(params, layout, limits, three_tf32, stream);
  }
}

}  // namespace

cudaError_t forward_applies(const ConvParams& params, bool& applies, int64_t& workspace_bytes) {
  workspace_bytes = 0;
  Layout layout{};
  DeviceLimits limits{};
  const cudaError_t status = choose_layout(params, applies, layout, limits);
  if (status == cudaSuccess && applies && !layout.shared_weights) {
    workspace_bytes = 2 * layout.fragment_words * 4;  // big parts, then small parts
  }
  return status;
}

cudaError_t launch(const ConvParams& params, bool allow_tf32, cudaStream_t stream) {
  bool applies = false;
  Layout layout{};
  DeviceLimits limits{};
  const cudaError_t status = choose_layout(params, applies, layout, limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (!applies) {
    return cudaErrorInvalidConfiguration;
  }
  switch (params.dtype) {
    case DType::kFloat32:
      return launch_with_tiles<float>(params, layout, limits, !allow_tf32, stream);
    case DType::kFloat16:
      return launch_with_tiles<__half>(params, layout, limits, false, stream);
    case DType::kBFloat16:
      return launch_with_tiles<__nv_bfloat16>(params, layout, limits, false, stream);
    default:
      return cudaErrorInvalidConfiguration;  // choose_layout refuses float64
  }
}

}  // namespace mma_sync
}  // namespace fusedconv
