// Compile-time constants and the per-call Layout of the mma.sync forward (kernels.cuh has the
// design; mma_sync_launch.cu computes the Layout).
#pragma once

#include <cstdint>

namespace fusedconv {
namespace mma_sync {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kPixelsPerWarp = 32;  // four n8 tiles
constexpr int kTilePixels = kWarps * kPixelsPerWarp;
// Input channels staged per chunk: 8 for kernels of 5 taps or more (v0.1: 3x3 x 8 channels, one
// tap per k8 step), more for small kernels, whose chunk of 8 channels is only one or two k8 steps
// of MMAs behind a whole stage-split-synchronise round: 1x1 with 128 input channels measured
// 0.46 ms in 16 such rounds per tile (eager: 0.27 ms). Halved while two CTAs would not fit.
inline int preferred_chunk_channels(int64_t taps) {
  return taps >= 5 ? 8 : (taps >= 3 ? 16 : (taps == 2 ? 32 : 64));
}
// Chunk totals (float32 sums of each chunk's MMA results, see the kernel) only past this many k8
// steps in all: up to 24 steps (72 MMAs per accumulator in 3xTF32; v0.1 has 27 at 7e-7 error)
// the tensor core's truncating accumulation stays far below the 1e-5 bound, and the totals' 64 KB
// of shared memory would halve the CTAs per SM of the 1x1 / 128-channel case.
constexpr int kMaxKStepsWithoutTotals = 24;
// CTAs of 8 warps per SM: two (registers capped at 128 per thread) with 32 or 64 channels per
// CTA; four (64 registers) with 16, whose accumulators are a quarter of the size, so small
// problems like KernelBench's v0 (512 tiles) run every tile at once instead of in two waves.
template <int kMTiles>
constexpr int max_ctas_per_sm() {
  return kMTiles == 1 ? 4 : 2;
}
constexpr int kPrepThreads = 256;

// Geometry of one launch, computed on the host.
struct Layout {
  int channel_tiles;     // kMTiles: 16-channel m16 tiles per CTA
  int channel_blocks;    // ceil(out_channels / (16 * channel_tiles)): gridDim.y
  int chunk_channels;    // input channels staged at a time (preferred_chunk_channels)
  int chunks;            // ceil(in_channels / chunk_channels)
  int chunk_k_steps;     // ceil(taps * chunk_channels / 8)
  int tile_rows;         // input rows staged per pixel tile: (output rows it spans - 1) *
                         // stride_h + (kernel_h - 1) * dilation_h + 1
  int tile_cols;         // (out_width - 1) * stride_w + (kernel_w - 1) * dilation_w + 1: the
                         // padded input row's columns any output reads
  int plane_pitch;       // words per staged channel, = 8 (mod 32) for conflict-free B loads;
                         // a chunk holds chunk_channels + 1 planes (the last all zero), once as
                         // raw float32 split in place to TF32 big parts, once as small parts
  int tiles_per_image;   // ceil(out_height * out_width / kTilePixels)
  int64_t fragment_words;  // words of big parts, all channel blocks (small parts follow)
  bool chunk_totals;       // several chunks, summed in float32 totals (kMaxKStepsWithoutTotals)
  bool shared_weights;     // each CTA splits its channel block's fragments into shared memory
                           // (no prep kernel, no workspace)
  int64_t shared_bytes;    // dynamic shared memory one CTA needs
};

// Up to this many bytes of split fragments per CTA (big and small parts), with one m16 tile per
// CTA, go to shared memory when the CTA's shared memory stays within the second bound: small
// problems only, whose four CTAs per SM must still fit (and every device's default 48 KB).
constexpr int64_t kMaxSharedWeightBytes = 16 * 1024;
constexpr int64_t kMaxSharedBytesWithWeights = 48 * 1024;

// Fragment words of one channel block (the layout's fragment_words / channel_blocks).
__host__ __device__ inline int64_t block_fragment_words(const Layout& layout) {
  return int64_t{layout.chunks} * layout.chunk_k_steps * layout.channel_tiles * 32 * 4;
}

}  // namespace mma_sync
}  // namespace fusedconv
