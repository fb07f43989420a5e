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
#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "forward/families.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

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

// How K is staged (the header's kRuns and kVectorRuns): by taps of whole channel chunks (x through
// L1 where a pixel's channels fill less than a k step), or by kernel rows' runs of kernel_w x C
// elements in plain loads or in 16-byte copies through L1.
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

// Two adjacent elements of the staged tile from two float32 values, rounded once.
template <typename Storage>
__device__ __forceinline__ void store_pair(Storage* destination, float a, float b) {
  if constexpr (sizeof(Storage) == 4) {
    *reinterpret_cast<float2*>(destination) = make_float2(a, b);
  } else {
    *reinterpret_cast<uint32_t*>(destination) = StorageTraits<Storage>::store_pair(a, b);
  }
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

// The epilogue of one tile: bias, relu(hardswish) and one rounding per fragment element into a
// staged tile (row pitch T::kStagedPitch: a warp's fragment writes hit 32 distinct banks), then
// 16-byte stores of whole runs of channels, consecutive threads on consecutive chunks of a row.
// Lane l holds rows l / 4 and l / 4 + 8 of each 16 x 8 fragment, channels 2 (l % 4) + {0, 1}.
template <typename Storage, typename T>
__device__ __forceinline__ void store_tile(const ConvParams& p, const Geometry& g,
                                           const Fragments<T>& acc, Storage* staged, int m0,
                                           int n0, int warp_m, int warp_n, int lane, int thread) {
  using Traits = StorageTraits<Storage>;
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  const int out_channels = static_cast<int>(p.out_channels);
#pragma unroll
  for (int j = 0; j < T::kWarpN / 8; ++j) {
    const int column = warp_n + j * 8 + 2 * (lane & 3);
    const bool present = bias != nullptr && n0 + column < out_channels;  // whole pairs: even
    const float bias0 = present ? Traits::load(bias[n0 + column]) : 0.0f;
    const float bias1 = present ? Traits::load(bias[n0 + column + 1]) : 0.0f;
#pragma unroll
    for (int i = 0; i < T::kWarpM / 16; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = warp_m + i * 16 + (lane >> 2) + half * 8;
        const float y0 = HardSwishReLU<float>::value(acc[i][j][2 * half] + bias0);
        const float y1 = HardSwishReLU<float>::value(acc[i][j][2 * half + 1] + bias1);
        store_pair(staged + row * T::kStagedPitch + column, y0, y1);
      }
    }
  }
  __syncthreads();
  constexpr int kRowChunks = T::kTileN / kVector<Storage>;
  Storage* __restrict__ output = static_cast<Storage*>(p.output);
#pragma unroll
  for (int i = 0; i < T::kTileM * kRowChunks / kThreads; ++i) {
    const int index = thread + i * kThreads;
    const int row = index / kRowChunks;
    const int column = (index % kRowChunks) * kVector<Storage>;
    const int m = m0 + row;
    if (m < g.positions && n0 + column < out_channels) {  // out_channels: whole chunks
      *reinterpret_cast<uint4*>(output + int64_t{m} * out_channels + n0 + column) =
          *reinterpret_cast<const uint4*>(staged + row * T::kStagedPitch + column);
    }
  }
  // The next writes of `staged` come after the main loop's next __syncthreads.
}

// Loads kVector<Storage> consecutive elements from `source` into a 16-byte vector, element v only
// where bit v of `mask` is set (zero elsewhere); no alignment needed.
template <typename Storage>
__device__ __forceinline__ uint4 load_run(const Storage* source, uint32_t mask) {
  Vector16<Storage> vector;
#pragma unroll
  for (int v = 0; v < kVector<Storage>; ++v) {
    vector.values[v] = (mask >> v) & 1u ? source[v] : StorageTraits<Storage>::store(0.0f);
  }
  return vector.bits;
}

template <typename Storage, typename T, Staging kStaging, bool kThreeTf32>
__global__ void __launch_bounds__(kThreads, kCtasPerSm<kThreeTf32>)
    conv_hardswish_relu_channels_last_gemm_kernel(const ConvParams p, const Geometry g) {
  constexpr bool kRuns = walks_runs(kStaging);
  constexpr int kStepK = kTileK<Storage>;
  constexpr int kVec = kVector<Storage>;
  extern __shared__ __align__(128) unsigned char shared[];
  Storage* const a_ring = reinterpret_cast<Storage*>(shared);
  Storage* const b_ring = a_ring + kStages * T::kTileM * kStepK;
  Storage* const staged_out = b_ring + kStages * T::kTileN * kStepK;

  const int thread = static_cast<int>(threadIdx.x);
  const Storage* __restrict__ input = static_cast<const Storage*>(p.input);
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
  const int in_channels = static_cast<int>(p.in_channels);
  const int out_channels = static_cast<int>(p.out_channels);
  const uint32_t in_height = static_cast<uint32_t>(p.in_height);
  const uint32_t in_width = static_cast<uint32_t>(p.in_width);
  const int dilation_h = static_cast<int>(p.dilation_h);
  const int dilation_w = static_cast<int>(p.dilation_w);
  const int my_tiles = (g.tiles - static_cast<int>(blockIdx.x) +
                        static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  const int steps = my_tiles * g.k_steps;  // < 2^31: tiles x k steps is checked by applies
  const int chunk = thread % kChunks;

  auto tile_origin = [&](int local_tile, int& m0, int& n0) {
    const uint32_t tile = blockIdx.x + static_cast<uint32_t>(local_tile) * gridDim.x;
    const uint32_t m_tile = g.n_tiles.quotient(tile);
    m0 = static_cast<int>(m_tile) * T::kTileM;
    n0 = static_cast<int>(tile - m_tile * g.n_tiles.divisor) * T::kTileN;
  };

  // The loader's place in the ring's (tile, tap, channel step) sequence, and the origins of the
  // rows this thread stages for that tile, found once per tile: the image's pixel the first tap
  // reads (stride and padding applied; kNoRow past the last position) and the weight row.
  int load_tile = 0, load_chunk = 0, load_tap_col = 0, load_tap_row = 0;
  int tap_row = 0, tap_col = 0;  // the tap's offset in input rows / columns (dilation applied)
  int64_t a_tap_offset = 0, b_tap_offset = 0;  // and in elements of x and of W
  const Storage* a_origin[T::kACopies];
  int32_t a_row[T::kACopies], a_col[T::kACopies];
  const Storage* b_origin[T::kBCopies];
  auto find_origins = [&]() {
    int m0, n0;
    tile_origin(load_tile, m0, n0);
#pragma unroll
    for (int i = 0; i < T::kACopies; ++i) {
      const int m = m0 + thread / kChunks + i * (kThreads / kChunks);
      a_origin[i] = input;
      a_row[i] = kNoRow;
      a_col[i] = kNoRow;
      if (m < g.positions) {
        const uint32_t image = g.out_plane.quotient(static_cast<uint32_t>(m));
        const uint32_t rest = static_cast<uint32_t>(m) - image * g.out_plane.divisor;
        const uint32_t out_row = g.out_width.quotient(rest);
        const uint32_t out_col = rest - out_row * g.out_width.divisor;
        a_row[i] = static_cast<int32_t>(out_row * p.stride_h - p.pad_top);
        a_col[i] = static_cast<int32_t>(out_col * p.stride_w - p.pad_left);
        // The first tap's pixel, which may lie in the padding (a_row / a_col say whether each
        // tap's does): the address is formed, never read, outside the image.
        a_origin[i] = input + int64_t{image} * p.input_strides.n +
                      int64_t{a_row[i]} * p.input_strides.h +
                      int64_t{a_col[i]} * p.input_strides.w + chunk * kVec;
      }
    }
#pragma unroll
    for (int i = 0; i < T::kBCopies; ++i) {
      const int n = n0 + thread / kChunks + i * (kThreads / kChunks);
      b_origin[i] = n < out_channels ? weight + int64_t{n} * p.weight_strides.n + chunk * kVec
                                     : nullptr;
    }
  };
  find_origins();

  // kRuns: element e of a kernel row's run is channel e % C of column a_col + e / C; this
  // thread's kVec elements of the step at k, their columns' offsets, and which are in the run.
  auto run_columns = [&](int k, int (&column)[kVec], uint32_t& in_run) {
    const int first = k + chunk * kVec;
    int tap = first / in_channels;  // one division per step
    int c = first - tap * in_channels;
    in_run = 0;
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      column[v] = tap;
      in_run |= (tap < static_cast<int>(p.kernel_w) ? 1u : 0u) << v;
      if (++c == in_channels) {
        c = 0;
        ++tap;
      }
    }
  };

  // Stages the loader's next step into ring slot `slot`, then advances the loader.
  auto stage_next = [&](int slot) {
    const int k = load_chunk * kStepK;
    Storage* const a_stage = a_ring + slot * T::kTileM * kStepK;
    Storage* const b_stage = b_ring + slot * T::kTileN * kStepK;
    if constexpr (kStaging == Staging::kVectorRuns) {
      // The chunk lies in one tap's pixel: in_channels is whole chunks.
      const int tap = (k + chunk * kVec) / in_channels;
      const bool in_run = tap < static_cast<int>(p.kernel_w);
#pragma unroll
      for (int i = 0; i < T::kACopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        const bool valid = in_run &&
                           static_cast<uint32_t>(a_row[i] + tap_row) < in_height &&
                           static_cast<uint32_t>(a_col[i] + tap) < in_width;
        copy_input_16<kStaging>(a_stage + swizzled<Storage>(row, chunk),
                                valid ? a_origin[i] + a_tap_offset + k : input, valid ? 16 : 0);
      }
#pragma unroll
      for (int i = 0; i < T::kBCopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        const bool valid = in_run && b_origin[i] != nullptr;
        copy_async_16(b_stage + swizzled<Storage>(row, chunk),
                      valid ? b_origin[i] + b_tap_offset + k : weight, valid ? 16 : 0);
      }
    } else if constexpr (kStaging == Staging::kRuns) {
      int column[kVec];
      uint32_t in_run;
      run_columns(k, column, in_run);
#pragma unroll
      for (int i = 0; i < T::kACopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        uint32_t mask = 0;
        if (static_cast<uint32_t>(a_row[i] + tap_row) < in_height) {
#pragma unroll
          for (int v = 0; v < kVec; ++v) {
            const bool inside = static_cast<uint32_t>(a_col[i] + column[v]) < in_width;
            mask |= (inside ? 1u : 0u) << v;
          }
          mask &= in_run;
        }
        *reinterpret_cast<uint4*>(a_stage + swizzled<Storage>(row, chunk)) =
            load_run(a_origin[i] + a_tap_offset + k, mask);
      }
#pragma unroll
      for (int i = 0; i < T::kBCopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        const bool present = b_origin[i] != nullptr;
        *reinterpret_cast<uint4*>(b_stage + swizzled<Storage>(row, chunk)) =
            load_run(present ? b_origin[i] + b_tap_offset + k : weight, present ? in_run : 0u);
      }
    } else {
      const bool k_valid = k + chunk * kVec < in_channels;  // in_channels: whole chunks
#pragma unroll
      for (int i = 0; i < T::kACopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        const int in_row = a_row[i] + tap_row;
        const int in_col = a_col[i] + tap_col;
        const bool valid = k_valid && static_cast<uint32_t>(in_row) < in_height &&
                           static_cast<uint32_t>(in_col) < in_width;
        copy_input_16<kStaging>(a_stage + swizzled<Storage>(row, chunk),
                                valid ? a_origin[i] + a_tap_offset + k : input, valid ? 16 : 0);
      }
#pragma unroll
      for (int i = 0; i < T::kBCopies; ++i) {
        const int row = thread / kChunks + i * (kThreads / kChunks);
        const bool valid = k_valid && b_origin[i] != nullptr;
        copy_async_16(b_stage + swizzled<Storage>(row, chunk),
                      valid ? b_origin[i] + b_tap_offset + k : weight, valid ? 16 : 0);
      }
    }
    if (++load_chunk < g.k_chunks) {
      return;
    }
    load_chunk = 0;
    if (kRuns || ++load_tap_col == p.kernel_w) {  // a run holds the kernel row's columns
      load_tap_col = 0;
      if (++load_tap_row == p.kernel_h) {
        load_tap_row = 0;
        if (++load_tile < my_tiles) {
          find_origins();
        }
      }
    }
    tap_row = load_tap_row * dilation_h;
    tap_col = load_tap_col * dilation_w;
    a_tap_offset = tap_row * p.input_strides.h + tap_col * p.input_strides.w;
    b_tap_offset = load_tap_row * p.weight_strides.h + load_tap_col * p.weight_strides.w;
  };

  const int warp = thread / 32;
  const int lane = thread % 32;
  const int warp_m = (warp / T::kWarpsN) * T::kWarpM;
  const int warp_n = (warp % T::kWarpsN) * T::kWarpN;
  Fragments<T> acc;
  auto clear = [&]() {
#pragma unroll
    for (int i = 0; i < T::kWarpM / 16; ++i) {
#pragma unroll
      for (int j = 0; j < T::kWarpN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          acc[i][j][e] = 0.0f;
        }
      }
    }
  };
  clear();

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) {
      stage_next(s);
    }
    copy_async_commit();
  }
  int tile = 0, k_step = 0;  // the consumer's place in the sequence
  for (int step = 0; step < steps; ++step) {
    copy_async_wait_group<kStages - 2>();
    __syncthreads();  // this stage landed for every thread; the one refilled below is consumed
    const int slot = step % kStages;
    if (step + kStages - 1 < steps) {
      stage_next(slot == 0 ? kStages - 1 : slot - 1);
    }
    copy_async_commit();
    const Storage* a_stage = a_ring + slot * T::kTileM * kStepK;
    const Storage* b_stage = b_ring + slot * T::kTileN * kStepK;
#pragma unroll
    for (int kk = 0; kk < kRowBytes / 32; ++kk) {
      // ldmatrix x4 of 32-byte k slices: lanes 8j..8j+7 address matrix j. A: matrices (rows 0-7
      // | 8-15) x (bytes 0-15 | 16-31) in a0..a3 order; B: (bytes 0-15, 16-31) of channels 0-7,
      // then of channels 8-15. In 16-bit elements a slice is k 0-15, in float32 k 0-7.
      uint32_t a[T::kWarpM / 16][4];
      uint32_t b[T::kWarpN / 16][4];
#pragma unroll
      for (int i = 0; i < T::kWarpM / 16; ++i) {
        const int row = warp_m + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        load_matrix_x4(a[i],
                       shared_address(a_stage + swizzled<Storage>(row, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int j = 0; j < T::kWarpN / 16; ++j) {
        const int row = warp_n + j * 16 + (lane & 7) + (lane >> 4) * 8;
        load_matrix_x4(b[j], shared_address(b_stage + swizzled<Storage>(
                                 row, kk * 2 + ((lane >> 3) & 1))));
      }
      if constexpr (kThreeTf32) {
        // Each fragment word split once: x as activations (rounded), W as weights (truncated).
        uint32_t a_small[T::kWarpM / 16][4], b_small[T::kWarpN / 16][4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
#pragma unroll
          for (int i = 0; i < T::kWarpM / 16; ++i) {
            split_input(__uint_as_float(a[i][e]), a[i][e], a_small[i][e]);
          }
#pragma unroll
          for (int j = 0; j < T::kWarpN / 16; ++j) {
            split_weight(__uint_as_float(b[j][e]), b[j][e], b_small[j][e]);
          }
        }
#pragma unroll
        for (int i = 0; i < T::kWarpM / 16; ++i) {
#pragma unroll
          for (int j = 0; j < T::kWarpN / 8; ++j) {
            const int w = (j % 2) * 2;
            mma_three_tf32<true>(acc[i][j], a[i], a_small[i], b[j / 2][w], b[j / 2][w + 1],
                                 b_small[j / 2][w], b_small[j / 2][w + 1]);
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < T::kWarpM / 16; ++i) {
#pragma unroll
          for (int j = 0; j < T::kWarpN / 8; ++j) {
            mma_slice<Storage>(acc[i][j], a[i], b[j / 2][(j % 2) * 2],
                               b[j / 2][(j % 2) * 2 + 1]);
          }
        }
      }
    }
    if (++k_step == g.k_steps) {
      int m0, n0;
      tile_origin(tile, m0, n0);
      store_tile<Storage, T>(p, g, acc, staged_out, m0, n0, warp_m, warp_n, lane, thread);
      clear();
      k_step = 0;
      ++tile;
    }
  }
  copy_async_wait_group<0>();  // no copy outlives the CTA (the trailing groups are empty)
}

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
// in_channels).
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
         run_length < kIntLimit && k_steps < kIntLimit && most_tiles * k_steps < kIntLimit &&
         p.out_channels < kIntLimit;
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
