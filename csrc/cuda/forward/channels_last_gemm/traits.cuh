// The channels_last GEMM's shapes and shared pieces: the staged ring's rows and swizzle, the CTA
// tile and the launch's geometry, the staging kinds and the MMA of one k slice (the family's
// design: channels_last_gemm.cu). Anonymous-namespace code for that file's translation unit only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"

namespace fusedconv {
namespace channels_last_gemm {
namespace {

constexpr int kRowBytes = 64;  // a staged row: one k step of one position or output channel
constexpr int kStages = 3;
constexpr int kThreads = 128;  // 4 warps
// What 128 threads of up to 168 registers leave room for; 3xTF32's split fragments take more.
template <bool kThreeTf32>
constexpr int kCtasPerSm = kThreeTf32 ? 2 : 3;
constexpr int kChunks = kRowBytes / 16;  // 16-byte chunks per staged row
static_assert(kThreads % kChunks == 0, "a thread copies one chunk column");

// How K is staged (channels_last_gemm.cu's kRuns and kVectorRuns): by taps of whole channel
// chunks (x through L1 where a pixel's channels fill less than a k step), or by kernel rows' runs
// of kernel_w x C elements in plain loads or in 16-byte copies through L1.
enum class Staging { kTaps, kTapsThroughL1, kRuns, kVectorRuns };

// Whether K walks kernel rows' runs (one step sequence a kernel row) rather than taps.
__host__ __device__ constexpr bool walks_runs(Staging staging) {
  return staging == Staging::kRuns || staging == Staging::kVectorRuns;
}

// x's 16-byte copy: through L1 for the stagings whose bytes neighbouring taps re-read.
template <Staging kStaging>
__device__ __forceinline__ void copy_input_16(void* shared_destination, const void* source,
                                              int src_bytes) {
  if constexpr (kStaging == Staging::kTapsThroughL1 || kStaging == Staging::kVectorRuns) {
    copy_async_16_l1(shared_destination, source, src_bytes);
  } else {
    copy_async_16(shared_destination, source, src_bytes);
  }
}

// Elements per 16-byte chunk, and input channels per k step (32 of 16 bits, 16 of float32).
template <typename Storage>
constexpr int kVector = 16 / static_cast<int>(sizeof(Storage));
template <typename Storage>
constexpr int kTileK = kRowBytes / static_cast<int>(sizeof(Storage));

// A CTA's tile: kM output positions x kN output channels, its four warps kWarpsM x kWarpsN, each
// kWarpM x 32. 128 x 64 by default; 32 channels where out_channels <= 32 (no MMAs and staging on
// channels that are not there), 64 positions where 128-position tiles would not fill the
// machine.
template <int kM, int kN>
struct Tile {
  static constexpr int kTileM = kM;
  static constexpr int kTileN = kN;
  static constexpr int kWarpN = 32;
  static constexpr int kWarpsN = kN / kWarpN;
  static constexpr int kWarpsM = kThreads / 32 / kWarpsN;
  static constexpr int kWarpM = kM / kWarpsM;
  static constexpr int kACopies = kM * kChunks / kThreads;
  static constexpr int kBCopies = kN * kChunks / kThreads;
  // Output staging row, in elements (144 / 80 bytes of 16-bit, 288 / 160 of float32), so a
  // warp's fragment writes hit distinct banks and each row starts 16-byte aligned.
  static constexpr int kStagedPitch = kN + 8;
  static_assert(kWarpsN * kWarpsM * 32 == kThreads && kWarpM % 16 == 0 && kBCopies >= 1,
                "four warps of whole m16 x 32 fragments");
};

struct Geometry {
  FastDivisor out_plane, out_width, n_tiles;
  FastDivisor in_channels;  // a run's element -> its tap, per step (an IDIV took ~25 SASS)
  int32_t positions;  // batch x out_height x out_width, < 2^31 (applies)
  int32_t k_chunks;   // kTileK-channel steps per tap (64 bytes of channels)
  int32_t k_steps;    // taps x k_chunks: the steps of one tile
  int32_t tiles;  // position tiles x channel tiles of the launch's tile, < 2^31 (applies)
};

// A padded pixel's or a missing position's row origin: below -2^30, so no tap (reach < 2^30,
// applies) brings it into the image.
constexpr int32_t kNoRow = -(int32_t{1} << 30) - 1;

// Where logical 16-byte chunk `chunk` of staged row `row` lies: the XOR puts the eight rows an
// ldmatrix reads (64 bytes apart) on eight distinct bank groups.
template <typename Storage>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return row * kTileK<Storage> + (chunk ^ ((row >> 1) & 3)) * kVector<Storage>;
}

// acc += A * B for one 32-byte k slice of a fragment pair: one m16n8k16 MMA of 16-bit
// operands, or one m16n8k8 TF32 MMA of float32 ones (rounded to TF32 to nearest, as cuDNN).
template <typename Storage>
__device__ __forceinline__ void mma_slice(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (sizeof(Storage) == 4) {
    mma_tf32(acc, to_tf32(__uint_as_float(a[0])), to_tf32(__uint_as_float(a[1])),
             to_tf32(__uint_as_float(a[2])), to_tf32(__uint_as_float(a[3])),
             to_tf32(__uint_as_float(b0)), to_tf32(__uint_as_float(b1)));
  } else {
    mma_16bit<StorageTraits<Storage>::kBFloat16>(acc, a, b0, b1);
  }
}

// Shared memory of one CTA: the ring's rows, then the staged output tile.
template <typename Storage, typename T>
constexpr int shared_bytes() {
  return kStages * (T::kTileM + T::kTileN) * kRowBytes +
         T::kTileM * T::kStagedPitch * static_cast<int>(sizeof(Storage));
}

template <typename T>
using Fragments = float[T::kWarpM / 16][T::kWarpN / 8][4];

}  // namespace
}  // namespace channels_last_gemm
}  // namespace fusedconv
