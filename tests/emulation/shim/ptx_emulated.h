// csrc/cuda/common/ptx.cuh's wrappers on the host (emulate_source.py includes this instead):
// asynchronous copies queued per thread and carried out only when a wait lets them complete (a
// read of shared memory before its wait sees the NaN poison), and the warp-wide mma.sync /
// ldmatrix through a per-warp exchange, by the PTX ISA's fragment layouts. Products of TF32 and
// 16-bit operands are exact in float32; the sums are taken in float32 in k order (the tensor
// core's own adder rounds differently, within the tests' tolerances).
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <type_traits>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace emulation {

// The calling thread's warp's exchange words (32 lanes x 16 words) and the offset of a shared
// address in the CTA's dynamic shared memory (32-bit, as __cvta_generic_to_shared gives).
uint32_t* warp_exchange();
uint32_t shared_offset(const void* pointer);
void* shared_pointer(uint32_t offset);

struct PendingCopy {
  void* destination;
  const void* source;
  int bytes, source_bytes;
};

// This thread's committed groups of copies, oldest first, and its open group.
struct CopyQueue {
  std::deque<std::vector<PendingCopy>> committed;
  std::vector<PendingCopy> open;
};

inline CopyQueue& copy_queue() {
  thread_local CopyQueue queue;
  return queue;
}

inline void complete(const std::vector<PendingCopy>& group) {
  for (const PendingCopy& c : group) {
    std::memset(c.destination, 0, c.bytes);
    if (c.source_bytes > 0) {
      std::memcpy(c.destination, c.source, c.source_bytes);
    }
  }
}

inline void queue_copy(void* destination, const void* source, int bytes, int source_bytes) {
  if (reinterpret_cast<uintptr_t>(destination) % bytes != 0 ||
      (source_bytes > 0 && reinterpret_cast<uintptr_t>(source) % bytes != 0)) {
    __builtin_trap();  // the GPU's misaligned-address fault
  }
  copy_queue().open.push_back({destination, source, bytes, source_bytes < bytes ? source_bytes
                                                                                   : bytes});
}

inline float tf32_value(uint32_t bits) {  // the tensor core reads the top 19 bits
  const uint32_t kept = bits & 0xffffe000u;
  float value;
  std::memcpy(&value, &kept, sizeof value);
  return value;
}

inline uint32_t tf32_rna(float x) {  // cvt.rna.tf32.f32: ties away from zero
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) {
    return bits & 0xffffe000u;
  }
  return (bits + 0x1000u) & 0xffffe000u;
}

inline float to_float(__half h) { return __half2float(h); }
inline float to_float(__nv_bfloat16 h) { return __bfloat162float(h); }

template <typename Half>
inline float half_value(uint32_t word, int which) {
  Half half;
  const uint16_t bits = static_cast<uint16_t>(which == 0 ? word & 0xffffu : word >> 16);
  std::memcpy(&half, &bits, sizeof bits);
  return to_float(half);
}

// Publishes the calling lane's six fragment words (A's four, B's two) to its warp and waits
// for every lane's; returns the warp's exchange words (lane l's at 16 l).
inline uint32_t* exchange_fragments(const uint32_t (&mine)[6]) {
  uint32_t* words = warp_exchange();
  std::memcpy(words + 16 * lane_id(), mine, sizeof mine);
  sync_warp();
  return words;
}

}  // namespace emulation

namespace fusedconv {

inline void copy_async_4(void* shared_destination, const void* source, int src_bytes) {
  emulation::queue_copy(shared_destination, source, 4, src_bytes);
}

inline void copy_async_16(void* shared_destination, const void* source, int src_bytes) {
  emulation::queue_copy(shared_destination, source, 16, src_bytes);
}

inline void copy_async_16_l1(void* shared_destination, const void* source, int src_bytes) {
  emulation::queue_copy(shared_destination, source, 16, src_bytes);
}

inline void copy_async_commit() {
  emulation::CopyQueue& queue = emulation::copy_queue();
  queue.committed.push_back(std::move(queue.open));
  queue.open.clear();
}

template <int kPending>
inline void copy_async_wait_group() {
  emulation::CopyQueue& queue = emulation::copy_queue();
  while (queue.committed.size() > static_cast<size_t>(kPending)) {
    emulation::complete(queue.committed.front());
    queue.committed.pop_front();
  }
}

inline void copy_async_wait_all() {  // commits the open group too
  copy_async_commit();
  copy_async_wait_group<0>();
}

// C += A x B for lane l = 4 g + t's C elements C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]
// (m16n8, both MMA shapes), exact products summed in float in k order, then a warp barrier:
// every lane has read the exchange before the next one overwrites it.
template <int kK, typename A, typename B>
inline void accumulate_fragment(float (&acc)[4], unsigned lane, const A& a, const B& b) {
  const int g = static_cast<int>(lane / 4), t = static_cast<int>(lane % 4);
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + i % 2;
    float sum = acc[i];
    for (int k = 0; k < kK; ++k) {
      sum += a(row, k) * b(k, col);
    }
    acc[i] = sum;
  }
  emulation::sync_warp();
}

// m16n8k8 TF32: lane l = 4 g + t holds A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]; B[t][g],
// B[t+4][g]; C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
inline void mma_tf32(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                     uint32_t b0, uint32_t b1) {
  const unsigned lane = emulation::lane_id();
  const uint32_t* words = emulation::exchange_fragments({a0, a1, a2, a3, b0, b1});
  const auto a = [&](int row, int col) {
    return emulation::tf32_value(
        words[16 * ((row % 8) * 4 + col % 4) + (row >= 8 ? 1 : 0) + (col >= 4 ? 2 : 0)]);
  };
  const auto b = [&](int k, int n) {
    return emulation::tf32_value(words[16 * (n * 4 + k % 4) + 4 + (k >= 4 ? 1 : 0)]);
  };
  accumulate_fragment<8>(acc, lane, a, b);
}

inline void mma_tf32(float (&acc)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  mma_tf32(acc, a.x, a.y, a.z, a.w, b0, b1);
}

// m8n8k4 FP64: lane l holds A[l / 4][l % 4], B[l % 4][l / 4], D[l / 4][2 (l % 4) + {0, 1}].
inline void dmma_m8n8k4(double (&d)[2], double a, double b) {
  uint32_t* words = emulation::warp_exchange();
  const unsigned lane = emulation::lane_id();
  std::memcpy(words + 16 * lane, &a, sizeof a);
  std::memcpy(words + 16 * lane + 2, &b, sizeof b);
  emulation::sync_warp();
  const int row = static_cast<int>(lane / 4);
  for (int i = 0; i < 2; ++i) {
    const int col = 2 * static_cast<int>(lane % 4) + i;
    double sum = d[i];
    for (int k = 0; k < 4; ++k) {
      double av, bv;
      std::memcpy(&av, words + 16 * (row * 4 + k), sizeof av);
      std::memcpy(&bv, words + 16 * (col * 4 + k) + 2, sizeof bv);
      sum += av * bv;
    }
    d[i] = sum;
  }
  emulation::sync_warp();
}

inline uint32_t shared_address(const void* pointer) { return emulation::shared_offset(pointer); }

// ldmatrix x4: lanes 8j..8j+7 give matrix j's row addresses; lane l receives row l / 4,
// elements 2 (l % 4) + {0, 1} of each matrix.
inline void load_matrix_x4(uint32_t (&fragment)[4], uint32_t address) {
  uint32_t* words = emulation::warp_exchange();
  const unsigned lane = emulation::lane_id();
  words[16 * lane] = address;
  emulation::sync_warp();
  for (int j = 0; j < 4; ++j) {
    const uint32_t row_address = words[16 * (8 * j + lane / 4)];
    if (row_address % 16 != 0) {
      __builtin_trap();  // ldmatrix rows are 16-byte aligned
    }
    std::memcpy(&fragment[j],
                static_cast<const char*>(emulation::shared_pointer(row_address)) + 4 * (lane % 4),
                sizeof(uint32_t));
  }
  emulation::sync_warp();
}

// m16n8k16 16-bit: lane l = 4 g + t holds A[g][2t..], A[g+8][2t..], A[g][2t+8..],
// A[g+8][2t+8..] (two elements a word, the lower index in the low half), B[2t..][g],
// B[2t+8..][g]; C as m16n8k8.
template <bool kBFloat16>
inline void mma_16bit(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const unsigned lane = emulation::lane_id();
  const uint32_t* words = emulation::exchange_fragments({a[0], a[1], a[2], a[3], b0, b1});
  using Half = typename std::conditional<kBFloat16, __nv_bfloat16, __half>::type;
  const auto a_at = [&](int row, int col) {
    const int holder = (row % 8) * 4 + (col % 8) / 2;
    const int word = (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0);
    return emulation::half_value<Half>(words[16 * holder + word], col % 2);
  };
  const auto b_at = [&](int k, int n) {
    const int holder = n * 4 + (k % 8) / 2;
    return emulation::half_value<Half>(words[16 * holder + 4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  accumulate_fragment<16>(acc, lane, a_at, b_at);
}

}  // namespace fusedconv
