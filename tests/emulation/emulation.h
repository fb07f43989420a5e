// Runs a CUDA-core kernel's own source on the host (tests/emulation/README.md): each CTA's
// threads are std::threads, __syncthreads (and __syncwarp, per warp of 32) a barrier among those
// not yet returned (as on the GPU), shared memory per-CTA buffers poisoned with NaN bytes, CTAs
// one after another.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <typeindex>
#include <typeinfo>
#include <vector>

#include "cuda_runtime.h"

namespace emulation {

// A barrier among the threads of a group (the CTA, or one warp) that have not returned.
struct Barrier {
  int running = 0;  // threads not yet returned
  int arrived = 0;  // threads waiting
  uint64_t generation = 0;
  std::condition_variable released;  // its own: a warp's release wakes that warp only
};

struct Cta {
  std::mutex mutex;
  Barrier block;
  std::vector<Barrier> warps;
  std::vector<uint64_t> lanes;  // __shfl exchange slots, two per thread
  std::vector<uint32_t> exchange;  // mma.sync / ldmatrix fragments, 16 words per thread
  std::vector<float4> shared;
  // Static __shared__ arrays, one per declaration, made on first use (NaN bytes).
  std::map<std::type_index, std::unique_ptr<float4[]>> statics;
};

Cta*& current_cta();
void set_last_error(cudaError_t error);
void thread_returned(Cta& cta);

template <typename Array, typename Key>
Array& static_shared(Key) {
  Cta& cta = *current_cta();
  std::lock_guard<std::mutex> lock(cta.mutex);
  std::unique_ptr<float4[]>& storage = cta.statics[std::type_index(typeid(Key))];
  if (!storage) {
    const size_t words = sizeof(Array) / sizeof(float4) + 1;
    storage.reset(new float4[words]);
    std::memset(static_cast<void*>(storage.get()), 0xFF, words * sizeof(float4));
  }
  return *reinterpret_cast<Array*>(storage.get());
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), emulated: the source transformation
// (emulate_source.py) writes each launch as this call.
template <typename... Parameters, typename... Arguments>
cudaError_t launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t /*stream*/,
                   void (*kernel)(Parameters...), const Arguments&... arguments) {
  const unsigned threads = block.x * block.y * block.z;
  const size_t shared_limit = static_cast<size_t>(
      max_dynamic_shared(reinterpret_cast<const void*>(kernel)));
  if (threads == 0 || threads > 1024 || shared_bytes > shared_limit || grid.x == 0) {
    set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  const std::tuple<Parameters...> copied(arguments...);
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Cta cta;
        cta.block.running = static_cast<int>(threads);
        cta.warps = std::vector<Barrier>((threads + 31) / 32);
        cta.lanes.resize(cta.warps.size() * 64);
        cta.exchange.resize(cta.warps.size() * 32 * 16);
        for (unsigned w = 0; w < cta.warps.size(); ++w) {
          cta.warps[w].running = static_cast<int>(std::min(32u, threads - 32 * w));
        }
        cta.shared.resize(shared_bytes / sizeof(float4) + 1);
        std::memset(cta.shared.data(), 0xFF, cta.shared.size() * sizeof(float4));  // NaN
        std::vector<std::thread> team;
        team.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          team.emplace_back([&, t] {
            current_cta() = &cta;
            threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            blockIdx = uint3{bx, by, bz};
            blockDim = uint3{block.x, block.y, block.z};
            gridDim = uint3{grid.x, grid.y, grid.z};
            std::apply(kernel, copied);
            thread_returned(cta);
          });
        }
        for (std::thread& thread : team) {
          thread.join();
        }
      }
    }
  }
  return cudaSuccess;
}

}  // namespace emulation
