// The fused backward's shared parts: CTA shape, the per-call layouts of its two GEMMs and the
// plan that holds them (backward_plan.cu), and the launchers of dgrad.cu and wgrad.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/device_limits.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace backward {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxCtasPerSm = 2;
constexpr int kMaxChunkChannels = 8;
struct DgradLayout {
  int channel_tiles;      // kNTiles: n8 tiles of input channels per CTA
  int tile_pixels;        // kWarps * 16 * dgrad_m_tiles<kNTiles>()
  int channel_blocks;     // gridDim.y
  int chunk_channels;     // output channels staged at a time: min(out_channels, 8)
  int chunks;
  int chunk_k_steps;      // ceil(taps * chunk_channels / 8)
  int tile_rows;          // g rows staged per tile: rows the tile spans + kernel_h - 1
  int tile_cols;          // in_width + kernel_w - 1
  int plane_pitch;        // = 8 (mod 32)
  int tiles_per_image;
  int64_t fragment_words;  // words of split weights (uint4 {big0, big1, small0, small1} per lane)
  int64_t shared_bytes;
};

struct WgradLayout {
  int channel_blocks;     // gridDim.y: blocks of 64 output channels
  int warps_m;            // warps along the channels: 1, 2 or 4 (ceil(out_channels / 16))
  int chunk_channels;     // input channels staged at a time: min(in_channels, 8)
  int chunks;
  int n_tiles;            // ceil(taps * chunk_channels / 8): (tap, channel) columns of a chunk
  int n_groups;           // ceil(n_tiles / 9), 9 n8 tiles per CTA: gridDim.z = chunks * n_groups
  int tile_rows;          // x rows staged per tile: rows the tile spans + kernel_h - 1
  int tile_cols;          // out_width + kernel_w - 1
  int plane_pitch;        // = 4 (mod 32)
  int tiles_per_image;
  int64_t weight_size;    // out_channels * in_channels * taps
  int64_t partial_slots;  // gridDim.x * (8 / warps_m): one partial per (CTA column, warp group)
  int grid_x;
  int64_t shared_bytes;
};

struct FusedPlan {
  bool use = false;
  DgradLayout dgrad{};
  WgradLayout wgrad{};
  DeviceLimits limits{};
  int64_t dgrad_workspace_bytes = 0;  // split weights, at the start of the workspace
  int64_t wgrad_workspace_bytes = 0;  // partials, after them (16-byte aligned)
};

// Layouts of one call (dgrad.cu, wgrad.cu).
DgradLayout make_dgrad_layout(const ConvParams& p);
WgradLayout make_wgrad_layout(const ConvParams& p, const DeviceLimits& limits);

// grad_input (bp.grad_input) and grad_weight / grad_bias (bp.grad_weight, bp.grad_bias) of a
// planned call; bp.workspace holds that launcher's part of the plan's workspace.
cudaError_t launch_dgrad(const ConvBackwardParams& bp, const FusedPlan& plan, bool three_tf32,
                         cudaStream_t stream);
cudaError_t launch_wgrad(const ConvBackwardParams& bp, const FusedPlan& plan, bool three_tf32,
                         cudaStream_t stream);

}  // namespace backward
}  // namespace fusedconv
