// Question: what bounds the wgmma forward on v0.1, its arithmetic or its memory access pattern?
// Answer: the access pattern. Its stores plus input loads alone take 0.242-0.246 ms against the
// kernel's 0.259-0.263 (H100, benchmarks/NOTES.md "The kernel's own access pattern sets v0.1's
// pace"), and stores must cover whole 32-byte sectors.
//
// Store-pattern microbenchmark: v0.1's output (128 x 64 x 126 x 126 float32, 520 MB) written
// with no convolution, in the patterns the wgmma kernel's epilogue could use. It is why the
// epilogue stores whole sectors (csrc/cuda/forward/wgmma/epilogue.cuh), and it measures the floor
// of the kernel's own access pattern. H100, ms (fifth and sixth sessions; the same pattern moves
// 5-10% between machines):
//   memset                                              0.165  3.14 TB/s
//   float2, aligned                                     0.170  3.05 TB/s
//   float2, shifted by 8 bytes                          0.250  2.08 TB/s
//   old epilogue (64 positions per instruction from wherever they start)  0.275-0.287
//   runs from sector boundaries (the current epilogue)  0.192-0.213
//     the same from 128-byte or 256-byte boundaries     no change (0.210 vs 0.211)
//     items in a contiguous range per CTA               0.233 (round robin 0.214)
//   + the input rows, cp.async one item ahead as the producer loads them: the kernel's whole
//     access pattern                                    0.242-0.245 (kernel: 0.259)
//   runs of R rows per channel and warp, items of R rows round robin: R = 1 0.247, 3 0.207,
//     6 0.196, 12 0.199, 42 0.184-0.187, 126 0.180-0.183
// Build and run:
//   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a experiments/store_patterns.cu -o sp && ./sp
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace {

constexpr int kBatch = 128, kChannels = 64, kSize = 126;
constexpr long long kCount = 1LL * kBatch * kChannels * kSize * kSize;
constexpr int kRowsPerItem = 3;  // the wgmma kernel's item on v0.1
constexpr int kRowBlocks = kSize / kRowsPerItem;

__global__ void linear_pairs(float* out, long long pairs, int offset) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    *reinterpret_cast<float2*>(out + offset + 2 * i) = make_float2(1.0f, 2.0f);
  }
}

// The kernel's item loop: one CTA per SM, items (image, 3-row block), 12 warps = 3 units (one
// output row each on v0.1) x 4 warps of 16 channels.
// The offset of the first output of this warp's row (channel 16 * (warp % 4), column 0) in item.
__device__ __forceinline__ long long warp_row_start(int item, int warp) {
  const int image = item / kRowBlocks;
  const int row = item % kRowBlocks * kRowsPerItem + warp / 4;
  return ((static_cast<long long>(image) * kChannels + 16 * (warp % 4)) * kSize + row) * kSize;
}

// The previous epilogue: per half unit, 64 positions per store instruction from the row start.
__global__ void item_from_row_start(float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int item = blockIdx.x; item < kBatch * kRowBlocks; item += gridDim.x) {
    for (int half = 0; half < 2; ++half) {
      const int col = 64 * half + 2 * lane;
      float* destination = out + warp_row_start(item, warp) + col;
      if (col + 1 < kSize) {
#pragma unroll
        for (int r = 0; r < 16; ++r) {
          *reinterpret_cast<float2*>(destination + static_cast<long long>(r) * kSize * kSize) =
              make_float2(1.0f, 2.0f);
        }
      }
    }
  }
}

// One warp's run [start, end) of one output plane, stored from the (mask + 1)-float boundary at
// or below its start, 64 floats per instruction.
__device__ __forceinline__ void store_run(float* out, long long start, long long end,
                                          long long mask, int lane) {
  for (long long chunk = start & ~mask; chunk < end; chunk += 64) {
    const long long first = chunk + 2 * lane;
    if (first >= start && first + 2 <= end) {
      *reinterpret_cast<float2*>(out + first) = make_float2(1.0f, 2.0f);
    }
  }
}

// The current epilogue's stores for one item: each warp's 16 channel runs of its row.
__device__ __forceinline__ void store_item_runs(float* out, int item, long long mask) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = 0; r < 16; ++r) {
    const long long start =
        warp_row_start(item, warp) + static_cast<long long>(r) * kSize * kSize;
    store_run(out, start, start + kSize, mask, lane);
  }
}

// The current epilogue: each channel's row run stored from the 32-byte boundary (mask 7) at or
// below its start; items round robin over the CTAs (the kernel's order), or with `blocked` a
// contiguous range of items per CTA.
__global__ void item_from_boundary(float* out, long long mask, bool blocked) {
  const int items = kBatch * kRowBlocks;
  const int base = items / gridDim.x, extra = items % gridDim.x;
  const int b = blockIdx.x;
  const int count = blocked ? base + (b < extra ? 1 : 0) : (items - b + gridDim.x - 1) / gridDim.x;
  const int first = blocked ? b * base + min(b, extra) : b;
  const int step = blocked ? 1 : gridDim.x;
  for (int k = 0; k < count; ++k) {
    store_item_runs(out, first + k * step, mask);
  }
}

// The current epilogue's stores plus the item's input rows (8 channels x 5 rows x 128 floats of
// v0.1's input), fetched with 16-byte cp.async into a double buffer one item ahead, as the
// kernel's producer does: the kernel's whole global-memory access pattern, without its work.
constexpr int kInChannels = 8, kInSize = 128, kStagedRows = kRowsPerItem + 2;
constexpr int kRawFloats = kInChannels * kStagedRows * kInSize;

__global__ void item_runs_with_input_reads(float* out, const float* in, float* sink) {
  extern __shared__ float raw[];  // two buffers of kRawFloats
  const int items = kBatch * kRowBlocks;
  const auto fetch = [&](int item, int buffer) {
    const int image = item / kRowBlocks;
    const int row = item % kRowBlocks * kRowsPerItem;
    for (int i = threadIdx.x; i < kRawFloats / 4; i += blockDim.x) {
      const int channel = i / (kStagedRows * kInSize / 4);
      const int staged_row = (i / (kInSize / 4)) % kStagedRows;
      if (row + staged_row < kInSize) {
        const float* from =
            in + ((static_cast<long long>(image) * kInChannels + channel) * kInSize + row +
                  staged_row) * kInSize + 4 * (i % (kInSize / 4));
        const unsigned to =
            static_cast<unsigned>(__cvta_generic_to_shared(raw + buffer * kRawFloats + 4 * i));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(to), "l"(from));
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  fetch(blockIdx.x, 0);
  float total = 0.0f;
  int k = 0;
  for (int item = blockIdx.x; item < items; item += gridDim.x, ++k) {
    if (item + gridDim.x < items) {
      fetch(item + gridDim.x, (k + 1) & 1);
    } else {
      asm volatile("cp.async.commit_group;\n" ::: "memory");
    }
    store_item_runs(out, item, 7);
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    total += raw[(k & 1) * kRawFloats + threadIdx.x];  // the loads are used
    __syncthreads();
  }
  if (total == -1.0f) {
    sink[0] = total;
  }
}

// Runs of `rows` output rows per channel: items of `rows` rows round robin, the 12 warps take
// the 64 channels round robin, one whole run each.
__global__ void runs_of_rows(float* out, int rows) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int blocks = (kSize + rows - 1) / rows;
  for (int item = blockIdx.x; item < kBatch * blocks; item += gridDim.x) {
    const int image = item / blocks;
    const int row = item % blocks * rows;
    const int here = min(rows, kSize - row);
    for (int channel = warp; channel < kChannels; channel += warps) {
      const long long start =
          ((static_cast<long long>(image) * kChannels + channel) * kSize + row) * kSize;
      store_run(out, start, start + here * kSize, 7, lane);
    }
  }
}

}  // namespace

int main() {
  float* out = nullptr;
  if (cudaMalloc(&out, kCount * 4 + 64) != cudaSuccess) {
    std::fprintf(stderr, "cudaMalloc failed\n");
    return 1;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  const auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 3; ++i) {
      launch();
    }
    std::vector<float> times;
    for (int i = 0; i < 21; ++i) {
      cudaEventRecord(start);
      launch();
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      float ms = 0.0f;
      cudaEventElapsedTime(&ms, start, stop);
      times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const cudaError_t status = cudaGetLastError();
    std::printf("%-32s %.4f ms  %.2f TB/s  %s\n", name, times[10],
                kCount * 4.0 / (times[10] * 1e9), cudaGetErrorString(status));
  };
  time("memset", [&] { cudaMemsetAsync(out, 0, kCount * 4); });
  time("float2, aligned", [&] { linear_pairs<<<132 * 8, 256>>>(out, kCount / 2, 0); });
  time("float2, shifted by 8 bytes",
       [&] { linear_pairs<<<132 * 8, 256>>>(out, kCount / 2 - 1, 2); });
  time("old epilogue (from row start)", [&] { item_from_row_start<<<132, 384>>>(out); });
  time("runs from sector boundaries", [&] { item_from_boundary<<<132, 384>>>(out, 7, false); });
  time("runs from 128-byte boundaries", [&] { item_from_boundary<<<132, 384>>>(out, 31, false); });
  time("runs from 256-byte boundaries", [&] { item_from_boundary<<<132, 384>>>(out, 63, false); });
  time("runs, contiguous items per CTA", [&] { item_from_boundary<<<132, 384>>>(out, 7, true); });
  float* in = nullptr;
  float* sink = nullptr;
  const size_t in_bytes = sizeof(float) * kBatch * kInChannels * kInSize * kInSize;
  if (cudaMalloc(&in, in_bytes) != cudaSuccess || cudaMalloc(&sink, 4) != cudaSuccess ||
      cudaMemset(in, 0, in_bytes) != cudaSuccess ||
      cudaFuncSetAttribute(item_runs_with_input_reads,
                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                           2 * kRawFloats * 4) != cudaSuccess) {
    std::fprintf(stderr, "input setup failed\n");
    return 1;
  }
  time("runs + input reads (cp.async)", [&] {
    item_runs_with_input_reads<<<132, 384, 2 * kRawFloats * 4>>>(out, in, sink);
  });
  for (int rows : {1, 3, 6, 12, 42, 126}) {
    char name[48];
    std::snprintf(name, sizeof name, "runs of %d rows per warp", rows);
    time(name, [&] { runs_of_rows<<<132, 384>>>(out, rows); });
  }
  cudaFree(sink);
  cudaFree(in);
  cudaFree(out);
  return 0;
}
