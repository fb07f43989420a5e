// Fused forward on Hopper (sm_90a): an implicit GEMM on warpgroup MMAs (wgmma), DESIGN.md
// "Kernels". The mma.sync kernel (conv_fwd_tensorcore.cu) measured 0.62-0.72 ms on v0.1,
// issue-bound at ~13 instructions per MMA (fragment loads, per-step operand splits, addresses);
// here the MMA loop issues nothing but wgmma and descriptor adds.
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
//   warpgroup 0, producer: cp.async of the item's raw NCHW input rows (double-buffered, one
//     stage ahead), then one pass that zero-pads, splits every value into TF32 big and small
//     parts and writes a stage's K-major planes; mbarriers hand stages to the consumers (full)
//     and back (empty).
//   the other warpgroups, consumers: take the 128-position units round robin and issue their
//     MMA chains in turns; per unit and k step, 3 wgmma (big*big, big*small, small*big:
//     3xTF32) into 64 float32 accumulators per thread, then bias + activation, staged per warp
//     through shared memory so that every store instruction writes 256 contiguous bytes of an
//     output row.
// The two variants (resident and streamed weights) are described at WgmmaLayout below.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"
#include "fusedconv/tensorcore.cuh"

// The device pass that has wgmma: nvcc defines __CUDA_ARCH_FEAT_SM90_ALL for sm_90a only.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FUSEDCONV_WGMMA_DEVICE 1
#endif

namespace fusedconv {
namespace {

using namespace tensorcore;

constexpr int kGroupThreads = 128;  // one warpgroup
// Consumer warpgroups per CTA, beside the producer's one. The resident kernel: 3, so that two
// other groups' MMA chains run while one stores its epilogue and issues its next chain (H100,
// same build otherwise: v0.1 0.289 -> 0.261 ms; its consumers fit the 128 registers of 512
// threads). The streamed kernel: 2, whose consumers hold accumulators and totals (166
// registers).
constexpr int kResidentConsumers = 3;
constexpr int kStreamedConsumers = 2;
__host__ __device__ constexpr int threads_for(int consumers) {
  return (1 + consumers) * kGroupThreads;
}
constexpr int kUnitPositions = 128;  // wgmma N
constexpr int kBlockChannels = 64;   // wgmma M
constexpr int kStepBytes = kBlockChannels * 8 * 4;  // one k8 step of A: 2 KB
constexpr int kMaxStages = 3;
// Per consumer warp, 8 channels x a unit's (at most 128) outputs; 8 words of padding move each
// row 8 banks on, so the fragment writes (8 rows x 4 pairs per instruction) don't conflict, and
// hold the 4 spare pairs of dropped columns (write_slot_table).
constexpr int kEpilogueRows = 8;
constexpr int kEpiloguePitch = kUnitPositions + 8;
constexpr int epilogue_bytes(int consumers) {
  return consumers * 4 * kEpilogueRows * kEpiloguePitch * 4;
}
// 3xTF32 sums 3 MMAs per k step in one accumulator, and the tensor core's accumulation
// truncates: the mma.sync kernel measured 1.05e-5 relative error after 375 MMAs. 32 steps
// (96 MMAs; v0.1 has 9) keeps the fast path well inside 1e-5.
constexpr int kMaxKSteps = 32;
// Shared memory header: full[kMaxStages] and empty[kMaxStages] mbarriers, then the per-step B
// offsets, then the epilogue's slot table (at kSlotTableOffset); the weights start at
// kHeaderBytes.
constexpr int kSlotTableOffset = 512;
constexpr int kMaxPositionUnits = 16;  // 128-position units per item, all output channel blocks
constexpr int kHeaderBytes = kSlotTableOffset + kMaxPositionUnits * 64;

// Two variants share the staging, the MMAs and the epilogue:
//   resident (conv_hardswish_relu_wgmma_kernel): every input channel in one stage and every
//     split weight in shared memory for the whole kernel; the consumers take an item's units
//     round robin. Up to kMaxKSteps k steps.
//   streamed (conv_hardswish_relu_wgmma_streamed_kernel): a stage holds one chunk of input
//     channels and that chunk's split weights (a prep kernel writes them once per call to a
//     workspace in shared-memory order; the producer fetches them with one bulk copy per
//     stage); an item is at most 2 units, one per consumer, which keeps its accumulators over
//     the item's chunks and adds each chunk's MMA sum into float32 totals (so the truncating
//     tensor-core accumulation never runs more than one chunk's k steps). Any input channel
//     count: the 56x56 / 32-64 channel and 1x1 / 128 channel cases that the resident kernel
//     cannot hold.
struct WgmmaLayout {
  bool streamed;        // the variant
  int parts;            // operand parts: 2 (big, small: 3xTF32) or 1 (TF32)
  int out_blocks;       // ceil(out_channels / 64)
  int chunk_channels;   // input channels per stage: a multiple of 8 (all of them if resident)
  int chunks;           // stages per item: ceil(in_channels / chunk_channels)
  int channel_groups;   // planes of 4 input channels per part and stage: chunk_channels / 4
  int k_steps;          // k steps per stage: chunk_channels / 8 * taps, step = eighth * taps + tap
  int a_stage_bytes;    // streamed: a stage's split weights (every part and channel block)
  int tile_rows;        // output rows per item
  int row_blocks;       // ceil(out_height / tile_rows)
  FastDivisor row_block_divisor;  // row_blocks, for item -> (image, row block); items < 2^31
  int staged_rows;      // tile_rows + kernel_h - 1
  int row_pitch;        // positions per staged row: the padded input width, rounded up to even
  int plane_positions;  // positions per plane, a multiple of 8, past every unit's last tap
  int raw_pitch;        // elements per raw row: in_width rounded up to 16 bytes (cp.async)
  int raw_words;        // elements per raw buffer (two of them), of the input's storage type
  int stages;
  int plane_bytes;      // plane_positions * 16
  int stage_bytes;      // parts * channel_groups * plane_bytes
  int weight_offset;    // byte offsets in dynamic shared memory
  int bias_offset;
  int stage_offset;
  int raw_offset;
  int epilogue_offset;
  int shared_bytes;
  int grid;
  float inverse_row_pitch;
  int64_t items;        // batch * row_blocks
};

constexpr int kTapTableOffset = 2 * kMaxStages * 8;

#if FUSEDCONV_WGMMA_DEVICE

constexpr int kProducerBarrier = 1;  // named barrier of warpgroup 0 (0 is __syncthreads)
constexpr int kFirstTurnBarrier = 2;  // named barriers 2, 3, 4: consumer 0's, 1's, 2's MMA turn

__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

__device__ __forceinline__ void barrier_init(uint32_t barrier, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(barrier), "r"(count));
}

__device__ __forceinline__ void barrier_arrive(uint32_t barrier) {
  asm volatile(
      "{\n"
      ".reg .b64 state;\n"
      "mbarrier.arrive.shared::cta.b64 state, [%0];\n"
      "}\n" ::"r"(barrier)
      : "memory");
}

// Blocks until the barrier's phase of the given parity has completed.
__device__ __forceinline__ void barrier_wait(uint32_t barrier, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(barrier),
      "r"(parity)
      : "memory");
}

// Shared-memory writes of the generic proxy (st.shared, cp.async) become visible to wgmma, which
// reads through the async proxy, only after this fence in the writing thread.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// The arrival of the thread that starts a bulk copy: the barrier's phase then also waits for
// `bytes` bytes of asynchronous copies to land.
__device__ __forceinline__ void barrier_arrive_expect_bytes(uint32_t barrier, uint32_t bytes) {
  asm volatile(
      "{\n"
      ".reg .b64 state;\n"
      "mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n"
      "}\n" ::"r"(barrier),
      "r"(bytes)
      : "memory");
}

// One bulk (TMA) copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from global
// to shared memory, completing on `barrier` (CUTLASS's SM90_BULK_COPY_G2S).
__device__ __forceinline__ void bulk_copy_to_shared(uint32_t destination, const void* source,
                                                    uint32_t bytes, uint32_t barrier) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      ::"r"(destination), "l"(source), "r"(bytes), "r"(barrier)
      : "memory");
}

// The consumers issue their MMA chains in turns, 0, 1, (2,) 0, ... (CUTLASS's ping-pong order):
// the tensor core then runs one group's chain after the other instead of interleaving them, so
// each group finishes its chain early and its epilogue (or its chunk bookkeeping) overlaps the
// others' MMAs instead of all groups idling the tensor core at once.
// wait_for_turn before issuing a chain, pass_turn right after issuing it (not after it
// completes); the last consumer passes once before its first turn.
// Barrier numbers in a register, not branches to immediates: a branch on the group number in
// front of the MMA chain made ptxas serialize the chain's wgmmas ("compiler-inserted WG.AR in
// divergent path"; v0.1 0.29 -> 0.38 ms under ncu). The cost: ptxas reserves all 16 named
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

__device__ __forceinline__ void producer_sync() {
  asm volatile("bar.sync %0, %1;\n" ::"n"(kProducerBarrier), "n"(kGroupThreads) : "memory");
}

__device__ __forceinline__ void copy_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int kPending>
__device__ __forceinline__ void copy_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

// Keeps the compiler from moving accumulator accesses across the asynchronous MMAs (CUTLASS's
// warpgroup_fence_operand).
__device__ __forceinline__ void fence_accumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    asm volatile("" : "+f"(d[i])::"memory");
  }
}

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

// Shared-memory matrix descriptor, no swizzle, K-major: core matrices of 8 rows x 16 bytes
// stored as 128 contiguous bytes; `k_stride` bytes to the next core matrix along K (leading
// byte offset), `row_stride` bytes to the next 8 rows (stride byte offset). The start address
// occupies the low 14 bits (address / 16), so a descriptor moves by adding bytes / 16.
__device__ __forceinline__ uint64_t matrix_descriptor(uint32_t address, uint32_t k_stride,
                                                      uint32_t row_stride) {
  return static_cast<uint64_t>((address & 0x3ffff) >> 4) |
         (static_cast<uint64_t>(k_stride >> 4) << 16) |
         (static_cast<uint64_t>(row_stride >> 4) << 32);
}

// d (+)= A * B for one m64n128k8 TF32 wgmma, A and B from shared memory; the 64 accumulators
// per thread in the PTX fragment order. kAccumulate == 0 overwrites d.
template <int kAccumulate>
__device__ __forceinline__ void wgmma_m64n128k8_tf32(float (&d)[64], uint64_t desc_a,
                                                     uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "n"(kAccumulate));
}

// The image of `item` and its first output row. 32-bit quotients by a precomputed divisor: the
// int64 division it replaced was a ~70-instruction subroutine call, made per item by the
// producer (twice) and by every consumer.
__device__ __forceinline__ int item_image(const WgmmaLayout& layout, int64_t item) {
  return static_cast<int>(layout.row_block_divisor.quotient(static_cast<uint32_t>(item)));
}

__device__ __forceinline__ int item_first_out_row(const WgmmaLayout& layout, int64_t item,
                                                  int image) {
  return (static_cast<int>(item) - image * layout.row_blocks) * layout.tile_rows;
}

// Producer: cp.async of the raw input rows of `item` (those inside the image) of input channels
// first_channel .. first_channel + channels - 1 into `raw`, laid out
// [channel][staged row][raw_pitch], in the input's storage type.
template <typename Storage>
__device__ __forceinline__ void copy_raw_rows(const ConvParams& p, const WgmmaLayout& layout,
                                              int64_t item, int first_channel, int channels,
                                              Storage* raw, int thread) {
  const int64_t image = item_image(layout, item);
  const int first_row = item_first_out_row(layout, item, static_cast<int>(image)) -
                        static_cast<int>(p.pad_top);
  const int height = static_cast<int>(p.in_height);
  const int width = static_cast<int>(p.in_width);
  const int row_begin = first_row < 0 ? -first_row : 0;
  const int row_end = height - first_row < layout.staged_rows ? height - first_row
                                                               : layout.staged_rows;
  const int rows = row_end - row_begin;
  if (rows <= 0) {
    return;
  }
  const Storage* source = static_cast<const Storage*>(p.input) +
                          (image * p.in_channels + first_channel) * height * width;
  // Quotients through float reciprocals (exact: indices stay below 2^21, make_wgmma_layout):
  // the integer division subroutine cost more than the copies.
  const float inverse_rows = __frcp_rn(static_cast<float>(rows));
  // Elements per copy: 16 bytes where rows are 16-byte multiples, else 4 bytes (one float, or a
  // pair of 2-byte elements where the width is even), else one 2-byte element by a plain copy
  // (odd widths: below cp.async's 4-byte minimum; visible to the other producer threads after
  // the producer's barrier, like the rest).
  constexpr int kPer16Bytes = 16 / static_cast<int>(sizeof(Storage));
  constexpr int kPer4Bytes = 4 / static_cast<int>(sizeof(Storage));
  const int per_copy =
      width % kPer16Bytes == 0 ? kPer16Bytes : (width % kPer4Bytes == 0 ? kPer4Bytes : 1);
  const int line_items = width / per_copy;
  const float inverse_line_items = __frcp_rn(static_cast<float>(line_items));
  const int total = channels * rows * line_items;
  for (int index = thread; index < total; index += kGroupThreads) {
    const int line = __float2int_rz((index + 0.5f) * inverse_line_items);
    const int item_in_line = index - line * line_items;
    const int channel = __float2int_rz((line + 0.5f) * inverse_rows);
    const int row = row_begin + line - channel * rows;
    const int col = per_copy * item_in_line;
    Storage* destination = raw + (channel * layout.staged_rows + row) * layout.raw_pitch + col;
    const Storage* from = source + (channel * height + first_row + row) * width + col;
    if (per_copy == kPer16Bytes) {
      copy_async_16(destination, from, 16);
    } else if (per_copy == kPer4Bytes) {
      copy_async_4(destination, from, 4);
    } else {
      *destination = *from;
    }
  }
}

// Producer: raw rows of `channels` input channels -> a stage's K-major planes, zero outside the
// image and past those channels, every position of every plane written (the consumers' dropped
// columns read them too).
// kGroups > 0 fixes the number of 4-channel groups at compile time (2: in_channels <= 8, the
// KernelBench shapes), 0 reads it from the layout. Layout fields are copied to registers first:
// read through the reference they were reloaded from parameter space in the loop, and the
// run-time group loop cost ~4x the instructions of the unrolled one (ncu: the producer, not
// the MMAs, set the pace at 0.31 ms). kBatch positions per thread and pass (below): 4, or 1
// where a stage has at most one position per thread (the 1x1 stages: with 4, three of every
// four batch slots were empty but still cost their predicated loads).
// float16 and bfloat16 values are exact in TF32 (their significands have at most 11 bits), so
// their small parts are zero and one TF32 product per multiply is exact.
template <bool kThreeTf32, int kGroups, int kBatch, typename Storage>
__device__ __forceinline__ void stage_planes(const ConvParams& p, const WgmmaLayout& layout,
                                             int64_t item, int channels, const Storage* raw,
                                             float* stage, int thread) {
  const int first_row = item_first_out_row(layout, item, item_image(layout, item)) -
                        static_cast<int>(p.pad_top);
  const int height = static_cast<int>(p.in_height);
  const int width = static_cast<int>(p.in_width);
  const int pad_left = static_cast<int>(p.pad_left);
  const int groups = kGroups > 0 ? kGroups : layout.channel_groups;
  const int positions = layout.plane_positions;
  const int row_pitch = layout.row_pitch;
  const int raw_pitch = layout.raw_pitch;
  const int staged_rows = layout.staged_rows;
  const float inverse_row_pitch = layout.inverse_row_pitch;
  const int plane_words = positions * 4;
  const int raw_channel_words = staged_rows * raw_pitch;
  float* small_planes = stage + groups * plane_words;
  // kBatch positions per thread and pass, all their raw values loaded before any is split or
  // stored: one warp per scheduler does this work, and position by position its shared-memory
  // round trips serialized (ncu: the producer busy throughout, consumers waiting on it).
  for (int base = thread; base < positions; base += kBatch * kGroupThreads) {
    // Where each position's raw values are and how many of its channels are real (none outside
    // the image), once for all channel groups: per group, the run-time group loop of the 1x1 /
    // 32-channel stages spent most of the producer's instructions on it (ncu: consumers waiting
    // on `full` in 38% of samples).
    int source_offset[kBatch];
    int present[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int position = base + b * kGroupThreads;
      // position / row_pitch exactly (positions stay far below 2^21).
      const int row = __float2int_rz((position + 0.5f) * inverse_row_pitch);
      const int col = position - row * row_pitch - pad_left;
      const bool inside = position < positions && row < staged_rows && first_row + row >= 0 &&
                          first_row + row < height && col >= 0 && col < width;
      present[b] = inside ? channels : 0;
      source_offset[b] = inside ? row * raw_pitch + col : 0;
    }
#pragma unroll
    for (int group = 0; group < (kGroups > 0 ? kGroups : groups); ++group) {
      float values[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int channel = 4 * group + e;
          values[b][e] = channel < present[b]
                             ? StorageTraits<Storage>::load(
                                   raw[source_offset[b] + channel * raw_channel_words])
                             : 0.0f;
        }
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int position = base + b * kGroupThreads;
        if (position >= positions) {
          break;
        }
        uint32_t big[4], small[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (kThreeTf32) {
            split_input(values[b][e], big[e], small[e]);
          } else {
            big[e] = to_tf32(values[b][e]);
          }
        }
        const int word = group * plane_words + 4 * position;
        *reinterpret_cast<uint4*>(stage + word) = make_uint4(big[0], big[1], big[2], big[3]);
        if (kThreeTf32) {
          *reinterpret_cast<uint4*>(small_planes + word) =
              make_uint4(small[0], small[1], small[2], small[3]);
        }
      }
    }
  }
}

// B's byte offset of each k step inside a stage's planes: its 8 channels' first plane, then the
// tap's shift. One entry past the last step (0): the MMA loops load each entry a step ahead.
__device__ __forceinline__ void write_step_offsets(const WgmmaLayout& layout, int taps,
                                                   int kernel_w, int* step_offsets, int thread) {
  for (int step = thread; step <= layout.k_steps; step += blockDim.x) {
    const int tap = step % taps;
    step_offsets[step] = step == layout.k_steps
                             ? 0
                             : 2 * (step / taps) * layout.plane_bytes +
                                   ((tap / kernel_w) * layout.row_pitch + tap % kernel_w) * 16;
  }
}

// The epilogue's slot table, written once per CTA: byte ((u * 4 + t) * 16 + j) is the run index
// (below) of position pair 8 j + 2 t of position unit u (staged positions u * 128 on), or for a
// dropped column kUnitPositions + 2 t, a spare pair past every run that only the threads of
// pair column t write (one spare for all would be written by several threads at once, where a
// unit spans rows: a benign race that racecheck reports). It is the same for every item, and read
// once per unit it replaced ~7 instructions per pair (position -> row, column, index, validity).
__device__ __forceinline__ void write_slot_table(const ConvParams& p, const WgmmaLayout& layout,
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
// Stores must cover whole 32-byte sectors (H100, tools/store_patterns.cu, writing v0.1's 520 MB
// output with no convolution): the previous epilogue stored 64 positions per instruction from
// wherever they started (rows of 126 floats start at every 8-byte offset of a sector), and that
// store pattern alone took 0.275 ms (1.9 TB/s), the whole kernel's time; the same runs stored
// from sector boundaries took 0.192 ms (2.7 TB/s); plain aligned float2 stores 0.170 ms, the
// same shifted by 8 bytes 0.250 ms. Kernel, same machine: v0.1 0.280 -> 0.254-0.260 ms
// (3xTF32), 0.286 -> 0.262 ms (TF32); cases that are not store-bound pay a little for the longer
// epilogue (16x32x64k3n128 0.109 -> 0.111 ms, 32x64x56k3p1n128 0.167 -> 0.173 ms). Bulk (TMA)
// stores of the runs from this one buffer per warp were slower on v0.1 (0.308 ms): each pass
// waits for the previous pass's copies to read the buffer, i.e. for the SM's stores to drain.
// Stored straight from the fragments (an older kernel), every 32-byte piece straddled two
// sectors: 3.3x the ideal sector count. Runs stored from 128- or 256-byte boundaries instead
// (fewer L2 line requests per instruction) measured the same (v0.1 0.256-0.263 vs 0.259-0.264 ms).
template <bool kPaired, typename Storage>
__device__ __forceinline__ void store_unit_runs(const ConvParams& p, const WgmmaLayout& layout,
                                                const float (&acc)[64], const float* shared_bias,
                                                const uint8_t* slot_table, float* epilogue,
                                                int64_t image, int first_out_row, int rows_here,
                                                int block, int first_position, int warp,
                                                int lane) {
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
__device__ __forceinline__ void store_unit(const ConvParams& p, const WgmmaLayout& layout,
                                           const float (&acc)[64], const float* shared_bias,
                                           const uint8_t* slot_table, float* epilogue,
                                           int64_t image, int first_out_row, int rows_here,
                                           int block, int first_position, int warp, int lane) {
  // Even widths: every run starts at an even element of an even-sized plane, so pairs move as
  // one 8-byte (4-byte) word (the output is 16-byte aligned: dense_nchw).
  if ((p.out_width & 1) == 0) {
    store_unit_runs<true, Storage>(p, layout, acc, shared_bias, slot_table, epilogue, image,
                                   first_out_row, rows_here, block, first_position, warp, lane);
  } else {
    store_unit_runs<false, Storage>(p, layout, acc, shared_bias, slot_table, epilogue, image,
                                    first_out_row, rows_here, block, first_position, warp, lane);
  }
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

// Output rows of `item` that exist: tile_rows, fewer in an image's last row block.
__device__ __forceinline__ int item_rows(const ConvParams& p, const WgmmaLayout& layout,
                                         int first_out_row) {
  const int left = static_cast<int>(p.out_height) - first_out_row;
  return left < layout.tile_rows ? left : layout.tile_rows;
}

#endif  // FUSEDCONV_WGMMA_DEVICE

// Storage: the tensors' type, float (either mode) or a 2-byte type (TF32 mode, exact: above);
// everything between the loads and the stores is float32.
template <bool kThreeTf32, typename Storage>
__global__ void __launch_bounds__(threads_for(kResidentConsumers), 1)
    conv_hardswish_relu_wgmma_kernel(const ConvParams p, const WgmmaLayout layout) {
#if FUSEDCONV_WGMMA_DEVICE
  constexpr int kConsumers = kResidentConsumers;
  constexpr int kThreads = threads_for(kConsumers);
  extern __shared__ __align__(128) unsigned char shared[];
  const uint32_t shared_base = shared_address(shared);
  const uint32_t full_barriers = shared_base;
  const uint32_t empty_barriers = shared_base + kMaxStages * 8;
  int* step_offsets = reinterpret_cast<int*>(shared + kTapTableOffset);
  uint8_t* slot_table = shared + kSlotTableOffset;
  float* weights = reinterpret_cast<float*>(shared + layout.weight_offset);
  Storage* raw = reinterpret_cast<Storage*>(shared + layout.raw_offset);
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
    uint32_t big, small = 0u;
    if (kThreeTf32) {
      split_weight(value, big, small);
      weights[weight_words + word] = __uint_as_float(small);
    } else {
      big = to_tf32(value);
    }
    weights[word] = __uint_as_float(big);
  }
  write_step_offsets(layout, taps, kernel_w, step_offsets, thread);
  write_slot_table(p, layout, slot_table, thread, blockDim.x);
  // Bias (0 past out_channels, or without one) in shared memory: a global load per unit put a
  // full memory latency in front of every unit's MMAs.
  float* shared_bias = reinterpret_cast<float*>(shared + layout.bias_offset);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  for (int channel = thread; channel < layout.out_blocks * kBlockChannels;
       channel += kThreads) {
    shared_bias[channel] = bias != nullptr && channel < p.out_channels
                               ? StorageTraits<Storage>::load(bias[channel])
                               : 0.0f;
  }
  if (thread == 0) {
    for (int stage = 0; stage < layout.stages; ++stage) {
      barrier_init(full_barriers + 8 * stage, kGroupThreads);
      barrier_init(empty_barriers + 8 * stage, kConsumers * 4);  // one arrival per warp
    }
  }
  fence_proxy_async();
  __syncthreads();

  const int64_t grid = gridDim.x;
  if (thread < kGroupThreads) {
    // Producer. Items round robin over the CTAs (b, b + grid, ...), so that the SMs write
    // about three images' outputs at any moment: a contiguous range of items per CTA made v0.1's
    // write stream 10% slower (0.259 -> 0.286 ms; bench/NOTES.md, sixth session).
    // Two raw buffers: item k + 1's rows are loading while item k is split into its
    // stage. With one buffer (loads issued after the split, awaited before the next) the
    // producer paid the full load latency per item, under the output stream's write traffic
    // too, and set the pace: v0.1 0.44 ms with the split skipped altogether.
    int64_t item = blockIdx.x;
    const int channels = static_cast<int>(p.in_channels);
    copy_raw_rows(p, layout, item, 0, channels, raw, thread);
    copy_async_commit();
    for (int k = 0; item < layout.items; ++k, item += grid) {
      if (item + grid < layout.items) {
        copy_raw_rows(p, layout, item + grid, 0, channels,
                      raw + ((k + 1) & 1) * layout.raw_words, thread);
      }
      copy_async_commit();
      copy_async_wait_group<1>();  // item k's group; item k + 1's may still be in flight
      producer_sync();
      const int stage = k % layout.stages;
      if (k >= layout.stages) {
        barrier_wait(empty_barriers + 8 * stage, ((k / layout.stages) - 1) & 1);
      }
      float* planes =
          reinterpret_cast<float*>(shared + layout.stage_offset + stage * layout.stage_bytes);
      const Storage* item_raw = raw + (k & 1) * layout.raw_words;
      if (layout.channel_groups == 2) {
        stage_planes<kThreeTf32, 2, 4>(p, layout, item, channels, item_raw, planes, thread);
      } else {
        stage_planes<kThreeTf32, 0, 4>(p, layout, item, channels, item_raw, planes, thread);
      }
      fence_proxy_async();
      barrier_arrive(full_barriers + 8 * stage);
      producer_sync();  // every thread is done reading raw[k & 1] before it is refilled
    }
    return;
  }

  // Consumers. The group number through a shuffle from lane 0: the compiler then knows it is
  // warp-uniform (CUTLASS's canonical_warp_group_idx) and keeps what derives from it, the MMA
  // descriptors among it, in uniform registers.
  const int consumer = __shfl_sync(0xffffffffu, thread / kGroupThreads - 1, 0);
  const int warp = (thread / 32) & 3;
  const int lane = thread & 31;
  const int out_width = static_cast<int>(p.out_width);
  const uint32_t weight_address = shared_base + layout.weight_offset;
  const uint32_t small_weight_offset = layout.out_blocks * layout.k_steps * kStepBytes;
  const uint32_t small_plane_offset = layout.channel_groups * layout.plane_bytes;
  // A: 8 rows of 16 bytes per core matrix, 128 bytes to the next 8 rows, 1 KB to the other four
  // channels of the step. B: 8 positions per core matrix, 128 bytes to the next 8, one plane to
  // the other four channels.
  const uint64_t a_descriptor = matrix_descriptor(weight_address, 1024, 128);
  const uint64_t b_descriptor = matrix_descriptor(0, layout.plane_bytes, 128);
  float* epilogue = reinterpret_cast<float*>(shared + layout.epilogue_offset) +
                    (consumer * 4 + warp) * kEpilogueRows * kEpiloguePitch;
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
    const uint32_t stage_address =
        shared_base + layout.stage_offset + stage * layout.stage_bytes;
    barrier_wait(full_barriers + 8 * stage, (k / layout.stages) & 1);
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
      issue_unit_chain<kThreeTf32>(acc, a_block, b_unit, step_offsets, layout.k_steps,
                                   small_plane_offset, small_weight_offset);
      pass_turn<kConsumers>(consumer);
      wgmma_wait_all();
      fence_accumulators(acc);
      if (unit + kConsumers >= units) {
        // This group's last MMA of the stage has read its operands: hand the stage back before
        // the epilogue so the producer refills it meanwhile.
        if (lane == 0) {
          barrier_arrive(empty_barriers + 8 * stage);
        }
        released = true;
      }

      store_unit<Storage>(p, layout, acc, shared_bias, slot_table, epilogue, image,
                          first_out_row, rows_here, block, first_position, warp, lane);
    }
    if (!released && lane == 0) {
      barrier_arrive(empty_barriers + 8 * stage);
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
template <bool kThreeTf32>
__global__ void split_streamed_weights_kernel(const ConvParams p, const WgmmaLayout layout) {
  const int taps = static_cast<int>(p.kernel_h * p.kernel_w);
  const int kernel_w = static_cast<int>(p.kernel_w);
  const int block_words = layout.k_steps * 512;               // one part of one channel block
  const int part_words = layout.out_blocks * block_words;     // one part of one chunk
  const int total = layout.chunks * part_words;               // < 2^31: make_streamed_layout
  const float* __restrict__ weight = static_cast<const float*>(p.weight);
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
      value = weight[channel * p.weight_strides.n + in_channel * p.weight_strides.c +
                     (tap / kernel_w) * p.weight_strides.h + (tap % kernel_w) * p.weight_strides.w];
    }
    const int64_t destination = int64_t{chunk} * layout.parts * part_words + in_part;
    uint32_t big, small = 0u;
    if (kThreeTf32) {
      split_weight(value, big, small);
      split[destination + part_words] = __uint_as_float(small);
    } else {
      big = to_tf32(value);
    }
    split[destination] = __uint_as_float(big);
  }
}

template <bool kThreeTf32>
__global__ void __launch_bounds__(threads_for(kStreamedConsumers), 1)
    conv_hardswish_relu_wgmma_streamed_kernel(const ConvParams p, const WgmmaLayout layout) {
#if FUSEDCONV_WGMMA_DEVICE
  constexpr int kConsumers = kStreamedConsumers;
  constexpr int kThreads = threads_for(kConsumers);
  extern __shared__ __align__(128) unsigned char shared[];
  const uint32_t shared_base = shared_address(shared);
  const uint32_t full_barriers = shared_base;
  const uint32_t empty_barriers = shared_base + kMaxStages * 8;
  int* step_offsets = reinterpret_cast<int*>(shared + kTapTableOffset);
  uint8_t* slot_table = shared + kSlotTableOffset;
  float* raw = reinterpret_cast<float*>(shared + layout.raw_offset);
  const int thread = threadIdx.x;
  const int kernel_w = static_cast<int>(p.kernel_w);
  const int taps = static_cast<int>(p.kernel_h) * kernel_w;
  write_step_offsets(layout, taps, kernel_w, step_offsets, thread);
  write_slot_table(p, layout, slot_table, thread, blockDim.x);
  float* shared_bias = reinterpret_cast<float*>(shared + layout.bias_offset);
  const float* __restrict__ bias = static_cast<const float*>(p.bias);
  for (int channel = thread; channel < layout.out_blocks * kBlockChannels;
       channel += kThreads) {
    shared_bias[channel] = bias != nullptr && channel < p.out_channels ? bias[channel] : 0.0f;
  }
  if (thread == 0) {
    for (int stage = 0; stage < layout.stages; ++stage) {
      // The producer's threads, plus the bulk copy's expected bytes (thread 0 arrives twice).
      barrier_init(full_barriers + 8 * stage, kGroupThreads + 1);
      barrier_init(empty_barriers + 8 * stage, kConsumers * 4);  // one arrival per warp
    }
  }
  fence_proxy_async();
  __syncthreads();

  const int64_t grid = gridDim.x;
  const int chunks = layout.chunks;
  const int in_channels = static_cast<int>(p.in_channels);
  if (thread < kGroupThreads) {
    // Producer: one stage per (item, chunk), in that order; the raw rows of the next one load
    // while this one is split.
    const char* split_weights = static_cast<const char*>(p.workspace);
    int64_t item = blockIdx.x;
    int chunk = 0;
    copy_raw_rows(p, layout, item, 0, min(layout.chunk_channels, in_channels), raw, thread);
    copy_async_commit();
    for (int64_t sequence = 0; item < layout.items; ++sequence) {
      const bool last_chunk = chunk + 1 == chunks;
      const int64_t next_item = last_chunk ? item + grid : item;
      const int next_chunk = last_chunk ? 0 : chunk + 1;
      if (next_item < layout.items) {
        const int first = next_chunk * layout.chunk_channels;
        copy_raw_rows(p, layout, next_item, first, min(layout.chunk_channels, in_channels - first),
                      raw + ((sequence + 1) & 1) * layout.raw_words, thread);
      }
      copy_async_commit();
      copy_async_wait_group<1>();  // this stage's rows; the next stage's may still be in flight
      producer_sync();
      const int stage = static_cast<int>(sequence % layout.stages);
      if (sequence >= layout.stages) {
        barrier_wait(empty_barriers + 8 * stage, ((sequence / layout.stages) - 1) & 1);
      }
      const uint32_t stage_address =
          shared_base + layout.stage_offset + stage * layout.stage_bytes;
      if (thread == 0) {
        const uint32_t full = full_barriers + 8 * stage;
        barrier_arrive_expect_bytes(full, layout.a_stage_bytes);
        bulk_copy_to_shared(stage_address, split_weights + int64_t{chunk} * layout.a_stage_bytes,
                            layout.a_stage_bytes, full);
      }
      float* planes = reinterpret_cast<float*>(shared + layout.stage_offset +
                                               stage * layout.stage_bytes + layout.a_stage_bytes);
      const float* chunk_raw = raw + (sequence & 1) * layout.raw_words;
      const int channels = min(layout.chunk_channels, in_channels - chunk * layout.chunk_channels);
      if (layout.plane_positions <= kGroupThreads) {
        if (layout.channel_groups == 8) {  // 1x1 kernels: 32-channel stages
          stage_planes<kThreeTf32, 8, 1>(p, layout, item, channels, chunk_raw, planes, thread);
        } else {
          stage_planes<kThreeTf32, 0, 1>(p, layout, item, channels, chunk_raw, planes, thread);
        }
      } else if (layout.channel_groups == 2) {  // 8-channel stages: 3x3 and larger kernels
        stage_planes<kThreeTf32, 2, 4>(p, layout, item, channels, chunk_raw, planes, thread);
      } else {
        stage_planes<kThreeTf32, 0, 4>(p, layout, item, channels, chunk_raw, planes, thread);
      }
      fence_proxy_async();
      barrier_arrive(full_barriers + 8 * stage);
      producer_sync();  // every thread is done reading this raw buffer before it is refilled
      item = next_item;
      chunk = next_chunk;
    }
    return;
  }

  // Consumers: consumer c takes unit c of every item (position unit c / out_blocks, channel block
  // c % out_blocks); an item of one unit leaves consumer 1 only releasing stages.
  const int consumer = __shfl_sync(0xffffffffu, thread / kGroupThreads - 1, 0);  // uniform
  const int warp = (thread / 32) & 3;
  const int lane = thread & 31;
  const int out_width = static_cast<int>(p.out_width);
  const uint32_t small_weight_offset = layout.out_blocks * layout.k_steps * kStepBytes;
  const uint32_t small_plane_offset = layout.channel_groups * layout.plane_bytes;
  const uint64_t a_descriptor = matrix_descriptor(0, 1024, 128);
  const uint64_t b_descriptor = matrix_descriptor(0, layout.plane_bytes, 128);
  float* epilogue = reinterpret_cast<float*>(shared + layout.epilogue_offset) +
                    (consumer * 4 + warp) * kEpilogueRows * kEpiloguePitch;
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
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      totals[i] = 0.0f;
    }
    for (int chunk = 0; chunk < chunks; ++chunk, ++sequence) {
      const int stage = static_cast<int>(sequence % layout.stages);
      const uint32_t stage_address =
          shared_base + layout.stage_offset + stage * layout.stage_bytes;
      barrier_wait(full_barriers + 8 * stage, (sequence / layout.stages) & 1);
      wait_for_turn<kConsumers>(consumer);  // every chunk is one turn of each group, active or not
      if (active) {
        float acc[64];
        const uint64_t a_block =
            a_descriptor + ((stage_address + block * layout.k_steps * kStepBytes) >> 4);
        const uint64_t b_unit = b_descriptor + ((stage_address + layout.a_stage_bytes +
                                                 first_position * 16) >> 4);
        issue_unit_chain<kThreeTf32>(acc, a_block, b_unit, step_offsets, layout.k_steps,
                                     small_plane_offset, small_weight_offset);
        pass_turn<kConsumers>(consumer);
        wgmma_wait_all();
        fence_accumulators(acc);
#pragma unroll
        for (int i = 0; i < 64; ++i) {
          totals[i] += acc[i];
        }
      } else {
        pass_turn<kConsumers>(consumer);
      }
      if (lane == 0) {
        barrier_arrive(empty_barriers + 8 * stage);  // this warp is done with the stage
      }
    }
    if (active) {
      store_unit<float>(p, layout, totals, shared_bias, slot_table, epilogue, image,
                        first_out_row, rows_here, block, first_position, warp, lane);
    }
  }
  if (consumer == 0) {
    wait_for_turn<kConsumers>(consumer);  // the last consumer's last pass
  }
#else
  __trap();
#endif
}

// Bytes per element of the input's storage type.
int storage_bytes(const ConvParams& p) {
  switch (p.dtype) {
    case DType::kFloat64:
      return 8;
    case DType::kFloat32:
      return 4;
    default:
      return 2;  // float16, bfloat16
  }
}

// Shapes, tile and pipeline depth for one call; false where the kernel does not apply.
bool make_wgmma_layout(const ConvParams& p, bool three_tf32, const DeviceLimits& limits,
                       WgmmaLayout& layout) {
  layout = WgmmaLayout{};
  layout.parts = three_tf32 ? 2 : 1;
  layout.out_blocks = static_cast<int>((p.out_channels + kBlockChannels - 1) / kBlockChannels);
  const int chunks = static_cast<int>((p.in_channels + 7) / 8);
  layout.chunk_channels = 8 * chunks;
  layout.chunks = 1;
  layout.channel_groups = 2 * chunks;
  layout.k_steps = static_cast<int>(chunks * p.kernel_h * p.kernel_w);
  if (layout.k_steps > kMaxKSteps || p.batch * p.out_height * p.out_width == 0) {
    return false;
  }
  const int padded_width = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.row_pitch = (padded_width + 1) & ~1;
  const int element_bytes = storage_bytes(p);
  const int64_t per_copy = 16 / element_bytes;  // raw rows of whole 16-byte copies
  layout.raw_pitch = static_cast<int>((p.in_width + per_copy - 1) / per_copy * per_copy);
  layout.inverse_row_pitch = 1.0f / static_cast<float>(layout.row_pitch);
  const int64_t weight_bytes = int64_t{layout.parts} * layout.out_blocks * layout.k_steps *
                                   kStepBytes +
                               layout.out_blocks * kBlockChannels * 4;  // and the bias
  // Pick the item height: the fewest MMA units on the busiest SM (items are dealt round robin
  // to one CTA per SM), one unit's worth of overhead per item and one item's worth of pipeline
  // fill, within shared memory; more stages where they fit.
  int64_t best_cost = -1;
  for (int tile_rows = 1; tile_rows <= p.out_height && tile_rows <= 32; ++tile_rows) {
    const int units = static_cast<int>(((tile_rows - 1) * int64_t{layout.row_pitch} +
                                        p.out_width + kUnitPositions - 1) / kUnitPositions);
    if (units > kMaxPositionUnits) {
      break;
    }
    const int staged_rows = static_cast<int>(tile_rows + p.kernel_h - 1);
    const int64_t positions = (int64_t{units} * kUnitPositions +
                               (p.kernel_h - 1) * layout.row_pitch + p.kernel_w - 1 + 7) & ~7;
    const int64_t stage_bytes = int64_t{layout.parts} * layout.channel_groups * positions * 16;
    const int64_t raw_words = p.in_channels * staged_rows * layout.raw_pitch;
    if (raw_words >= (int64_t{1} << 21) || positions >= (int64_t{1} << 21)) {
      break;  // the producer's float-reciprocal quotients are exact below 2^21
    }
    const int64_t raw_bytes = 2 * raw_words * element_bytes;
    for (int stages = kMaxStages; stages >= 2; --stages) {
      const int64_t shared_bytes =
          kHeaderBytes + weight_bytes + stages * stage_bytes + raw_bytes +
          epilogue_bytes(kResidentConsumers);
      if (shared_bytes > limits.max_shared_bytes) {
        continue;
      }
      const int64_t row_blocks = (p.out_height + tile_rows - 1) / tile_rows;
      const int64_t items = p.batch * row_blocks;
      if (items >= (int64_t{1} << 31)) {
        break;  // the kernels' 32-bit item quotients
      }
      const int64_t grid = items < limits.sm_count ? items : limits.sm_count;
      const int64_t rounds = (items + grid - 1) / grid;
      // rounds + 1: the first item's load and split are not overlapped with anything.
      const int64_t cost = (rounds + 1) * (int64_t{units} * layout.out_blocks + 1);
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        layout.tile_rows = tile_rows;
        layout.row_blocks = static_cast<int>(row_blocks);
        layout.row_block_divisor = FastDivisor::make(static_cast<uint32_t>(row_blocks));
        layout.staged_rows = staged_rows;
        layout.plane_positions = static_cast<int>(positions);
        layout.stages = stages;
        layout.plane_bytes = static_cast<int>(positions * 16);
        layout.stage_bytes = static_cast<int>(stage_bytes);
        layout.weight_offset = kHeaderBytes;
        layout.bias_offset = static_cast<int>(
            kHeaderBytes + weight_bytes - layout.out_blocks * kBlockChannels * 4);
        layout.stage_offset = static_cast<int>(kHeaderBytes + weight_bytes);
        layout.raw_offset = static_cast<int>(kHeaderBytes + weight_bytes + stages * stage_bytes);
        layout.epilogue_offset = static_cast<int>(layout.raw_offset + raw_bytes);
        layout.raw_words = static_cast<int>(raw_words);
        layout.shared_bytes = static_cast<int>(shared_bytes);
        layout.items = items;
        layout.grid = static_cast<int>(grid);
      }
      break;
    }
  }
  return best_cost >= 0;
}

// The streamed kernel's layout: items of kStreamedConsumers units (one per consumer), as many
// output rows as their positions hold; input channels per stage for about 8 k steps (9 for
// 3x3 kernels, 64 channels for 1x1), fewer where 2 stages would not fit shared memory, then
// evened out over the chunks. (8 is a choice, not a measured optimum.)
bool make_streamed_layout(const ConvParams& p, bool three_tf32, const DeviceLimits& limits,
                          WgmmaLayout& layout) {
  layout = WgmmaLayout{};
  layout.streamed = true;
  layout.parts = three_tf32 ? 2 : 1;
  layout.out_blocks = static_cast<int>((p.out_channels + kBlockChannels - 1) / kBlockChannels);
  if (layout.out_blocks > kStreamedConsumers || p.batch * p.out_height * p.out_width == 0 ||
      p.dtype != DType::kFloat32) {
    return false;  // float32 only: one kernel instantiation less per reduced-precision type
  }
  const int position_units = kStreamedConsumers / layout.out_blocks;
  if (p.out_width > position_units * kUnitPositions) {
    return false;  // an output row longer than an item's positions
  }
  const int padded_width = static_cast<int>(p.out_width + p.kernel_w - 1);
  layout.row_pitch = (padded_width + 1) & ~1;
  layout.raw_pitch = static_cast<int>((p.in_width + 3) & ~int64_t{3});
  layout.inverse_row_pitch = 1.0f / static_cast<float>(layout.row_pitch);
  const int64_t fitting_rows =
      (position_units * kUnitPositions - p.out_width) / layout.row_pitch + 1;
  layout.tile_rows = static_cast<int>(fitting_rows < p.out_height ? fitting_rows : p.out_height);
  layout.staged_rows = static_cast<int>(layout.tile_rows + p.kernel_h - 1);
  const int64_t positions = (int64_t{position_units} * kUnitPositions +
                             (p.kernel_h - 1) * layout.row_pitch + p.kernel_w - 1 + 7) & ~7;
  if (positions >= (int64_t{1} << 21)) {
    return false;  // the producer's float-reciprocal quotients are exact below 2^21
  }
  layout.plane_positions = static_cast<int>(positions);
  layout.plane_bytes = static_cast<int>(positions * 16);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t eighths_total = (p.in_channels + 7) / 8;
  int64_t eighths = (8 + taps - 1) / taps;
  eighths = eighths < eighths_total ? eighths : eighths_total;
  const int64_t bias_bytes = layout.out_blocks * kBlockChannels * 4;
  for (; eighths >= 1; --eighths) {
    // Even out the chunks: 16 eighths that fit 5 per stage run as 4 chunks of 4.
    const int64_t chunks = (eighths_total + eighths - 1) / eighths;
    const int64_t even = (eighths_total + chunks - 1) / chunks;
    const int64_t k_steps = even * taps;
    if ((k_steps + 1) * 4 > kSlotTableOffset - kTapTableOffset) {
      continue;  // the step table in the header
    }
    const int64_t a_stage_bytes = int64_t{layout.parts} * layout.out_blocks * k_steps * kStepBytes;
    const int64_t stage_bytes = a_stage_bytes + int64_t{layout.parts} * 2 * even * positions * 16;
    const int64_t raw_words = 8 * even * layout.staged_rows * layout.raw_pitch;
    if (raw_words >= (int64_t{1} << 21) ||
        chunks * a_stage_bytes >= (int64_t{1} << 31)) {  // the prep kernel's 32-bit indices
      continue;
    }
    for (int stages = kMaxStages; stages >= 2; --stages) {
      const int64_t shared_bytes = kHeaderBytes + bias_bytes + stages * stage_bytes +
                                   2 * raw_words * 4 + epilogue_bytes(kStreamedConsumers);
      if (shared_bytes > limits.max_shared_bytes) {
        continue;
      }
      layout.chunk_channels = static_cast<int>(8 * even);
      layout.chunks = static_cast<int>(chunks);
      layout.channel_groups = static_cast<int>(2 * even);
      layout.k_steps = static_cast<int>(k_steps);
      layout.a_stage_bytes = static_cast<int>(a_stage_bytes);
      layout.stages = stages;
      layout.stage_bytes = static_cast<int>(stage_bytes);
      layout.raw_words = static_cast<int>(raw_words);
      layout.bias_offset = kHeaderBytes;
      layout.stage_offset = static_cast<int>(kHeaderBytes + bias_bytes);
      layout.raw_offset = static_cast<int>(layout.stage_offset + stages * stage_bytes);
      layout.epilogue_offset = static_cast<int>(layout.raw_offset + 2 * raw_words * 4);
      layout.shared_bytes = static_cast<int>(shared_bytes);
      layout.row_blocks =
          static_cast<int>((p.out_height + layout.tile_rows - 1) / layout.tile_rows);
      layout.row_block_divisor = FastDivisor::make(static_cast<uint32_t>(layout.row_blocks));
      layout.items = p.batch * layout.row_blocks;
      layout.grid = static_cast<int>(layout.items < limits.sm_count ? layout.items
                                                                     : limits.sm_count);
      return layout.items < (int64_t{1} << 31);  // the kernels' 32-bit item quotients
    }
  }
  return false;
}

// The resident kernel where it applies (measured faster where both do), else the streamed one.
// TF32 mode (float16 and bfloat16 too) takes its own layout, whose smaller stages fit taller
// items: H100, A/B against the 3xTF32 geometry it took before, 16x32x64k3n128 0.086 -> 0.067 ms,
// 16x32x64k3n32 0.0295 -> 0.0238; v0.1 and the other resident sweep cases within 0.6%. (With
// the earlier epilogue, this layout had run v0.1 slower, 0.285 vs 0.261 ms.)
bool choose_wgmma_layout(const ConvParams& p, bool three_tf32, const DeviceLimits& limits,
                         WgmmaLayout& layout) {
  thread_local PlanMemo<WgmmaLayout> memo;
  const int64_t variant = (three_tf32 ? 1 : 0) + 2 * static_cast<int64_t>(p.dtype);
  return memo.get(plan_key(p, limits, variant), layout, [&](WgmmaLayout& chosen) {
    return make_wgmma_layout(p, three_tf32, limits, chosen) ||
           make_streamed_layout(p, three_tf32, limits, chosen);
  });
}

template <bool kThreeTf32, typename Storage>
cudaError_t launch_wgmma_with(const ConvParams& p, const WgmmaLayout& layout,
                              const DeviceLimits& limits, cudaStream_t stream) {
  if (!layout.streamed) {
    constexpr auto kernel = conv_hardswish_relu_wgmma_kernel<kThreeTf32, Storage>;
    const cudaError_t status = opt_in_shared_memory<kernel>(limits);
    if (status != cudaSuccess) {
      return status;
    }
    kernel<<<layout.grid, threads_for(kResidentConsumers), layout.shared_bytes, stream>>>(p,
                                                                                     layout);
    return cudaGetLastError();
  }
  if (!std::is_same<Storage, float>::value || p.workspace == nullptr) {
    return cudaErrorInvalidValue;  // the streamed layout is float32 only
  }
  constexpr int kPrepThreads = 256;
  const int64_t words = int64_t{layout.chunks} * layout.out_blocks * layout.k_steps * 512;
  const int64_t prep_blocks = (words + kPrepThreads - 1) / kPrepThreads;
  split_streamed_weights_kernel<kThreeTf32>
      <<<static_cast<unsigned int>(prep_blocks < 1024 ? prep_blocks : 1024), kPrepThreads, 0,
         stream>>>(p, layout);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    return status;
  }
  constexpr auto kernel = conv_hardswish_relu_wgmma_streamed_kernel<kThreeTf32>;
  status = opt_in_shared_memory<kernel>(limits);
  if (status != cudaSuccess) {
    return status;
  }
  kernel<<<layout.grid, threads_for(kStreamedConsumers), layout.shared_bytes, stream>>>(p,
                                                                                     layout);
  return cudaGetLastError();
}

// 3xTF32 for float32 unless TF32 mode is asked for; one TF32 product for float16 and bfloat16,
// whose values TF32 holds exactly (the products are exact, the sums float32 either way).
bool three_tf32_for(const ConvParams& p, bool allow_tf32) {
  return p.dtype == DType::kFloat32 && !allow_tf32;
}

}  // namespace

cudaError_t wgmma_forward_applies(const ConvParams& params, bool allow_tf32, bool& applies,
                                  int64_t& workspace_bytes) {
  applies = false;
  workspace_bytes = 0;
#if defined(FUSEDCONV_HAS_SM90A)
  const bool storage_supported = params.dtype == DType::kFloat32 ||
                                 params.dtype == DType::kFloat16 ||
                                 params.dtype == DType::kBFloat16;
  if (!storage_supported || !unit_stride_dense_nchw(params)) {
    return cudaSuccess;
  }
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  // Up to 16 output channels the mma.sync kernel's 16-channel tiles win: one wgmma block pads
  // them to 64 (H100 kernel times, 3xTF32: v0 0.0153 vs 0.0233 ms, 3x16x32k3n32 0.0085 vs
  // 0.0116); from 32 on the wgmma kernel does (16x32x64k3n32 0.0445 vs 0.0494 ms).
  if (limits.cc_major != 9 || limits.cc_minor != 0 || params.out_channels <= 16) {
    return cudaSuccess;
  }
  WgmmaLayout layout{};
  applies = choose_wgmma_layout(params, three_tf32_for(params, allow_tf32), limits, layout);
  if (applies && layout.streamed) {
    workspace_bytes = int64_t{layout.chunks} * layout.a_stage_bytes;
  }
#else
  (void)params;
  (void)allow_tf32;
#endif
  return cudaSuccess;
}

cudaError_t launch_conv_hardswish_relu_wgmma(const ConvParams& params, bool allow_tf32,
                                             cudaStream_t stream) {
  DeviceLimits limits{};
  const cudaError_t status = device_limits(limits);
  if (status != cudaSuccess) {
    return status;
  }
  WgmmaLayout layout{};
  const bool three_tf32 = three_tf32_for(params, allow_tf32);
  if (!choose_wgmma_layout(params, three_tf32, limits, layout)) {
    return cudaErrorInvalidConfiguration;
  }
  switch (params.dtype) {
    case DType::kFloat32:
      return three_tf32 ? launch_wgmma_with<true, float>(params, layout, limits, stream)
                        : launch_wgmma_with<false, float>(params, layout, limits, stream);
    case DType::kFloat16:
      return launch_wgmma_with<false, __half>(params, layout, limits, stream);
    case DType::kBFloat16:
      return launch_wgmma_with<false, __nv_bfloat16>(params, layout, limits, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace fusedconv
