// Compile-time constants of the Hopper wgmma forward, its per-call Layout (computed by
// wgmma_plan.cu, read by the kernels) and the item schedule both variants share. The design is in
// kernels.cuh.
#pragma once

#include <cstdint>

#include "fusedconv/fast_divisor.h"
#include "fusedconv/host_device.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

constexpr int kGroupThreads = 128;  // one warpgroup
// Consumer warpgroups per CTA, beside the producer's one. The resident kernel: 3, so that two
// other groups' MMA chains run while one stores its epilogue and issues its next chain (its
// consumers fit the 128 registers of 512 threads). The streamed kernel: 2, whose consumers hold
// accumulators and totals (166 registers).
constexpr int kResidentConsumers = 3;
constexpr int kStreamedConsumers = 2;
__host__ __device__ constexpr int threads_for(int consumers) {
  return (1 + consumers) * kGroupThreads;
}
constexpr int kUnitPositions = 128;  // wgmma N
constexpr int kBlockChannels = 64;   // wgmma M
constexpr int kStepBytes = kBlockChannels * 8 * 4;  // one k8 step of A: 2 KB
constexpr int kMaxStages = 3;
// Per consumer warp, 8 channels x a unit's (at most 128) outputs; 8 words of padding move each
// row 8 banks on, so the fragment writes (8 rows x 4 pairs per instruction) don't conflict, and
// hold the 4 spare pairs of dropped columns (write_slot_table).
constexpr int kEpilogueRows = 8;
constexpr int kEpiloguePitch = kUnitPositions + 8;
constexpr int epilogue_bytes(int consumers) {
  return consumers * 4 * kEpilogueRows * kEpiloguePitch * 4;
}
// Channels_last: a consumer group stages half a unit (64 positions x 64 channels, a position's
// channels contiguous) in its four warps' buffers taken together; 4 words of padding per
// position put each fragment write (8 channels x 4 position pairs) in 32 distinct banks.
constexpr int kChannelsLastPitch = kBlockChannels + 4;
static_assert(kUnitPositions / 2 * kChannelsLastPitch <= 4 * kEpilogueRows * kEpiloguePitch,
              "a channels_last half unit fits a consumer group's epilogue buffers");
// 3xTF32 sums 3 MMAs per k step in one accumulator, and the tensor core's accumulation
// truncates (1.05e-5 relative error after 375 MMAs, measured on the mma.sync kernel). 32 steps
// (96 MMAs; v0.1 has 9) keeps the fast path well inside 1e-5.
constexpr int kMaxKSteps = 32;
// Shared memory header (smem_layout.cuh): full[kMaxStages] and empty[kMaxStages] mbarriers, then
// the per-step B offsets (at kTapTableOffset), then the epilogue's slot table (at
// kSlotTableOffset); the variant's own regions start at kHeaderBytes.
constexpr int kTapTableOffset = 2 * kMaxStages * 8;
constexpr int kSlotTableOffset = 512;
constexpr int kMaxPositionUnits = 16;  // 128-position units per item, all output channel blocks
constexpr int kHeaderBytes = kSlotTableOffset + kMaxPositionUnits * 64;

// One call's geometry. Two variants share the staging, the MMAs and the epilogue (kernels.cuh):
//   resident: every input channel in one stage and every split weight in shared memory for the
//     whole kernel; the consumers take an item's units round robin. Up to kMaxKSteps k steps.
//   streamed: a stage holds one chunk of input channels and that chunk's split weights (a prep
//     kernel writes them once per call to a workspace in shared-memory order; the producer
//     fetches them with one bulk copy per stage); an item is at most 2 units, one per consumer,
//     which keeps its accumulators over the item's chunks and adds each chunk's MMA sum into
//     float32 totals (so the truncating tensor-core accumulation never runs more than one
//     chunk's k steps). Any input channel count.
struct Layout {
  bool streamed;        // the variant
  bool channels_last;   // dense channels_last input and output (else dense NCHW)
  int parts;            // operand parts: 2 (big, small: 3xTF32) or 1 (TF32)
  int out_blocks;       // ceil(out_channels / 64)
  int chunk_channels;   // input channels per stage: a multiple of 8 (all of them if resident)
  int chunks;           // stages per item: ceil(in_channels / chunk_channels)
  int channel_groups;   // planes of 4 input channels per part and stage: chunk_channels / 4
  int k_steps;          // k steps per stage: chunk_channels / 8 * taps, step = eighth * taps + tap
  int a_stage_bytes;    // streamed: a stage's split weights (every part and channel block)
  int tile_rows;        // output rows per item
  int row_blocks;       // ceil(out_height / tile_rows)
  FastDivisor row_block_divisor;  // row_blocks, for item -> (image, row block); items < 2^31
  int staged_rows;      // tile_rows + kernel_h - 1
  int row_pitch;        // positions per staged row: the padded input width, rounded up to even
  int plane_positions;  // positions per plane, a multiple of 8, past every unit's last tap
  int raw_pitch;        // elements per raw row: NCHW, in_width rounded up to 16 bytes (cp.async);
                        // channels_last, in_width * raw_pixel
  int raw_pixel;        // channels_last: elements per raw pixel (in_channels, or a chunk's)
  int raw_words;        // elements per raw buffer (two of them), of the input's storage type,
                        // a whole number of 16 bytes
  int stages;
  int plane_bytes;      // plane_positions * 16
  int stage_bytes;      // parts * channel_groups * plane_bytes
  int weight_offset;    // byte offsets in dynamic shared memory
  int bias_offset;
  int stage_offset;
  int raw_offset;
  int epilogue_offset;
  int shared_bytes;
  int grid;
  float inverse_row_pitch;
  int64_t items;        // batch * row_blocks
};

#ifdef __CUDACC__
// The image of `item` and its first output row. 32-bit quotients by a precomputed divisor: an
// int64 division is a ~70-instruction subroutine call, made per item by the producer (twice)
// and by every consumer.
__device__ __forceinline__ int item_image(const Layout& layout, int64_t item) {
  return static_cast<int>(layout.row_block_divisor.quotient(static_cast<uint32_t>(item)));
}

__device__ __forceinline__ int item_first_out_row(const Layout& layout, int64_t item,
                                                  int image) {
  return (static_cast<int>(item) - image * layout.row_blocks) * layout.tile_rows;
}

// Output rows of an item that exist: tile_rows, fewer in an image's last row block.
__device__ __forceinline__ int item_rows(const ConvParams& p, const Layout& layout,
                                         int first_out_row) {
  const int left = static_cast<int>(p.out_height) - first_out_row;
  return left < layout.tile_rows ? left : layout.tile_rows;
}
#endif  // __CUDACC__

}  // namespace wgmma
}  // namespace fusedconv
