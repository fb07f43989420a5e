// Question: what does each piece of the v0.1 wgmma forward cost, and is a kernel change faster?
// Measured A/B on one machine in one device call, with builds of patched copies of a kernel file.
// Answer (H100, 3xTF32 / TF32 ms, benchmarks/NOTES.md "v0.1 is store-bound"): the global stores.
// The kernel as it then shipped took 0.278-0.282 / 0.284-0.285; with its stores predicated off
// 0.199 / 0.147, without input loads 0.251 / 0.248, without the producer's split 0.289 / 0.285.
// Later A/B runs (epilogue runs from 128- or 256-byte boundaries, contiguous item ranges per
// CTA) are in the same notes.
//
// Standalone timing of the forward launchers, without PyTorch. Not part of the package; the
// package's own timing tool is benchmarks/forward_kernel_times.py. Build (the sources are
// CUDA_KERNEL_SOURCES of fusedconv/build_config.py; any of them may be a patched copy):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
//        -DFUSEDCONV_HAS_SM90A=1 -Icsrc/include -Icsrc/cuda experiments/forward_bench.cu \
//        csrc/cuda/forward/forward_plan.cu csrc/cuda/forward/generic.cu \
//        csrc/cuda/forward/small_problem.cu csrc/cuda/forward/mma_sync/mma_sync_launch.cu \
//        csrc/cuda/forward/wgmma/wgmma_plan.cu csrc/cuda/forward/wgmma/wgmma_launch.cu \
//        csrc/cuda/backward/backward_plan.cu csrc/cuda/backward/dgrad.cu \
//        csrc/cuda/backward/wgrad.cu csrc/cuda/backward/activation_grad.cu -o forward_bench
// Run: forward_bench CASE [tf32] [label], CASE one of v0.1, v0, a sweep case
// (CinxCoutxHWkK[pP]nN, as `fusedconv bench` names them), or fill
// (cudaMemsetAsync of v0.1's output: the write bandwidth on hand). Prints one line:
// label, case, median GPU time per call (CUDA-graph replay of 20 calls, 30 replays), effective
// bandwidth, relative L2 error of 4096 sampled outputs against a float64 host reference and
// the count of outputs left unwritten (NaN-poisoned before the first call).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace {

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    const cudaError_t status_ = (call);                                               \
    if (status_ != cudaSuccess) {                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,              \
                   cudaGetErrorString(status_));                                      \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

struct Shape {
  int64_t batch, in_channels, size, out_channels, kernel, padding;
  bool uniform_input;  // torch.rand (v0.1) or torch.randn (v0), as KernelBench draws them
};

// "v0.1", "v0", or a sweep case named as `fusedconv bench` names them: CinxCoutxHWkK[pP]nN.
bool parse_case(const std::string& name, Shape& s) {
  if (name == "v0.1") {
    s = Shape{128, 8, 128, 64, 3, 0, true};
    return true;
  }
  if (name == "v0") {
    s = Shape{128, 3, 32, 16, 3, 0, false};
    return true;
  }
  long long in_channels, out_channels, size, kernel, padding = 0, batch;
  char rest[32] = {0};
  if (std::sscanf(name.c_str(), "%lldx%lldx%lldk%lld%31s", &in_channels, &out_channels, &size,
                  &kernel, rest) != 5) {
    return false;
  }
  if (std::sscanf(rest, "p%lldn%lld", &padding, &batch) != 2 &&
      std::sscanf(rest, "n%lld", &batch) != 1) {
    return false;
  }
  s = Shape{batch, in_channels, size, out_channels, kernel, padding, false};
  return true;
}

double reference_output(const Shape& s, const std::vector<float>& x, const std::vector<float>& w,
                        const std::vector<float>& b, int64_t index) {
  const int64_t out_size = s.size + 2 * s.padding - s.kernel + 1;
  const int64_t col = index % out_size;
  const int64_t row = index / out_size % out_size;
  const int64_t channel = index / (out_size * out_size) % s.out_channels;
  const int64_t image = index / (out_size * out_size * s.out_channels);
  double z = b[channel];
  for (int64_t c = 0; c < s.in_channels; ++c) {
    for (int64_t r = 0; r < s.kernel; ++r) {
      for (int64_t q = 0; q < s.kernel; ++q) {
        const int64_t in_row = row + r - s.padding, in_col = col + q - s.padding;
        if (in_row < 0 || in_row >= s.size || in_col < 0 || in_col >= s.size) {
          continue;
        }
        z += double{w[((channel * s.in_channels + c) * s.kernel + r) * s.kernel + q]} *
             x[((image * s.in_channels + c) * s.size + in_row) * s.size + in_col];
      }
    }
  }
  const double y = z * std::min(std::max(z + 3.0, 0.0), 6.0) / 6.0;
  return y > 0.0 ? y : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s v0.1|v0|CASE|fill [tf32] [label]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const bool tf32 = argc > 2 && std::string(argv[2]) == "tf32";
  const std::string label = argc > 3 ? argv[3] : "-";
  Shape s{128, 8, 128, 64, 3, 0, true};  // v0.1's output, for fill
  if (name != "fill" && !parse_case(name, s)) {
    std::fprintf(stderr, "unknown case %s\n", name.c_str());
    return 2;
  }
  const int64_t out_size = s.size + 2 * s.padding - s.kernel + 1;
  const int64_t x_count = s.batch * s.in_channels * s.size * s.size;
  const int64_t w_count = s.out_channels * s.in_channels * s.kernel * s.kernel;
  const int64_t y_count = s.batch * s.out_channels * out_size * out_size;

  std::mt19937_64 generator(20261125);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float bound = 1.0f / std::sqrt(static_cast<float>(s.in_channels * s.kernel * s.kernel));
  std::uniform_real_distribution<float> parameter(-bound, bound);
  std::vector<float> x(x_count), w(w_count), b(s.out_channels);
  for (float& v : x) {
    v = s.uniform_input ? uniform(generator) : normal(generator);
  }
  for (float& v : w) {
    v = parameter(generator);
  }
  for (float& v : b) {
    v = parameter(generator);
  }

  float *x_device, *w_device, *b_device, *y_device;
  CHECK_CUDA(cudaMalloc(&x_device, x_count * 4));
  CHECK_CUDA(cudaMalloc(&w_device, w_count * 4));
  CHECK_CUDA(cudaMalloc(&b_device, s.out_channels * 4));
  CHECK_CUDA(cudaMalloc(&y_device, y_count * 4));
  CHECK_CUDA(cudaMemcpy(x_device, x.data(), x_count * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(w_device, w.data(), w_count * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(b_device, b.data(), s.out_channels * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(y_device, 0xff, y_count * 4));  // NaN

  fusedconv::ConvParams p{};
  p.batch = s.batch;
  p.in_channels = s.in_channels;
  p.in_height = p.in_width = s.size;
  p.out_channels = s.out_channels;
  p.out_height = p.out_width = out_size;
  p.kernel_h = p.kernel_w = s.kernel;
  p.pad_top = p.pad_left = s.padding;
  p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = p.groups = 1;
  p.input_strides = {s.in_channels * s.size * s.size, s.size * s.size, s.size, 1};
  p.weight_strides = {s.in_channels * s.kernel * s.kernel, s.kernel * s.kernel, s.kernel, 1};
  p.output_strides = {s.out_channels * out_size * out_size, out_size * out_size, out_size, 1};
  p.dtype = fusedconv::DType::kFloat32;
  p.input = x_device;
  p.weight = w_device;
  p.bias = b_device;
  p.output = y_device;
  int64_t workspace_bytes = 0;
  CHECK_CUDA(fusedconv::forward_workspace_bytes(p, tf32, workspace_bytes));
  if (workspace_bytes > 0) {
    CHECK_CUDA(cudaMalloc(&p.workspace, workspace_bytes));
  }

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto launch = [&]() {
    if (name == "fill") {
      CHECK_CUDA(cudaMemsetAsync(y_device, 0, y_count * 4, stream));
    } else {
      CHECK_CUDA(fusedconv::launch_conv_hardswish_relu(p, tf32, stream));
    }
  };
  launch();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  int64_t unwritten = 0;
  double error_squares = 0.0, reference_squares = 0.0;
  if (name != "fill") {
    std::vector<float> y(y_count);
    CHECK_CUDA(cudaMemcpy(y.data(), y_device, y_count * 4, cudaMemcpyDeviceToHost));
    for (float v : y) {
      unwritten += std::isnan(v) ? 1 : 0;
    }
    std::uniform_int_distribution<int64_t> pick(0, y_count - 1);
    for (int i = 0; i < 4096; ++i) {
      const int64_t index = pick(generator);
      const double expected = reference_output(s, x, w, b, index);
      error_squares += (y[index] - expected) * (y[index] - expected);
      reference_squares += expected * expected;
    }
  }

  constexpr int kCallsPerGraph = 20;
  cudaGraph_t graph;
  cudaGraphExec_t graph_exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kCallsPerGraph; ++i) {
    launch();
  }
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&graph_exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) {
    CHECK_CUDA(cudaGraphLaunch(graph_exec, stream));
  }
  std::vector<float> per_call;
  for (int i = 0; i < 30; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(cudaGraphLaunch(graph_exec, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    per_call.push_back(ms / kCallsPerGraph);
  }
  std::sort(per_call.begin(), per_call.end());
  const double median_ms = per_call[per_call.size() / 2];
  const double bytes = name == "fill" ? y_count * 4.0 : (x_count + y_count) * 4.0;
  std::printf("%-24s %-5s %-6s median %.4f ms  min %.4f  %.2f TB/s  err %.2e  unwritten %lld\n",
              label.c_str(), name.c_str(), tf32 ? "tf32" : "fp32", median_ms, per_call[0],
              bytes / (median_ms * 1e-3) / 1e12,
              reference_squares > 0 ? std::sqrt(error_squares / reference_squares) : 0.0,
              static_cast<long long>(unwritten));
  return 0;
}
