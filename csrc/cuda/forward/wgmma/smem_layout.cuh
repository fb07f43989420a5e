// The dynamic shared memory of both wgmma kernels, carved once per CTA: a fixed header (the
// stages' full and empty mbarriers, the per-step B offsets, the epilogue's slot table) and then
// the regions at the Layout's byte offsets (wgmma_plan.cu assigns them, per variant):
//   resident: header | split weights (all parts, blocks, steps) | bias | stages | raw rows x 2 |
//             epilogue buffers
//   streamed: header | bias | stages (a chunk's split weights, then its planes) | raw rows x 2 |
//             epilogue buffers
#pragma once

#include <cstdint>

#include "common/ptx.cuh"
#include "forward/wgmma/traits.h"

namespace fusedconv {
namespace wgmma {

// The CTA's dynamic shared memory (both kernels launch with layout.shared_bytes of it).
extern __shared__ __align__(128) unsigned char dynamic_shared[];

// Stateless: every region is an offset of dynamic_shared, so the compiler sees shared-window
// addresses (keeping the pointer in a struct member measured 1-2% more instructions in the
// kernels: layout fields reloaded from parameter space).
struct SharedStorage {
  __device__ __forceinline__ uint32_t base_address() const {
    return shared_address(dynamic_shared);
  }
  // Stage `stage`'s mbarriers: full (the producer's stage is ready), empty (consumed).
  __device__ __forceinline__ uint32_t full_barrier(int stage) const {
    return base_address() + 8 * stage;
  }
  __device__ __forceinline__ uint32_t empty_barrier(int stage) const {
    return base_address() + kMaxStages * 8 + 8 * stage;
  }
  __device__ __forceinline__ int* step_offsets() const {
    return reinterpret_cast<int*>(dynamic_shared + kTapTableOffset);
  }
  __device__ __forceinline__ uint8_t* slot_table() const {
    return dynamic_shared + kSlotTableOffset;
  }
  __device__ __forceinline__ float* weights(const Layout& layout) const {
    return reinterpret_cast<float*>(dynamic_shared + layout.weight_offset);
  }
  __device__ __forceinline__ float* bias(const Layout& layout) const {
    return reinterpret_cast<float*>(dynamic_shared + layout.bias_offset);
  }
  // Stage `stage`'s first byte (the streamed variant's split weights, then its planes).
  __device__ __forceinline__ unsigned char* stage(const Layout& layout, int stage) const {
    return dynamic_shared + layout.stage_offset + stage * layout.stage_bytes;
  }
  __device__ __forceinline__ uint32_t stage_address(const Layout& layout, int stage) const {
    return base_address() + layout.stage_offset + stage * layout.stage_bytes;
  }
  template <typename Storage>
  __device__ __forceinline__ Storage* raw(const Layout& layout) const {
    return reinterpret_cast<Storage*>(dynamic_shared + layout.raw_offset);
  }
  // Consumer warp `warp` of group `consumer`: its kEpilogueRows x kEpiloguePitch buffer.
  __device__ __forceinline__ float* epilogue(const Layout& layout, int consumer,
                                             int warp) const {
    return reinterpret_cast<float*>(dynamic_shared + layout.epilogue_offset) +
           (consumer * 4 + warp) * kEpilogueRows * kEpiloguePitch;
  }
};

}  // namespace wgmma
}  // namespace fusedconv
