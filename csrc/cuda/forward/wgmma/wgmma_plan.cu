// The wgmma forward's plan: its Layout per call (tile height, pipeline depth, shared-memory
// regions) for the resident and streamed variants, and whether it applies at all.
#include "forward/wgmma/wgmma_plan.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "common/plan_memo.h"
#include "forward/families.h"
#include "forward/wgmma/traits.h"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {
namespace {

// Bytes per element of the input's storage type.
int storage_bytes(const ConvParams& p) {
  switch (p.dtype) {
    case DType::kFloat64:
      return 8;
    case DType::kFloat32:
      return 4;
    default:
      return 2;  // float16, bfloat16
  }
}

// Elements per staged raw input row: NCHW, the input's width rounded up to whole 16-byte copies;
// channels_last, the row's pixels of `raw_pixel` elements each.
int64_t raw_pitch_for(const ConvParams& p, bool channels_last, int64_t raw_pixel) {
  if (channels_last) {
    return p.in_width * raw_pixel;
  }
  const int64_t per_copy = 16 / storage_bytes(p);
  return (p.in_width + per_copy - 1) / per_copy * per_copy;
}

// Elements per raw buffer of `staged_rows` rows of `channels` channels (channels_last: pixels of
// raw_pixel elements), rounded up to 16 bytes: the second buffer, and what follows, stay
// aligned for 16-byte copies and loads.
int64_t raw_words_for(const ConvParams& p, const Layout& layout, int64_t channels,
                      int64_t staged_rows) {
  const int64_t per_16 = 16 / storage_bytes(p);
  const int64_t words = (layout.channels_last ? 1 : channels) * staged_rows * layout.raw_pitch;
  return (words + per_16 - 1) / per_16 * per_16;
}

// Shapes, tile and pipeline depth for one call; false where the kernel does not apply.
bool make_resident_layout(const ConvParams& p, bool three_tf32, bool channels_last,
                          const DeviceLimits& limits, Layout& layout) {
  layout = Layout{};
  layout.channels_last = channels_last;
  layout.parts = three_tf32 ? 2 : 1;
  layout.out_blocks = static_cast<int>((p.out_channels + kBlockChannels - 1) / kBlockChannels);
  const int chunks = static_cast<int>((p.in_channels + 7) / 8);
  layout.chunk_channels = 8 * chunks;
  layout.chunks = 1;
  layout.channel_groups = 2 * chunks;
  layout.k_steps = static_cast<int>(chunks * p.kernel_h * p.kernel_w);
  if (layout.k_steps > kMaxKSteps || p.batch * p.out_height * p.out_width == 0) {
    return false;
  }
  const int padded_width = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.row_pitch = (padded_width + 1) & ~1;
  const int element_bytes = storage_bytes(p);
  layout.raw_pixel = static_cast<int>(p.in_channels);
  const int64_t raw_pitch = raw_pitch_for(p, channels_last, p.in_channels);
  if (raw_pitch >= (int64_t{1} << 21)) {
    return false;  // the producer's float-reciprocal quotients are exact below 2^21
  }
  layout.raw_pitch = static_cast<int>(raw_pitch);
  layout.inverse_row_pitch = 1.0f / static_cast<float>(layout.row_pitch);
  const int64_t weight_bytes = int64_t{layout.parts} * layout.out_blocks * layout.k_steps *
                                   kStepBytes +
                               layout.out_blocks * kBlockChannels * 4;  // and the bias
  // Pick the item height: the fewest MMA units on the busiest SM (items are dealt round robin
  // to one CTA per SM), one unit's worth of overhead per item and one item's worth of pipeline
  // fill, within shared memory; more stages where they fit.
  int64_t best_cost = -1;
  for (int tile_rows = 1; tile_rows <= p.out_height && tile_rows <= 32; ++tile_rows) {
    const int units = static_cast<int>(((tile_rows - 1) * int64_t{layout.row_pitch} +
                                        p.out_width + kUnitPositions - 1) / kUnitPositions);
    if (units > kMaxPositionUnits) {
      break;
    }
    const int staged_rows = static_cast<int>(tile_rows + p.kernel_h - 1);
    const int64_t positions = (int64_t{units} * kUnitPositions +
                               (p.kernel_h - 1) * layout.row_pitch + p.kernel_w - 1 + 7) & ~7;
    const int64_t stage_bytes = int64_t{layout.parts} * layout.channel_groups * positions * 16;
    const int64_t raw_words = raw_words_for(p, layout, p.in_channels, staged_rows);
    if (raw_words >= (int64_t{1} << 21) || positions >= (int64_t{1} << 21)) {
      break;  // the producer's float-reciprocal quotients are exact below 2^21
    }
    const int64_t raw_bytes = 2 * raw_words * element_bytes;
    for (int stages = kMaxStages; stages >= 2; --stages) {
      const int64_t shared_bytes =
          kHeaderBytes + weight_bytes + stages * stage_bytes + raw_bytes +
          epilogue_bytes(kResidentConsumers);
      if (shared_bytes > limits.max_shared_bytes) {
        continue;
      }
      const int64_t row_blocks = (p.out_height + tile_rows - 1) / tile_rows;
      const int64_t items = p.batch * row_blocks;
      if (items >= (int64_t{1} << 31)) {
        break;  // the kernels' 32-bit item quotients
      }
      const int64_t grid = items < limits.sm_count ? items : limits.sm_count;
      const int64_t rounds = (items + grid - 1) / grid;
      // rounds + 1: the first item's load and split are not overlapped with anything.
      const int64_t cost = (rounds + 1) * (int64_t{units} * layout.out_blocks + 1);
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        layout.tile_rows = tile_rows;
        layout.row_blocks = static_cast<int>(row_blocks);
        layout.row_block_divisor = FastDivisor::make(static_cast<uint32_t>(row_blocks));
        layout.staged_rows = staged_rows;
        layout.plane_positions = static_cast<int>(positions);
        layout.stages = stages;
        layout.plane_bytes = static_cast<int>(positions * 16);
        layout.stage_bytes = static_cast<int>(stage_bytes);
        layout.weight_offset = kHeaderBytes;
        layout.bias_offset = static_cast<int>(
            kHeaderBytes + weight_bytes - layout.out_blocks * kBlockChannels * 4);
        layout.stage_offset = static_cast<int>(kHeaderBytes + weight_bytes);
        layout.raw_offset = static_cast<int>(kHeaderBytes + weight_bytes + stages * stage_bytes);
        layout.epilogue_offset = static_cast<int>(layout.raw_offset + raw_bytes);
        layout.raw_words = static_cast<int>(raw_words);
        layout.shared_bytes = static_cast<int>(shared_bytes);
        layout.items = items;
        layout.grid = static_cast<int>(grid);
      }
      break;
    }
  }
  return best_cost >= 0;
}

// The streamed kernel's layout: items of kStreamedConsumers units (one per consumer), as many
// output rows as their positions hold; input channels per stage for about 8 k steps (9 for
// 3x3 kernels, 64 channels for 1x1), fewer where 2 stages would not fit shared memory, then
// evened out over the chunks. (8 is a choice, not a measured optimum.)
bool make_streamed_layout(const ConvParams& p, bool three_tf32, bool channels_last,
                          const DeviceLimits& limits, Layout& layout) {
  layout = Layout{};
  layout.streamed = true;
  layout.channels_last = channels_last;
  layout.parts = three_tf32 ? 2 : 1;
  layout.out_blocks = static_cast<int>((p.out_channels + kBlockChannels - 1) / kBlockChannels);
  if (layout.out_blocks > kStreamedConsumers || p.batch * p.out_height * p.out_width == 0) {
    return false;
  }
  const int position_units = kStreamedConsumers / layout.out_blocks;
  if (p.out_width > position_units * kUnitPositions) {
    return false;  // an output row longer than an item's positions
  }
  const int padded_width = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.row_pitch = (padded_width + 1) & ~1;
  const int element_bytes = storage_bytes(p);
  layout.inverse_row_pitch = 1.0f / static_cast<float>(layout.row_pitch);
  const int64_t fitting_rows =
      (position_units * kUnitPositions - p.out_width) / layout.row_pitch + 1;
  layout.tile_rows = static_cast<int>(fitting_rows < p.out_height ? fitting_rows : p.out_height);
  layout.staged_rows = static_cast<int>(layout.tile_rows + p.kernel_h - 1);
  const int64_t positions = (int64_t{position_units} * kUnitPositions +
                             (p.kernel_h - 1) * layout.row_pitch + p.kernel_w - 1 + 7) & ~7;
  if (positions >= (int64_t{1} << 21)) {
    return false;  // the producer's float-reciprocal quotients are exact below 2^21
  }
  layout.plane_positions = static_cast<int>(positions);
  layout.plane_bytes = static_cast<int>(positions * 16);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t eighths_total = (p.in_channels + 7) / 8;
  int64_t eighths = (8 + taps - 1) / taps;
  eighths = eighths < eighths_total ? eighths : eighths_total;
  const int64_t bias_bytes = layout.out_blocks * kBlockChannels * 4;
  for (; eighths >= 1; --eighths) {
    // Even out the chunks: 16 eighths that fit 5 per stage run as 4 chunks of 4.
    const int64_t chunks = (eighths_total + eighths - 1) / eighths;
    const int64_t even = (eighths_total + chunks - 1) / chunks;
    const int64_t k_steps = even * taps;
    if ((k_steps + 1) * 4 > kSlotTableOffset - kTapTableOffset) {
      continue;  // the step table in the header
    }
    const int64_t a_stage_bytes = int64_t{layout.parts} * layout.out_blocks * k_steps * kStepBytes;
    const int64_t stage_bytes = a_stage_bytes + int64_t{layout.parts} * 2 * even * positions * 16;
    // channels_last: one chunk of every channel keeps the rows contiguous (copy_raw_pixels).
    const int64_t raw_pixel = chunks == 1 ? p.in_channels : 8 * even;
    const int64_t raw_pitch = raw_pitch_for(p, channels_last, raw_pixel);
    if (raw_pitch >= (int64_t{1} << 21)) {
      continue;  // the producer's float-reciprocal quotients are exact below 2^21
    }
    layout.raw_pitch = static_cast<int>(raw_pitch);
    const int64_t raw_words = raw_words_for(p, layout, 8 * even, layout.staged_rows);
    if (raw_words >= (int64_t{1} << 21) ||
        chunks * a_stage_bytes >= (int64_t{1} << 31)) {  // the prep kernel's 32-bit indices
      continue;
    }
    for (int stages = kMaxStages; stages >= 2; --stages) {
      const int64_t shared_bytes = kHeaderBytes + bias_bytes + stages * stage_bytes +
                                   2 * raw_words * element_bytes +
                                   epilogue_bytes(kStreamedConsumers);
      if (shared_bytes > limits.max_shared_bytes) {
        continue;
      }
      layout.chunk_channels = static_cast<int>(8 * even);
      layout.raw_pixel = static_cast<int>(raw_pixel);
      layout.chunks = static_cast<int>(chunks);
      layout.channel_groups = static_cast<int>(2 * even);
      layout.k_steps = static_cast<int>(k_steps);
      layout.a_stage_bytes = static_cast<int>(a_stage_bytes);
      layout.stages = stages;
      layout.stage_bytes = static_cast<int>(stage_bytes);
      layout.raw_words = static_cast<int>(raw_words);
      layout.bias_offset = kHeaderBytes;
      layout.stage_offset = static_cast<int>(kHeaderBytes + bias_bytes);
      layout.raw_offset = static_cast<int>(layout.stage_offset + stages * stage_bytes);
      layout.epilogue_offset =
          static_cast<int>(layout.raw_offset + 2 * raw_words * element_bytes);
      layout.shared_bytes = static_cast<int>(shared_bytes);
      layout.row_blocks =
          static_cast<int>((p.out_height + layout.tile_rows - 1) / layout.tile_rows);
      layout.row_block_divisor = FastDivisor::make(static_cast<uint32_t>(layout.row_blocks));
      layout.items = p.batch * layout.row_blocks;
      layout.grid = static_cast<int>(layout.items < limits.sm_count ? layout.items
                                                                     : limits.sm_count);
      return layout.items < (int64_t{1} << 31);  // the kernels' 32-bit item quotients
    }
  }
  return false;
}

}  // namespace

// TF32 mode (float16 and bfloat16 too) plans its own layout: its smaller stages fit taller
// items, measured faster than reusing the 3xTF32 geometry (benchmarks/NOTES.md).
bool choose_layout(const ConvParams& p, bool three_tf32, const DeviceLimits& limits,
                   Layout& layout) {
  thread_local PlanMemo<Layout> memo;
  const bool channels_last = !unit_stride_dense_nchw(p);  // forward_applies: one or the other
  const int64_t variant =
      (three_tf32 ? 1 : 0) + 2 * static_cast<int64_t>(p.dtype) + (channels_last ? 16 : 0);
  return memo.get(plan_key(p, limits, variant), layout, [&](Layout& chosen) {
    return make_resident_layout(p, three_tf32, channels_last, limits, chosen) ||
           make_streamed_layout(p, three_tf32, channels_last, limits, chosen);
  });
}

bool three_tf32_for(const ConvParams& p, bool allow_tf32) {
  return p.dtype == DType::kFloat32 && !allow_tf32;
}

cudaError_t forward_applies(const ConvParams& params, bool allow_tf32, bool& applies,
                            int64_t& workspace_bytes) {
  applies = false;
  workspace_bytes = 0;
#if defined(FUSEDCONV_HAS_SM90A)
  const bool storage_supported = params.dtype == DType::kFloat32 ||
                                 params.dtype == DType::kFloat16 ||
                                 params.dtype == DType::kBFloat16;
  if (!storage_supported ||
      !(unit_stride_dense_nchw(params) || unit_stride_dense_channels_last(params))) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  if (limits.cc_major != 9 || limits.cc_minor != 0) {
    return cudaSuccess;
  }
  Layout layout{};
  applies = choose_layout(params, three_tf32_for(params, allow_tf32), limits, layout);
  if (applies && layout.streamed) {
    workspace_bytes = int64_t{layout.chunks} * layout.a_stage_bytes;
  }
#else
  (void)params;
  (void)allow_tf32;
#endif
  return cudaSuccess;
}

}  // namespace wgmma
}  // namespace fusedconv
