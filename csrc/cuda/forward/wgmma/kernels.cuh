// Fused forward on Hopper (sm_90a): an implicit GEMM on warpgroup MMAs (wgmma). The MMA loop
// issues nothing but wgmma and descriptor adds (the mma.sync kernel is bound by the ~13
// instructions it issues per MMA).
//
// GEMM: M = 64 output channels (A = split weights, shared memory), N = 128 output positions
// (B = staged input, shared memory), K = 8 input channels of one tap per k8 step. TF32 wgmma
// reads shared operands K-major only, so the input is staged channels-innermost: plane g of a
// stage holds, for every position of the staged rows, channels 4g..4g+3 as 16 bytes. A core
// matrix (8 positions x 4 channels) is then 128 contiguous bytes (no swizzle), and the B
// operand of tap (r, s) is the same planes read from position r * row_pitch + s on: one
// descriptor add per tap, no im2col and no register traffic in the MMA loop.
//
// Positions flatten (row, col) of the staged tile, whose rows are whole zero-padded input rows
// (row_pitch = padded width rounded up to even): output (i, j) and tap (r, s) read position
// (i + r) * row_pitch + j + s, so columns j >= out_width are computed and dropped (2 of 128 on
// v0.1).
//
// A persistent CTA per SM loops over items (image, block of output rows):
//   warpgroup 0, producer (producer.cuh): cp.async of the item's raw input rows, NCHW or
//     (kChannelsLast) channels_last (double-buffered, one stage ahead), then one pass that
//     zero-pads, splits every value into TF32 big and small parts and writes a stage's K-major
//     planes; mbarriers hand stages to the consumers (full) and back (empty).
//   the other warpgroups, consumers (mainloop.cuh): take the 128-position units round robin and
//     issue their MMA chains in turns; per unit and k step, 3 wgmma (big*big, big*small,
//     small*big: 3xTF32) into 64 float32 accumulators per thread, then bias + activation,
//     staged per warp through shared memory so that every store instruction writes 256
//     contiguous bytes of an output row (epilogue.cuh), or in channels_last per consumer group
//     so that it writes whole positions' channels (epilogue_channels_last.cuh).
// The two variants (resident and streamed weights) are described at Layout (traits.h).
#pragma once

#include <cstdint>

#include "common/accumulate.cuh"
#include "common/ptx.cuh"
#include "common/three_tf32.cuh"
#include "forward/wgmma/epilogue.cuh"
#include "forward/wgmma/epilogue_channels_last.cuh"
#include "forward/wgmma/mainloop.cuh"
#include "forward/wgmma/producer.cuh"
#include "forward/wgmma/smem_layout.cuh"
#include "forward/wgmma/traits.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

#if FUSEDCONV_WGMMA_DEVICE

// What both kernels set up before the producer/consumer split: the step table, the slot table,
// the bias (0 past out_channels, or without one: a global load per unit put a full memory
// latency in front of every unit's MMAs) and the stages' mbarriers (`full_arrivals` producer
// arrivals; one consumer arrival per warp), then a CTA barrier.
template <int kThreads, int kConsumers, typename Storage>
__device__ __forceinline__ void init_shared(const ConvParams& p, const Layout& layout,
                                            const SharedStorage& shared, int taps, int kernel_w,
                                            uint32_t full_arrivals, int thread) {
  write_step_offsets(layout, taps, kernel_w, shared.step_offsets(), thread);
  write_slot_table(p, layout, shared.slot_table(), thread, blockDim.x);
  float* shared_bias = shared.bias(layout);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  for (int channel = thread; channel < layout.out_blocks * kBlockChannels;
       channel += kThreads) {
    shared_bias[channel] = bias != nullptr && channel < p.out_channels
                               ? StorageTraits<Storage>::load(bias[channel])
                               : 0.0f;
  }
  if (thread == 0) {
    for (int stage = 0; stage < layout.stages; ++stage) {
      barrier_init(shared.full_barrier(stage), full_arrivals);
      barrier_init(shared.empty_barrier(stage), kConsumers * 4);
    }
  }
  fence_proxy_async();
  __syncthreads();
}

// The consumer group of this thread, through a shuffle from lane 0: the compiler then knows it
// is warp-uniform (CUTLASS's canonical_warp_group_idx) and keeps what derives from it, the MMA
// descriptors among it, in uniform registers.
__device__ __forceinline__ int consumer_group(int thread) {
  return __shfl_sync(0xffffffffu, thread / kGroupThreads - 1, 0);
}

#endif  // FUSEDCONV_WGMMA_DEVICE

// Storage: the tensors' type, float (either mode) or a 2-byte type (TF32 mode, exact: above);
// everything between the loads and the stores is float32.
template <bool kThreeTf32, bool kChannelsLast, typename Storage>
__global__ void __launch_bounds__(threads_for(kResidentConsumers), 1)
    conv_hardswish_relu_wgmma_kernel(const ConvParams p, const Layout layout) {
#if FUSEDCONV_WGMMA_DEVICE
  constexpr int kConsumers = kResidentConsumers;
  constexpr int kThreads = threads_for(kConsumers);
  const SharedStorage shared;
  float* weights = shared.weights(layout);
  Storage* raw = shared.raw<Storage>(layout);
  const int thread = threadIdx.x;
  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);

  // Weights -> shared memory once per CTA, split, in A's K-major core-matrix layout: word
  // ((part * out_blocks + block) * k_steps + step) * 512 + half * 256 + row * 4 + e holds
  // channel block * 64 + row, input channel 8 * (step / taps) + 4 * half + e, tap step % taps.
  // Read on every call (never cached by pointer): an in-place optimizer step must be seen.
  const int weight_words = layout.out_blocks * layout.k_steps * 512;
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
#pragma unroll 4
  for (int word = thread; word < weight_words; word += kThreads) {
    const int e = word & 3;
    const int row = (word >> 2) & 63;
    const int half = (word >> 8) & 1;
    const int step = (word >> 9) % layout.k_steps;
    const int block = (word >> 9) / layout.k_steps;
    const int64_t channel = block * kBlockChannels + row;
    const int64_t in_channel = 8 * (step / taps) + 4 * half + e;
    const int tap = step % taps;
    float value = 0.0f;
    if (channel < p.out_channels && in_channel < p.in_channels) {
      value = StorageTraits<Storage>::load(
          weight[channel * p.weight_strides.n + in_channel * p.weight_strides.c +
                 (tap / kernel_w) * p.weight_strides.h + (tap % kernel_w) * p.weight_strides.w]);
    }
    uint32_t big, small;
    split_weight_operand<kThreeTf32>(value, big, small);
    if (kThreeTf32) {
      weights[weight_words + word] = __uint_as_float(small);
    }
    weights[word] = __uint_as_float(big);
  }
  init_shared<kThreads, kConsumers, Storage>(p, layout, shared, taps, kernel_w, kGroupThreads,
                                             thread);

  const int64_t grid = gridDim.x;
  if (thread < kGroupThreads) {
    // Producer. Items round robin over the CTAs (b, b + grid, ...), so that the SMs write
    // about three images' outputs at any moment: a contiguous range of items per CTA made v0.1's
    // write stream 10% slower (benchmarks/NOTES.md, sixth session).
    // Two raw buffers: item k + 1's rows are loading while item k is split into its
    // stage. With one buffer (loads issued after the split, awaited before the next) the
    // producer paid the full load latency per item, under the output stream's write traffic
    // too, and set the pace: v0.1 0.44 ms with the split skipped altogether.
    int64_t item = blockIdx.x;
    const int channels = static_cast<int>(p.in_channels);
    copy_raw<kChannelsLast>(p, layout, item, 0, channels, raw, thread);
    copy_async_commit();
    for (int k = 0; item < layout.items; ++k, item += grid) {
      if (item + grid < layout.items) {
        copy_raw<kChannelsLast>(p, layout, item + grid, 0, channels,
                                raw + ((k + 1) & 1) * layout.raw_words, thread);
      }
      copy_async_commit();
      copy_async_wait_group<1>();  // item k's group; item k + 1's may still be in flight
      producer_sync();
      const int stage = k % layout.stages;
      if (k >= layout.stages) {
        barrier_wait(shared.empty_barrier(stage), ((k / layout.stages) - 1) & 1);
      }
      float* planes = reinterpret_cast<float*>(shared.stage(layout, stage));
      const Storage* item_raw = raw + (k & 1) * layout.raw_words;
      if (layout.channel_groups == 2) {
        stage_planes<kThreeTf32, kChannelsLast, 2, 4>(p, layout, item, channels, item_raw, planes,
                                                      thread);
      } else {
        stage_planes<kThreeTf32, kChannelsLast, 0, 4>(p, layout, item, channels, item_raw, planes,
                                                      thread);
      }
      fence_proxy_async();
      barrier_arrive(shared.full_barrier(stage));
      producer_sync();  // every thread is done reading raw[k & 1] before it is refilled
    }
    return;
  }

  // Consumers.
  const int consumer = consumer_group(thread);
  const int warp = (thread / 32) & 3;
  const int lane = thread & 31;
  const int out_width = static_cast<int>(p.out_width);
  const uint32_t weight_address = shared.base_address() + layout.weight_offset;
  const uint32_t small_weight_offset = layout.out_blocks * layout.k_steps * kStepBytes;
  const uint32_t small_plane_offset = layout.channel_groups * layout.plane_bytes;
  // A: 8 rows of 16 bytes per core matrix, 128 bytes to the next 8 rows, 1 KB to the other four
  // channels of the step. B: 8 positions per core matrix, 128 bytes to the next 8, one plane to
  // the other four channels.
  const uint64_t a_descriptor = matrix_descriptor(weight_address, 1024, 128);
  const uint64_t b_descriptor = matrix_descriptor(0, layout.plane_bytes, 128);
  const EpilogueWarp epilogue{shared.bias(layout), shared.slot_table(),
                              shared.epilogue(layout, consumer, kChannelsLast ? 0 : warp), warp,
                              lane};
  // Units are dealt round robin over the CTA's whole sequence: unit number g (counting the units
  // of earlier items, units_before) is consumer g % kConsumers's, which is also the turn order.
  int64_t units_before = 0;
  if (consumer == kConsumers - 1) {
    pass_turn<kConsumers>(consumer);  // unit 0 is consumer 0's
  }

  int k = 0;
  for (int64_t item = blockIdx.x; item < layout.items; item += grid, ++k) {
    const int stage = k % layout.stages;
    const int64_t image = item_image(layout, item);
    const int first_out_row = item_first_out_row(layout, item, static_cast<int>(image));
    const int rows_here = item_rows(p, layout, first_out_row);
    const int position_units =
        ((rows_here - 1) * layout.row_pitch + out_width + kUnitPositions - 1) / kUnitPositions;
    const int units = position_units * layout.out_blocks;
    const uint32_t stage_address = shared.stage_address(layout, stage);
    barrier_wait(shared.full_barrier(stage), (k / layout.stages) & 1);
    bool released = false;
    const int phase = static_cast<int>(units_before % kConsumers);
    for (int unit = (consumer - phase + kConsumers) % kConsumers; unit < units;
         unit += kConsumers) {
      const bool one_block = layout.out_blocks == 1;  // skips two integer divisions per unit
      const int block = one_block ? 0 : unit % layout.out_blocks;
      const int first_position = (one_block ? unit : unit / layout.out_blocks) * kUnitPositions;
      float acc[64];
      const uint64_t a_block = a_descriptor + ((block * layout.k_steps * kStepBytes) >> 4);
      const uint64_t b_unit = b_descriptor + ((stage_address + first_position * 16) >> 4);
      wait_for_turn<kConsumers>(consumer);  // one turn per unit
      issue_unit_chain<kThreeTf32>(acc, a_block, b_unit, shared.step_offsets(), layout.k_steps,
                                   small_plane_offset, small_weight_offset);
      pass_turn<kConsumers>(consumer);
      wgmma_wait_all();
      fence_accumulators(acc);
      if (unit + kConsumers >= units) {
        // This group's last MMA of the stage has read its operands: hand the stage back before
        // the epilogue so the producer refills it meanwhile.
        if (lane == 0) {
          barrier_arrive(shared.empty_barrier(stage));
        }
        released = true;
      }

      store_unit_in_layout<kChannelsLast, Storage>(
          p, layout, acc, epilogue, consumer,
          EpilogueUnit{image, first_out_row, rows_here, block, first_position});
    }
    if (!released && lane == 0) {
      barrier_arrive(shared.empty_barrier(stage));
    }
    units_before += units;
  }
  // The last unit's group passed the turn on; the group that would issue unit number
  // units_before takes it here.
  if (units_before % kConsumers == consumer) {
    wait_for_turn<kConsumers>(consumer);
  }
#else
  // Host dispatch launches this kernel only on compute capability 9.0 with the sm_90a code.
  __trap();
#endif
}

// Weights -> workspace for the streamed kernel, split, in the order its stages hold them: word
// ((chunk * parts + part) * out_blocks + block) * k_steps * 512 + step * 512 + half * 256 +
// row * 4 + e holds output channel block * 64 + row, input channel chunk * chunk_channels +
// 8 * (step / taps) + 4 * half + e, tap step % taps (A's K-major core matrices, as in the
// resident kernel). Zero past the tensor's channels.
template <bool kThreeTf32, typename Storage>
__global__ void split_streamed_weights_kernel(const ConvParams p, const Layout layout) {
  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);
  const int block_words = layout.k_steps * 512;               // one part of one channel block
  const int part_words = layout.out_blocks * block_words;     // one part of one chunk
  const int total = layout.chunks * part_words;               // < 2^31: make_streamed_layout
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
  float* __restrict__ split = static_cast<float*>(p.workspace);
  for (int index = blockIdx.x * blockDim.x + threadIdx.x; index < total;
       index += gridDim.x * blockDim.x) {
    const int chunk = index / part_words;
    const int in_part = index - chunk * part_words;
    const int block = in_part / block_words;
    const int word = in_part - block * block_words;
    const int step = word >> 9;
    const int64_t channel = block * kBlockChannels + ((word >> 2) & 63);
    const int64_t in_channel =
        chunk * layout.chunk_channels + 8 * (step / taps) + 4 * ((word >> 8) & 1) + (word & 3);
    const int tap = step % taps;
    float value = 0.0f;
    if (channel < p.out_channels && in_channel < p.in_channels) {
      value = StorageTraits<Storage>::load(
          weight[channel * p.weight_strides.n + in_channel * p.weight_strides.c +
                 (tap / kernel_w) * p.weight_strides.h + (tap % kernel_w) * p.weight_strides.w]);
    }
    const int64_t destination = int64_t{chunk} * layout.parts * part_words + in_part;
    uint32_t big, small;
    split_weight_operand<kThreeTf32>(value, big, small);
    if (kThreeTf32) {
      split[destination + part_words] = __uint_as_float(small);
    }
    split[destination] = __uint_as_float(big);
  }
}

template <bool kThreeTf32, bool kChannelsLast, typename Storage>
__global__ void __launch_bounds__(threads_for(kStreamedConsumers), 1)
    conv_hardswish_relu_wgmma_streamed_kernel(const ConvParams p, const Layout layout) {
#if FUSEDCONV_WGMMA_DEVICE
  constexpr int kConsumers = kStreamedConsumers;
  constexpr int kThreads = threads_for(kConsumers);
  const SharedStorage shared;
  Storage* raw = shared.raw<Storage>(layout);
  const int thread = threadIdx.x;
  const int kernel_w = static_cast<int>(p.kernel_w);
  const int taps = static_cast<int>(p.kernel_h) * kernel_w;
  // Full barriers: the producer's threads, plus the bulk copy's expected bytes (thread 0
  // arrives twice).
  init_shared<kThreads, kConsumers, Storage>(p, layout, shared, taps, kernel_w, kGroupThreads + 1,
                                           thread);

  const int64_t grid = gridDim.x;
  const int chunks = layout.chunks;
  const int in_channels = static_cast<int>(p.in_channels);
  if (thread < kGroupThreads) {
    // Producer: one stage per (item, chunk), in that order; the raw rows of the next one load
    // while this one is split.
    const char* split_weights = static_cast<const char*>(p.workspace);
    int64_t item = blockIdx.x;
    int chunk = 0;
    copy_raw<kChannelsLast>(p, layout, item, 0, min(layout.chunk_channels, in_channels), raw,
                            thread);
    copy_async_commit();
    for (int64_t sequence = 0; item < layout.items; ++sequence) {
      const bool last_chunk = chunk + 1 == chunks;
      const int64_t next_item = last_chunk ? item + grid : item;
      const int next_chunk = last_chunk ? 0 : chunk + 1;
      if (next_item < layout.items) {
        const int first = next_chunk * layout.chunk_channels;
        copy_raw<kChannelsLast>(p, layout, next_item, first,
                                min(layout.chunk_channels, in_channels - first),
                                raw + ((sequence + 1) & 1) * layout.raw_words, thread);
      }
      copy_async_commit();
      copy_async_wait_group<1>();  // this stage's rows; the next stage's may still be in flight
      producer_sync();
      const int stage = static_cast<int>(sequence % layout.stages);
      if (sequence >= layout.stages) {
        barrier_wait(shared.empty_barrier(stage), ((sequence / layout.stages) - 1) & 1);
      }
      const uint32_t stage_address = shared.stage_address(layout, stage);
      if (thread == 0) {
        const uint32_t full = shared.full_barrier(stage);
        barrier_arrive_expect_bytes(full, layout.a_stage_bytes);
        bulk_copy_to_shared(stage_address, split_weights + int64_t{chunk} * layout.a_stage_bytes,
                            layout.a_stage_bytes, full);
      }
      float* planes =
          reinterpret_cast<float*>(shared.stage(layout, stage) + layout.a_stage_bytes);
      const Storage* chunk_raw = raw + (sequence & 1) * layout.raw_words;
      const int channels = min(layout.chunk_channels, in_channels - chunk * layout.chunk_channels);
      if (layout.plane_positions <= kGroupThreads) {
        if (layout.channel_groups == 8) {  // 1x1 kernels: 32-channel stages
          stage_planes<kThreeTf32, kChannelsLast, 8, 1>(p, layout, item, channels, chunk_raw,
                                                        planes, thread);
        } else {
          stage_planes<kThreeTf32, kChannelsLast, 0, 1>(p, layout, item, channels, chunk_raw,
                                                        planes, thread);
        }
      } else if (layout.channel_groups == 2) {  // 8-channel stages: 3x3 and larger kernels
        stage_planes<kThreeTf32, kChannelsLast, 2, 4>(p, layout, item, channels, chunk_raw,
                                                      planes, thread);
      } else {
        stage_planes<kThreeTf32, kChannelsLast, 0, 4>(p, layout, item, channels, chunk_raw,
                                                      planes, thread);
      }
      fence_proxy_async();
      barrier_arrive(shared.full_barrier(stage));
      producer_sync();  // every thread is done reading this raw buffer before it is refilled
      item = next_item;
      chunk = next_chunk;
    }
    return;
  }

  // Consumers: consumer c takes unit c of every item (position unit c / out_blocks, channel block
  // c % out_blocks); an item of one unit leaves consumer 1 only releasing stages.
  const int consumer = consumer_group(thread);
  const int warp = (thread / 32) & 3;
  const int lane = thread & 31;
  const int out_width = static_cast<int>(p.out_width);
  const uint32_t small_weight_offset = layout.out_blocks * layout.k_steps * kStepBytes;
  const uint32_t small_plane_offset = layout.channel_groups * layout.plane_bytes;
  const uint64_t a_descriptor = matrix_descriptor(0, 1024, 128);
  const uint64_t b_descriptor = matrix_descriptor(0, layout.plane_bytes, 128);
  const EpilogueWarp epilogue{shared.bias(layout), shared.slot_table(),
                              shared.epilogue(layout, consumer, kChannelsLast ? 0 : warp), warp,
                              lane};
  const int block = consumer % layout.out_blocks;
  const int first_position = consumer / layout.out_blocks * kUnitPositions;
  int64_t sequence = 0;
  if (consumer == kConsumers - 1) {
    pass_turn<kConsumers>(consumer);  // consumer 0 goes first
  }
  for (int64_t item = blockIdx.x; item < layout.items; item += grid) {
    const int64_t image = item_image(layout, item);
    const int first_out_row = item_first_out_row(layout, item, static_cast<int>(image));
    const int rows_here = item_rows(p, layout, first_out_row);
    const bool active = first_position < (rows_here - 1) * layout.row_pitch + out_width;
    float totals[64];
    fill(totals, 0.0f);
    for (int chunk = 0; chunk < chunks; ++chunk, ++sequence) {
      const int stage = static_cast<int>(sequence % layout.stages);
      const uint32_t stage_address = shared.stage_address(layout, stage);
      barrier_wait(shared.full_barrier(stage), (sequence / layout.stages) & 1);
      wait_for_turn<kConsumers>(consumer);  // every chunk is one turn of each group, active or not
      if (active) {
        float acc[64];
        const uint64_t a_block =
            a_descriptor + ((stage_address + block * layout.k_steps * kStepBytes) >> 4);
        const uint64_t b_unit = b_descriptor + ((stage_address + layout.a_stage_bytes +
                                                 first_position * 16) >> 4);
        issue_unit_chain<kThreeTf32>(acc, a_block, b_unit, shared.step_offsets(), layout.k_steps,
                                     small_plane_offset, small_weight_offset);
        pass_turn<kConsumers>(consumer);
        wgmma_wait_all();
        fence_accumulators(acc);
        add_into(totals, acc);
      } else {
        pass_turn<kConsumers>(consumer);
      }
      if (lane == 0) {
        barrier_arrive(shared.empty_barrier(stage));  // this warp is done with the stage
      }
    }
    if (active) {
      store_unit_in_layout<kChannelsLast, Storage>(
          p, layout, totals, epilogue, consumer,
          EpilogueUnit{image, first_out_row, rows_here, block, first_position});
    }
  }
  if (consumer == 0) {
    wait_for_turn<kConsumers>(consumer);  // the last consumer's last pass
  }
#else
  __trap();
#endif
}

}  // namespace wgmma
}  // namespace fusedconv
