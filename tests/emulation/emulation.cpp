#include "emulation.h"

namespace emulation {

namespace {
thread_local cudaError_t last = cudaSuccess;
}

namespace {
std::mutex limits_mutex;
std::map<const void*, int>& shared_limits() {
  static std::map<const void*, int> limits;
  return limits;
}
}  // namespace

std::mutex& atomics_mutex() {
  static std::mutex mutex;
  return mutex;
}

void set_max_dynamic_shared(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(limits_mutex);
  shared_limits()[kernel] = bytes;
}

int max_dynamic_shared(const void* kernel) {
  std::lock_guard<std::mutex> lock(limits_mutex);
  const auto found = shared_limits().find(kernel);
  return found == shared_limits().end() ? 48 * 1024 : std::max(48 * 1024, found->second);
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

// Releases `barrier`'s waiting threads once every running thread has arrived.
static void release_if_complete(Barrier& barrier) {
  if (barrier.arrived > 0 && barrier.arrived == barrier.running) {
    barrier.arrived = 0;
    ++barrier.generation;
    barrier.released.notify_all();
  }
}

static void wait(Cta& cta, Barrier& barrier) {
  std::unique_lock<std::mutex> lock(cta.mutex);
  const uint64_t generation = barrier.generation;
  ++barrier.arrived;
  release_if_complete(barrier);
  barrier.released.wait(lock, [&] { return barrier.generation != generation; });
}

static unsigned linear_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

void sync_threads() {
  Cta& cta = *current_cta();
  wait(cta, cta.block);
}

unsigned lane_id() { return linear_thread() % 32; }

uint64_t& warp_slot(unsigned slot) {
  return current_cta()->lanes[linear_thread() / 32 * 64 + slot];
}

uint32_t* warp_exchange() { return current_cta()->exchange.data() + linear_thread() / 32 * 512; }

// Shared addresses are offsets in the CTA's dynamic shared memory (the kernels that take them
// keep their operands there).
uint32_t shared_offset(const void* pointer) {
  const char* base = reinterpret_cast<const char*>(current_cta()->shared.data());
  const char* at = static_cast<const char*>(pointer);
  const size_t size = current_cta()->shared.size() * sizeof(float4);
  if (at < base || at >= base + size) {
    __builtin_trap();  // not dynamic shared memory
  }
  return static_cast<uint32_t>(at - base);
}

void* shared_pointer(uint32_t offset) {
  if (offset >= current_cta()->shared.size() * sizeof(float4)) {
    __builtin_trap();
  }
  return reinterpret_cast<char*>(current_cta()->shared.data()) + offset;
}

void sync_warp() {
  Cta& cta = *current_cta();
  wait(cta, cta.warps[linear_thread() / 32]);
}

void thread_returned(Cta& cta) {
  std::lock_guard<std::mutex> lock(cta.mutex);
  --cta.block.running;
  release_if_complete(cta.block);
  Barrier& warp = cta.warps[linear_thread() / 32];
  --warp.running;
  release_if_complete(warp);
}

}  // namespace emulation
