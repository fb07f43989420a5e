// The channels_last GEMM's kernel: a persistent CTA's cp.async ring over its (tile, tap, channel
// step) triples, ldmatrix fragments and mma.sync, the epilogue at each tile's last step (the
// family's design: channels_last_gemm.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "forward/channels_last_gemm/epilogue.cuh"
#include "forward/channels_last_gemm/traits.cuh"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace channels_last_gemm {
namespace {

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
    int tap = static_cast<int>(g.in_channels.quotient(static_cast<uint32_t>(first)));
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
      const int first = k + chunk * kVec;
      const int tap = static_cast<int>(g.in_channels.quotient(static_cast<uint32_t>(first)));
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

}  // namespace
}  // namespace channels_last_gemm
}  // namespace fusedconv
