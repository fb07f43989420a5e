// Store-pattern microbenchmark: v0.1's output (128 x 64 x 126 x 126 float32, 520 MB) written
// with no convolution, in the patterns the wgmma kernel's epilogue could use. It is why the
// epilogue stores whole sectors (conv_fwd_wgmma.cu, store_unit). H100 (this session's run):
//   memset                         0.165 ms  3.14 TB/s
//   float2, aligned                0.170 ms  3.05 TB/s
//   float2, shifted by 8 bytes     0.250 ms  2.08 TB/s
//   old epilogue (64 positions per instruction from wherever they start)  0.275 ms  1.89 TB/s
//   runs from sector boundaries    0.192 ms  2.71 TB/s
// Build and run: nvcc -O3 -gencode=arch=compute_90a,code=sm_90a tools/store_patterns.cu -o sp && ./sp
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

// The current epilogue: each channel's row run stored from the 32-byte boundary at or below
// its start, 64 floats per instruction.
__global__ void item_from_sector_start(float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int item = blockIdx.x; item < kBatch * kRowBlocks; item += gridDim.x) {
    for (int r = 0; r < 16; ++r) {
      const long long start =
          warp_row_start(item, warp) + static_cast<long long>(r) * kSize * kSize;
      const long long end = start + kSize;
      for (long long chunk = start & ~7LL; chunk < end; chunk += 64) {
        const long long first = chunk + 2 * lane;
        if (first >= start && first + 2 <= end) {
          *reinterpret_cast<float2*>(out + first) = make_float2(1.0f, 2.0f);
        }
      }
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
  time("runs from sector boundaries", [&] { item_from_sector_start<<<132, 384>>>(out); });
  cudaFree(out);
  return 0;
}
