// Epilogue of the wgmma forward: bias + activation on a unit's accumulators, staged per warp
// through shared memory and stored from 32-byte sector boundaries, whole runs of output rows
// per store instruction (store_unit_runs says why; benchmarks/NOTES.md has the measurements).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/ptx.cuh"
#include "forward/wgmma/traits.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

// What one consumer warp's epilogue works with, fixed for the whole kernel.
struct EpilogueWarp {
  const float* bias;         // the CTA's bias values in shared memory, 0 past out_channels
  const uint8_t* slot_table;  // write_slot_table's table
  float* buffer;             // this warp's kEpilogueRows x kEpiloguePitch staging buffer
  int warp;                  // warp in the consumer group: channels warp * 16 ... of a block
  int lane;
};

// Where a unit (64 output channels x 128 staged positions) of an item lands.
struct EpilogueUnit {
  int64_t image;
  int first_out_row;   // the item's first output row
  int rows_here;       // its output rows that exist
  int block;           // output channel block (64 channels)
  int first_position;  // the unit's first staged position
};

#if FUSEDCONV_WGMMA_DEVICE

// One store of two consecutive outputs (the destination is aligned to the pair): 8 bytes of
// float32, or 4 bytes of a 2-byte storage type, rounded from float32 here. Written as PTX: with a
// scalar fallback beside it, nvcc turned the float2 store into two 4-byte stores. No memory
// clobber: nothing in the kernel reads the output back, and the epilogue's shared-memory loads
// may move above it.
template <typename Storage>
__device__ __forceinline__ void store_pair(Storage* destination, float2 value) {
  if constexpr (sizeof(Storage) == 4) {
    asm volatile("st.global.v2.f32 [%0], {%1, %2};\n" ::"l"(destination), "f"(value.x),
                 "f"(value.y));
  } else {
    static_assert(sizeof(Storage) == 2, "float32 or a 2-byte storage type");
    const Storage first = StorageTraits<Storage>::store(value.x);
    const Storage second = StorageTraits<Storage>::store(value.y);
    uint16_t first_bits, second_bits;
    memcpy(&first_bits, &first, 2);
    memcpy(&second_bits, &second, 2);
    const uint32_t pair = first_bits | (static_cast<uint32_t>(second_bits) << 16);
    asm volatile("st.global.b32 [%0], %1;\n" ::"l"(destination), "r"(pair));
  }
}

// One 8-byte shared-memory store (the address is 8-byte aligned). As PTX: as a float2 store at a
// run-time index, nvcc wrote the two halves separately.
__device__ __forceinline__ void store_shared_pair(uint32_t address, float first, float second) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(address), "f"(first), "f"(second)
               : "memory");
}

// The epilogue's slot table, written once per CTA: byte ((u * 4 + t) * 16 + j) is the run index
// (below) of position pair 8 j + 2 t of position unit u (staged positions u * 128 on), or for a
// dropped column kUnitPositions + 2 t, a spare pair past every run that only the threads of
// pair column t write (one spare for all would be written by several threads at once, where a
// unit spans rows: a benign race that racecheck reports). It is the same for every item, and read
// once per unit it replaced ~7 instructions per pair (position -> row, column, index, validity).
__device__ __forceinline__ void write_slot_table(const ConvParams& p, const Layout& layout,
                                                 uint8_t* table, int thread, int threads) {
  const int out_width = static_cast<int>(p.out_width);
  const int row_pitch = layout.row_pitch;
  for (int entry = thread; entry < kMaxPositionUnits * 64; entry += threads) {
    const int first_position = (entry >> 6) * kUnitPositions;
    const int position = first_position + 8 * (entry & 15) + 2 * ((entry >> 4) & 3);
    const int first_row = first_position / row_pitch;
    const int run_begin =
        first_row * out_width + min(first_position - first_row * row_pitch, out_width);
    const int row = position / row_pitch;
    const int col = position - row * row_pitch;
    table[entry] = static_cast<uint8_t>(
        col < out_width ? row * out_width + col - run_begin
                        : kUnitPositions + 2 * ((entry >> 4) & 3));
  }
}

// Epilogue of one unit (64 output channels x 128 positions), per warp (16 channels) in two
// passes of 8 channels, the two accumulator rows of each thread (channels warp * 16 + lane / 4
// (+ 8), position pairs 8 * j + 2 * (lane % 4): wgmma's fragment order).
//   1. bias + activation into the warp's shared buffer, one row per channel, compacted: a unit's
//      valid positions are one contiguous run of each output plane (consecutive output rows
//      follow each other in memory and the dropped columns have no output), so position -> its
//      index in that run.
//   2. each channel's run back out from the 32-byte boundary at or below its start, 64 floats
//      (256 bytes, 8 whole sectors) per store instruction.
// Stores cover whole 32-byte sectors: the output rows start at any 8-byte offset of a sector, and
// storing from wherever a run starts measured 1.4x the time of the sector-aligned pattern, bulk
// (TMA) stores from the buffer and 128/256-byte alignment no better (benchmarks/NOTES.md,
// "store pattern study").
template <bool kPaired, typename Storage>
__device__ __forceinline__ void store_unit_runs(const ConvParams& p, const Layout& layout,
                                                const float (&acc)[64], const EpilogueWarp& ew,
                                                const EpilogueUnit& unit) {
  const float* shared_bias = ew.bias;
  const uint8_t* slot_table = ew.slot_table;
  float* epilogue = ew.buffer;
  const int warp = ew.warp;
  const int lane = ew.lane;
  const int64_t image = unit.image;
  const int first_out_row = unit.first_out_row;
  const int rows_here = unit.rows_here;
  const int block = unit.block;
  const int first_position = unit.first_position;
  const int out_width = static_cast<int>(p.out_width);
  const int row_pitch = layout.row_pitch;
  const int64_t plane_size = p.out_height * p.out_width;
  // The index, among the item's outputs, of the first output at or after staged `position`
  // (position / row_pitch exactly: positions stay far below 2^21).
  const auto first_output_from = [&](int position) {
    const int row = __float2int_rz((position + 0.5f) * layout.inverse_row_pitch);
    const int col = position - row * row_pitch;
    return row * out_width + min(col, out_width);
  };
  const int run_begin = first_output_from(first_position);
  const int run_length =
      min(first_output_from(first_position + kUnitPositions), rows_here * out_width) - run_begin;
  // Even widths: where this thread's pairs go in its buffer row (shared addresses, from the slot
  // table; a dropped column goes to a spare pair). Positions past the item's last row land in
  // slots at or past run_length, which are never stored.
  uint32_t slot_address[16];
  // Odd widths: run index of pair j (-1 for a dropped column; past the item's last row it is >=
  // run_length) and in bit j of second_valid whether its second position is in the row.
  int run_index[16];
  uint32_t second_valid = 0;
  if (kPaired) {
    const uint4 slots = *reinterpret_cast<const uint4*>(
        slot_table + ((first_position / kUnitPositions) * 4 + (lane & 3)) * 16);
    const uint32_t words[4] = {slots.x, slots.y, slots.z, slots.w};
    const uint32_t row_address = shared_address(epilogue + (lane >> 2) * kEpiloguePitch);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      slot_address[j] = row_address + 4 * ((words[j >> 2] >> (8 * (j & 3))) & 0xffu);
    }
  } else {
    const int thread_position = first_position + 2 * (lane & 3);
    const float thread_position_float = static_cast<float>(thread_position) + 0.5f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int position = thread_position + 8 * j;
      const int row =
          __float2int_rz((thread_position_float + 8 * j) * layout.inverse_row_pitch);
      const int col = position - row * row_pitch;
      run_index[j] = col < out_width ? position - run_begin + row * (out_width - row_pitch) : -1;
      second_valid |= (col + 1 < out_width ? 1u : 0u) << j;
    }
  }
  Storage* run_start = static_cast<Storage*>(p.output) +
                     (image * p.out_channels + block * kBlockChannels + warp * 16) * plane_size +
                     int64_t{first_out_row} * out_width + run_begin;
#pragma unroll
  for (int channel_half = 0; channel_half < 2; ++channel_half) {
    const int first_channel = block * kBlockChannels + warp * 16 + 8 * channel_half;
    const float bias_value = shared_bias[first_channel + (lane >> 2)];
    float* buffer_row = epilogue + (lane >> 2) * kEpiloguePitch;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float* pair = acc + 4 * j + 2 * channel_half;
      const float first = HardSwishReLU<float>::value(pair[0] + bias_value);
      const float second = HardSwishReLU<float>::value(pair[1] + bias_value);
      if (kPaired) {
        store_shared_pair(slot_address[j], first, second);
      } else {
        const bool valid =
            static_cast<unsigned>(run_index[j]) < static_cast<unsigned>(run_length);
        if (valid) {
          buffer_row[run_index[j]] = first;
        }
        if (valid && ((second_valid >> j) & 1u) != 0) {
          buffer_row[run_index[j] + 1] = second;
        }
      }
    }
    __syncwarp();
    const int channels_here = min(8, static_cast<int>(p.out_channels) - first_channel);
    Storage* channel_run = run_start + 8 * channel_half * plane_size;
    // Channel r's run starts `shift` elements into its 32-byte sector; lane l of chunk m covers
    // the sector-aligned elements 64 m + 2 l (+ 1), run index 64 m + 2 l - shift (a run of 128
    // plus a shift of at most 15 2-byte elements stays inside the 3 chunks).
#pragma unroll
    for (int r = 0; r < 8; ++r, channel_run += plane_size) {
      if (r >= channels_here) {
        break;  // warp-uniform
      }
      constexpr int kSectorElements = 32 / static_cast<int>(sizeof(Storage));
      const int shift = static_cast<int>(
          (reinterpret_cast<uintptr_t>(channel_run) / sizeof(Storage)) & (kSectorElements - 1));
      const int lane_index = 2 * lane - shift;
      const float* source = epilogue + r * kEpiloguePitch + lane_index;
      Storage* destination = channel_run + lane_index;
      // Pinned (empty asm): nvcc otherwise rebuilt the 64-bit address under each chunk's
      // predicate, 2 instructions per store.
      asm("" : "+l"(destination));
      if (kPaired) {
        float2 values[3];
#pragma unroll
        for (int chunk = 0; chunk < 3; ++chunk) {
          const bool store = static_cast<unsigned>(lane_index + 64 * chunk) <
                             static_cast<unsigned>(run_length);
          values[chunk] = store ? *reinterpret_cast<const float2*>(source + 64 * chunk)
                                : make_float2(0.0f, 0.0f);
        }
#pragma unroll
        for (int chunk = 0; chunk < 3; ++chunk) {
          if (static_cast<unsigned>(lane_index + 64 * chunk) <
              static_cast<unsigned>(run_length)) {
            store_pair(destination + 64 * chunk, values[chunk]);
          }
        }
      } else {
#pragma unroll
        for (int chunk = 0; chunk < 3; ++chunk) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (static_cast<unsigned>(lane_index + 64 * chunk + e) <
                static_cast<unsigned>(run_length)) {
              destination[64 * chunk + e] = StorageTraits<Storage>::store(source[64 * chunk + e]);
            }
          }
        }
      }
    }
    __syncwarp();
  }
}

template <typename Storage>
__device__ __forceinline__ void store_unit(const ConvParams& p, const Layout& layout,
                                           const float (&acc)[64], const EpilogueWarp& ew,
                                           const EpilogueUnit& unit) {
  // Even widths: every run starts at an even element of an even-sized plane, so pairs move as
  // one 8-byte (4-byte) word (the output is 16-byte aligned: dense_nchw).
  if ((p.out_width & 1) == 0) {
    store_unit_runs<true, Storage>(p, layout, acc, ew, unit);
  } else {
    store_unit_runs<false, Storage>(p, layout, acc, ew, unit);
  }
}

#endif  // FUSEDCONV_WGMMA_DEVICE

}  // namespace wgmma
}  // namespace fusedconv
