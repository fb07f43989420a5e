// Channels_last forward in float16 / bfloat16 and float32: convolution, bias, hardswish and relu
// in one launch, no workspace. Float32 takes one TF32 product where PyTorch allows TF32, 3xTF32
// where it does not (x split as activations, W as weights: common/three_tf32.cuh). In
// channels_last a convolution is an implicit GEMM, output positions x (taps x input channels)
// times (taps x input channels) x output channels, both operands with the input channels
// innermost: the layout mma.sync's row x col fragments want. A 1x1 convolution is the one-tap
// case, memory-bound at the channel counts networks run (16-960): the aim there is one read of
// x and one write of y.
//
// Each CTA computes tiles of output positions x output channels (Tile: 128 x 64, or 32 channels
// for narrow outputs, 64 positions where the tiles would not fill the machine) with four warps.
// The grid is persistent: CTA b takes tiles b, b + gridDim.x, ..., and a kStages-deep cp.async
// ring runs over its (tile, tap, 64-byte channel step) triples, so the next tile's loads are in
// flight while this one's epilogue runs (zero-filled past the channels, the positions, the
// output channels and wherever a tap falls on the zero padding). Fragments come from
// XOR-swizzled rows through ldmatrix; m16n8k16 MMAs (m16n8k8 TF32 ones for float32, whose
// fragments are the same bytes: ldmatrix moves 32-bit words) accumulate in float32. The
// epilogue adds the bias, applies relu(hardswish) in float32, rounds once into a staged tile in
// shared memory and stores it in 16-byte row chunks. Each staged row's source pixel (stride and
// padding applied) is found once per tile; a tap moves all of a tile's rows by one offset
// (dilation applied), so the per-step work is one add and two bound checks per row.
//
// Few input channels (stems: 3), which no 16-byte chunk of one pixel holds: kRuns. In
// channels_last one kernel row's taps over C channels are one contiguous run of kernel_w x C
// elements (stride-1 columns, dilation 1), so K walks (kernel row, 64-byte step of the run)
// instead, and the run's elements are staged by plain loads (no 16-byte alignment), zero past the
// run and on padded columns. The weight, channels_last, holds the same runs. K padding: 7 x 3 = 21
// elements in one 32-element step (the ResNet stem), 9 in one (a 3x3 stem).
// Few input channels in whole 16-byte vectors (8 of 16 bits: KernelBench v0.1), where a tap's
// step would be mostly zeros: kVectorRuns, the same runs staged by 16-byte cp.async (a chunk
// never straddles two pixels), where they take fewer k steps than the taps (`staging`).
// Where a pixel's channels fill less than a 64-byte step, neighbouring taps and positions of one
// CTA re-read the same bytes of x up to kernel_w times: those stagings copy x through L1
// (cp.async.ca; kTapsThroughL1, and kVectorRuns). Wider channels keep .cg, measured faster there.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/device_limits.h"
#include "forward/channels_last_gemm/kernel.cuh"
#include "forward/channels_last_gemm/traits.cuh"
#include "forward/families.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace channels_last_gemm {
namespace {

template <typename Storage, typename T, Staging kStaging, bool kThreeTf32>
cudaError_t launch_tile(const ConvParams& p, Geometry g, int64_t positions,
                        const DeviceLimits& limits, cudaStream_t stream) {
  constexpr auto kernel =
      conv_hardswish_relu_channels_last_gemm_kernel<Storage, T, kStaging, kThreeTf32>;
  constexpr int kSharedBytes = shared_bytes<Storage, T>();
  const cudaError_t status = opt_in_shared_memory<kernel>(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const int64_t n_tiles = (p.out_channels + T::kTileN - 1) / T::kTileN;
  g.n_tiles = FastDivisor::make(static_cast<uint32_t>(n_tiles));
  g.tiles = static_cast<int32_t>((positions + T::kTileM - 1) / T::kTileM * n_tiles);
  // As many CTAs as stay resident at once (registers and shared memory), at most one per tile.
  const int64_t resident =
      int64_t{limits.sm_count} * ctas_per_sm(limits, kSharedBytes, kCtasPerSm<kThreeTf32>);
  const uint32_t grid = static_cast<uint32_t>(g.tiles < resident ? g.tiles : resident);
  kernel<<<grid, kThreads, kSharedBytes, stream>>>(p, g);
  return cudaGetLastError();
}

// 32-channel tiles where out_channels <= 32; 64-position tiles where 128-position ones would
// leave part of the resident grid idle.
template <typename Storage, Staging kStaging, bool kThreeTf32>
cudaError_t launch_typed(const ConvParams& p, const Geometry& g, int64_t positions,
                         cudaStream_t stream) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  const bool narrow = p.out_channels <= 32;
  const int64_t channel_tiles = narrow ? 1 : (p.out_channels + 63) / 64;
  const int64_t resident = int64_t{limits.sm_count} * kCtasPerSm<kThreeTf32>;
  const bool short_tiles = (positions + 127) / 128 * channel_tiles < resident;
  if (narrow) {
    return short_tiles
               ? launch_tile<Storage, Tile<64, 32>, kStaging, kThreeTf32>(
                     p, g, positions, limits, stream)
               : launch_tile<Storage, Tile<128, 32>, kStaging, kThreeTf32>(
                     p, g, positions, limits, stream);
  }
  return short_tiles
             ? launch_tile<Storage, Tile<64, 64>, kStaging, kThreeTf32>(
                   p, g, positions, limits, stream)
             : launch_tile<Storage, Tile<128, 64>, kStaging, kThreeTf32>(
                   p, g, positions, limits, stream);
}

template <typename Storage, bool kThreeTf32>
cudaError_t launch_staged(const ConvParams& p, const Geometry& g, Staging how, int64_t positions,
                          cudaStream_t stream) {
  switch (how) {
    case Staging::kRuns:
      return launch_typed<Storage, Staging::kRuns, kThreeTf32>(p, g, positions, stream);
    case Staging::kVectorRuns:
      return launch_typed<Storage, Staging::kVectorRuns, kThreeTf32>(p, g, positions, stream);
    case Staging::kTapsThroughL1:
      return launch_typed<Storage, Staging::kTapsThroughL1, kThreeTf32>(p, g, positions,
                                                                         stream);
    default:
      return launch_typed<Storage, Staging::kTaps, kThreeTf32>(p, g, positions, stream);
  }
}

// 32-bit rows and columns: a position's first pixel, moved by any tap, stays within
// (kNoRow, 2^31); batch and tap offsets are 64-bit. (Lower bounds: valid_geometry, checked by
// the planner before any family.) And the step counts: K is kernel_h x `row_taps` taps of
// `run_length` elements each (kernel_w taps of in_channels, or one run of kernel_w x
// in_channels); a run's element offsets (below run_length + step_k) are FastDivisor dividends.
bool within_32_bits(const ConvParams& p, int64_t row_taps, int64_t run_length) {
  constexpr int64_t kReachLimit = int64_t{1} << 30;
  const bool rows_fit = p.in_height < kReachLimit && p.pad_top < kReachLimit &&
                        (p.out_height - 1) * p.stride_h < kReachLimit &&
                        (p.kernel_h - 1) * p.dilation_h < kReachLimit;
  const bool cols_fit = p.in_width < kReachLimit && p.pad_left < kReachLimit &&
                        (p.out_width - 1) * p.stride_w < kReachLimit &&
                        (p.kernel_w - 1) * p.dilation_w < kReachLimit;
  constexpr int64_t kIntLimit = int64_t{1} << 31;
  const int64_t positions = p.batch * p.out_height * p.out_width;
  const int64_t most_tiles = (positions + 63) / 64 * ((p.out_channels + 31) / 32);
  const int64_t taps = p.kernel_h * row_taps;
  const int64_t step_k = kRowBytes / element_bytes(p.dtype);
  const int64_t k_steps = taps * ((run_length + step_k - 1) / step_k);
  return rows_fit && cols_fit && positions < kIntLimit && taps < kIntLimit &&
         run_length < kIntLimit - step_k && k_steps < kIntLimit &&
         most_tiles * k_steps < kIntLimit && p.out_channels < kIntLimit;
}

// Runs where no chunk holds whole channels; vector runs where a kernel row's run takes fewer k
// steps than its taps (at 3x3: 8 or 16 channels of 16 bits, 4 or 8 of float32), its columns
// contiguous in x and W (dilation 1, W channels_last); else taps, x through L1 where a pixel's
// channels fill less than a k step.
Staging staging(const ConvParams& p) {
  if (stages_runs(p)) {
    return Staging::kRuns;
  }
  const int64_t step_k = kRowBytes / element_bytes(p.dtype);
  const int64_t run_steps = (p.kernel_w * p.in_channels + step_k - 1) / step_k;
  const int64_t tap_steps = p.kernel_w * ((p.in_channels + step_k - 1) / step_k);
  const bool contiguous = p.dilation_w == 1 && p.weight_strides.w == p.in_channels;
  if (contiguous && run_steps < tap_steps) {
    return Staging::kVectorRuns;
  }
  return p.in_channels * element_bytes(p.dtype) < kRowBytes ? Staging::kTapsThroughL1
                                                            : Staging::kTaps;
}

}  // namespace

bool stages_runs(const ConvParams& p) {
  return p.in_channels % (16 / element_bytes(p.dtype)) != 0;
}

bool applies(const ConvParams& p) {
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat32) {
    return false;
  }
  // Output channels in whole 16-byte chunks: 8 of 16 bits, 4 of float32. Input channels too,
  // or else runs (stems), whose kernel rows must be contiguous: dilation 1 across columns.
  const int64_t vector = 16 / element_bytes(p.dtype);
  if (p.groups != 1 || p.in_channels <= 0 || p.out_channels % vector != 0) {
    return false;
  }
  if (!is_dense_channels_last(p.input_strides, p.in_channels, p.in_height, p.in_width) ||
      !is_dense_channels_last(p.output_strides, p.out_channels, p.out_height, p.out_width)) {
    return false;
  }
  const Strides4& w = p.weight_strides;
  if (stages_runs(p)) {  // plain loads, no alignment asked of x or W
    const bool channels_innermost = p.in_channels == 1 || w.c == 1;
    const bool runs = p.dilation_w == 1 && channels_innermost &&
                      (p.kernel_w == 1 || w.w == p.in_channels);
    return runs && aligned_16(p.output) && within_32_bits(p, 1, p.kernel_w * p.in_channels);
  }
  // The weight's channel chunks of each tap are 16 bytes: channels innermost, and each stride a
  // tap steps along a whole number of chunks (a 1x1 weight's size-1 dimensions take none).
  if (w.c != 1 || w.n % vector != 0 || (p.kernel_h > 1 && w.h % vector != 0) ||
      (p.kernel_w > 1 && w.w % vector != 0)) {
    return false;
  }
  if (!aligned_16(p.input) || !aligned_16(p.output) || !aligned_16(p.weight)) {
    return false;
  }
  return staging(p) == Staging::kVectorRuns ? within_32_bits(p, 1, p.kernel_w * p.in_channels)
                                             : within_32_bits(p, p.kernel_w, p.in_channels);
}

cudaError_t launch(const ConvParams& p, bool allow_tf32, cudaStream_t stream) {
  const int64_t positions = p.batch * p.out_height * p.out_width;
  if (positions == 0 || p.out_channels == 0) {
    return cudaSuccess;
  }
  Geometry g{};
  g.out_plane = FastDivisor::make(static_cast<uint32_t>(p.out_height * p.out_width));
  g.out_width = FastDivisor::make(static_cast<uint32_t>(p.out_width));
  g.positions = static_cast<int32_t>(positions);
  g.in_channels = FastDivisor::make(static_cast<uint32_t>(p.in_channels));
  const int64_t step_k = kRowBytes / element_bytes(p.dtype);
  const Staging how = staging(p);
  const bool runs = walks_runs(how);
  // K per kernel row: kernel_w taps of in_channels, or one run of kernel_w x in_channels.
  const int64_t row_taps = runs ? 1 : p.kernel_w;
  const int64_t run_length = runs ? p.kernel_w * p.in_channels : p.in_channels;
  g.k_chunks = static_cast<int32_t>((run_length + step_k - 1) / step_k);
  g.k_steps = static_cast<int32_t>(p.kernel_h * row_taps) * g.k_chunks;
  const bool three_tf32 = p.dtype == DType::kFloat32 && !allow_tf32;
  return dispatch_dtype(p.dtype, [&](auto zero) {
    using Storage = decltype(zero);
    if constexpr (sizeof(Storage) == 4) {
      return three_tf32 ? launch_staged<Storage, true>(p, g, how, positions, stream)
                        : launch_staged<Storage, false>(p, g, how, positions, stream);
    } else if constexpr (sizeof(Storage) == 2) {
      return launch_staged<Storage, false>(p, g, how, positions, stream);
    } else {
      return cudaErrorInvalidValue;  // applies admits float16 / bfloat16 / float32 only
    }
  });
}

}  // namespace channels_last_gemm
}  // namespace fusedconv
