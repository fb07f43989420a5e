// Consumer mainloop of the wgmma forward: the per-step B offsets, the turn order of the
// consumer warpgroups and one unit's chain of warpgroup MMAs.
#pragma once

#include <cstdint>

#include "common/ptx.cuh"
#include "forward/wgmma/traits.h"

namespace fusedconv {
namespace wgmma {

// B's byte offset of each k step inside a stage's planes: its 8 channels' first plane, then the
// tap's shift. One entry past the last step (0): the MMA loops load each entry a step ahead.
__device__ __forceinline__ void write_step_offsets(const Layout& layout, int taps,
                                                   int kernel_w, int* step_offsets, int thread) {
  for (int step = thread; step <= layout.k_steps; step += blockDim.x) {
    const int tap = step % taps;
    step_offsets[step] = step == layout.k_steps
                             ? 0
                             : 2 * (step / taps) * layout.plane_bytes +
                                   ((tap / kernel_w) * layout.row_pitch + tap % kernel_w) * 16;
  }
}

#if FUSEDCONV_WGMMA_DEVICE

constexpr int kFirstTurnBarrier = 2;  // named barriers 2, 3, 4: consumer 0's, 1's, 2's MMA turn

// The consumers issue their MMA chains in turns, 0, 1, (2,) 0, ... (CUTLASS's ping-pong order):
// the tensor core then runs one group's chain after the other instead of interleaving them, so
// each group finishes its chain early and its epilogue (or its chunk bookkeeping) overlaps the
// others' MMAs instead of all groups idling the tensor core at once.
// wait_for_turn before issuing a chain, pass_turn right after issuing it (not after it
// completes); the last consumer passes once before its first turn.
// Barrier numbers in a register, not branches to immediates: a branch on the group number in
// front of the MMA chain made ptxas serialize the chain's wgmmas ("compiler-inserted WG.AR in
// divergent path", measured 30% slower on v0.1). The cost: ptxas reserves all 16 named
// barriers, which one CTA per SM does not mind.
template <int kConsumers>
__device__ __forceinline__ void wait_for_turn(int consumer) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(kFirstTurnBarrier + consumer), "n"(2 * kGroupThreads)
               : "memory");
}

// To consumer + 1, the last consumer to consumer 0.
template <int kConsumers>
__device__ __forceinline__ void pass_turn(int consumer) {
  const int next = consumer + 1 == kConsumers ? 0 : consumer + 1;
  asm volatile("bar.arrive %0, %1;\n" ::"r"(kFirstTurnBarrier + next), "n"(2 * kGroupThreads)
               : "memory");
}

// One unit's MMA chain, committed as one group: step 0 overwrites the accumulators, the rest add.
// The loop stays rolled (k_steps is a run-time value, and one copy of the loop keeps ptxas from
// adding fences between unrolled copies). Each step's table entry is loaded one step ahead:
// loaded in its own step, the shared-memory latency sat between every two steps' MMA issues
// (ncu: the loop's top stall on v0.1).
template <bool kThreeTf32>
__device__ __forceinline__ void issue_unit_chain(float (&acc)[64], uint64_t a_block,
                                                 uint64_t b_unit, const int* step_offsets,
                                                 int k_steps, uint32_t small_plane_offset,
                                                 uint32_t small_weight_offset) {
  fence_accumulators(acc);
  wgmma_fence();
  const uint64_t b_first = b_unit + (step_offsets[0] >> 4);
  wgmma_m64n128k8_tf32<0>(acc, a_block, b_first);
  if (kThreeTf32) {
    wgmma_m64n128k8_tf32<1>(acc, a_block, b_first + (small_plane_offset >> 4));
    wgmma_m64n128k8_tf32<1>(acc, a_block + (small_weight_offset >> 4), b_first);
  }
  int next_offset = step_offsets[1];
#pragma unroll 1
  for (int step = 1; step < k_steps; ++step) {
    const int offset = next_offset;
    next_offset = step_offsets[step + 1];  // the table ends one entry past the last step
    const uint64_t a_big = a_block + ((step * kStepBytes) >> 4);
    const uint64_t b_big = b_unit + (offset >> 4);
    wgmma_m64n128k8_tf32<1>(acc, a_big, b_big);
    if (kThreeTf32) {
      wgmma_m64n128k8_tf32<1>(acc, a_big, b_big + (small_plane_offset >> 4));
      wgmma_m64n128k8_tf32<1>(acc, a_big + (small_weight_offset >> 4), b_big);
    }
  }
  wgmma_commit();
}

#endif  // FUSEDCONV_WGMMA_DEVICE

}  // namespace wgmma
}  // namespace fusedconv
