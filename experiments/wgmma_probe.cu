// Question: why does one m64n128k8 TF32 wgmma of the forward kernel cost ~194 cycles where the
// tensor core's rate is 64: is it the operand layout (no swizzle, B shifted 16 bytes per tap)?
// Answer: not the layout. Alone on every SM of an H100 it took 74.1 cycles with one warpgroup
// and 64.4 with two (A from shared memory), the same with B shifted 16 bytes per tap, and
// 69.7 / 64.0 with A from registers (benchmarks/results/h100_wgmma_probe.txt). The kernel loses
// the rate to the work beside its MMAs (benchmarks/NOTES.md, "Hopper forward: wgmma kernel").
//
// Times back-to-back wgmmas (9 k steps per commit, like a 3x3 unit) on every SM, for the operand
// layouts the kernel uses and the alternatives:
//   A from shared memory (descriptor) or from registers,
//   B start 128-byte aligned on every step, or shifted by 16 bytes per tap (the kernel's
//   position shift s = step % 3),
//   1 or 2 warpgroups per SM issuing (the kernel has 2 consumer warpgroups).
// No swizzle throughout, K-major core matrices as in csrc/cuda/forward/wgmma/. Prints cycles per
// wgmma per SM. Build and run on an H100:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/wgmma_probe \
//        experiments/wgmma_probe.cu && /tmp/wgmma_probe
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr int kSteps = 9;
constexpr int kPlanePositions = 1024;
constexpr int kABytes = kSteps * 2048;
constexpr int kBBytes = 2 * kPlanePositions * 16;

#define CHECK(call)                                                                      \
  do {                                                                                   \
    const cudaError_t status = (call);                                                   \
    if (status != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(status));        \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PROBE_DEVICE 1
#endif

#if PROBE_DEVICE
__device__ __forceinline__ uint64_t descriptor(uint32_t address, uint32_t k_stride) {
  return static_cast<uint64_t>((address & 0x3ffff) >> 4) |
         (static_cast<uint64_t>(k_stride >> 4) << 16) | (static_cast<uint64_t>(128 >> 4) << 32);
}

#define ACC_OUT                                                                                 \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),          \
      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),  \
      "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),            \
      "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),            \
      "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),            \
      "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),            \
      "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),            \
      "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),            \
      "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),            \
      "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),            \
      "+f"(d[62]), "+f"(d[63])
#define ACC_REGS                                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "     \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
  "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, " \
  "%55, %56, %57, %58, %59, %60, %61, %62, %63}"

__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 " ACC_REGS
               ", %64, %65, 1, 1, 1;\n"
               : ACC_OUT
               : "l"(a), "l"(b));
}

__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 " ACC_REGS
               ", {%64, %65, %66, %67}, %68, 1, 1, 1;\n"
               : ACC_OUT
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#endif

template <bool kRegisterA, bool kShifted>
__global__ void __launch_bounds__(256, 1) probe(int iterations, int groups, long long* cycles,
                                                float* sink) {
#if PROBE_DEVICE
  extern __shared__ __align__(1024) unsigned char shared[];
  const int thread = threadIdx.x;
  float* words = reinterpret_cast<float*>(shared);
  for (int i = thread; i < (kABytes + kBBytes) / 4; i += blockDim.x) {
    words[i] = __uint_as_float((static_cast<uint32_t>(i) * 2654435761u) & 0x3f7fe000u);
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  if (thread / 128 >= groups) {
    return;
  }
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  const uint32_t b_base = base + kABytes + (thread / 128) * 256 * 16;
  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    d[i] = 0.0f;
  }
  uint32_t a_fragment[kSteps][4];
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      a_fragment[s][e] = (static_cast<uint32_t>(thread * 37 + s * 11 + e) * 2654435761u) &
                         0x3f7fe000u;
    }
  }
  __syncwarp();
  const long long start = clock64();
  for (int iteration = 0; iteration < iterations; ++iteration) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      // Tap (r, c) of a 3x3 kernel over 128-wide staged rows: r rows = r * 2 KB on, and with
      // kShifted c positions = 16 bytes each.
      const uint32_t b_offset = (s / 3) * 2048 + (kShifted ? (s % 3) * 16 : 0);
      const uint64_t b = descriptor(b_base + b_offset, kPlanePositions * 16);
      if (kRegisterA) {
        wgmma_rs(d, a_fragment[s], b);
      } else {
        wgmma_ss(d, descriptor(base + s * 2048, 1024), b);
      }
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  const long long stop = clock64();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    total += d[i];
  }
  sink[blockIdx.x * blockDim.x + thread] = total;
  if (thread % 128 == 0) {
    cycles[blockIdx.x * 2 + thread / 128] = stop - start;
  }
#else
  (void)iterations;
  (void)groups;
  (void)cycles;
  (void)sink;
#endif
}

template <bool kRegisterA, bool kShifted>
void run(const char* name, int sm_count, int groups) {
  constexpr int kIterations = 2000;
  constexpr int kShared = kABytes + kBBytes;
  auto kernel = probe<kRegisterA, kShifted>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared));
  long long* cycles = nullptr;
  float* sink = nullptr;
  CHECK(cudaMalloc(&cycles, sizeof(long long) * sm_count * 2));
  CHECK(cudaMalloc(&sink, sizeof(float) * sm_count * 256));
  kernel<<<sm_count, 256, kShared>>>(kIterations, groups, cycles, sink);  // warm-up
  CHECK(cudaGetLastError());
  kernel<<<sm_count, 256, kShared>>>(kIterations, groups, cycles, sink);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  long long* host = new long long[sm_count * 2];
  CHECK(cudaMemcpy(host, cycles, sizeof(long long) * sm_count * 2, cudaMemcpyDeviceToHost));
  double worst = 0.0;
  for (int i = 0; i < sm_count; ++i) {
    for (int g = 0; g < groups; ++g) {
      worst = host[2 * i + g] > worst ? static_cast<double>(host[2 * i + g]) : worst;
    }
  }
  // Cycles per wgmma for the SM as a whole: all groups' wgmmas share its tensor cores.
  const double per_wgmma = worst / (static_cast<double>(kIterations) * kSteps * groups);
  std::printf("%-34s groups=%d  %7.1f cycles per m64n128k8 TF32 wgmma per SM\n", name, groups,
              per_wgmma);
  delete[] host;
  CHECK(cudaFree(cycles));
  CHECK(cudaFree(sink));
}

}  // namespace

int main() {
  int sm_count = 0;
  CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, 0));
  for (int groups = 1; groups <= 2; ++groups) {
    run<false, false>("A smem, B aligned", sm_count, groups);
    run<false, true>("A smem, B shifted 16 B per tap", sm_count, groups);
    run<true, false>("A registers, B aligned", sm_count, groups);
    run<true, true>("A registers, B shifted 16 B per tap", sm_count, groups);
  }
  return 0;
}
