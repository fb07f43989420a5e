#include "emulation.h"

namespace emulation {

namespace {
thread_local cudaError_t last = cudaSuccess;
}

Cta*& current_cta() {
  thread_local Cta* cta = nullptr;
  return cta;
}

void set_last_error(cudaError_t error) { last = error; }

cudaError_t last_error() {
  const cudaError_t error = last;
  last = cudaSuccess;
  return error;
}

void* dynamic_shared() { return current_cta()->shared.data(); }

// Releases the waiting threads once every running thread has arrived.
static void release_if_complete(Cta& cta) {
  if (cta.arrived > 0 && cta.arrived == cta.running) {
    cta.arrived = 0;
    ++cta.generation;
    cta.released.notify_all();
  }
}

void sync_threads() {
  Cta& cta = *current_cta();
  std::unique_lock<std::mutex> lock(cta.mutex);
  const uint64_t generation = cta.generation;
  ++cta.arrived;
  release_if_complete(cta);
  cta.released.wait(lock, [&] { return cta.generation != generation; });
}

void thread_returned(Cta& cta) {
  std::lock_guard<std::mutex> lock(cta.mutex);
  --cta.running;
  release_if_complete(cta);
}

}  // namespace emulation
