// The planners' process-wide policy, the depthwise candidates' switch and the plan counter
// (fusedconv/launch.h). Relaxed atomics: both switches are for tests and benchmarks, not
// synchronisation points; a plan reads the policy once, a depthwise launch the switch once.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/plan_policy.h"
#include "fusedconv/launch.h"

namespace fusedconv {
namespace {

// FUSEDCONV_PLAN=fused|floor|measured; unset or anything else is measured, the default.
PlanPolicy policy_from_environment() {
  const char* value = std::getenv("FUSEDCONV_PLAN");
  if (value != nullptr && std::strcmp(value, "fused") == 0) {
    return PlanPolicy::kFused;
  }
  if (value != nullptr && std::strcmp(value, "floor") == 0) {
    return PlanPolicy::kFloor;
  }
  return PlanPolicy::kMeasured;
}

std::atomic<int>& policy_storage() {
  static std::atomic<int> policy{static_cast<int>(policy_from_environment())};
  return policy;
}

// FUSEDCONV_DEPTHWISE_CANDIDATES=all|none|measured; unset or anything else is measured.
DepthwiseCandidates candidates_from_environment() {
  const char* value = std::getenv("FUSEDCONV_DEPTHWISE_CANDIDATES");
  if (value != nullptr && std::strcmp(value, "all") == 0) {
    return DepthwiseCandidates::kAll;
  }
  if (value != nullptr && std::strcmp(value, "none") == 0) {
    return DepthwiseCandidates::kNone;
  }
  return DepthwiseCandidates::kMeasured;
}

std::atomic<int>& candidates_storage() {
  static std::atomic<int> choice{static_cast<int>(candidates_from_environment())};
  return choice;
}

std::atomic<int64_t> plans_made{0};

}  // namespace

PlanPolicy plan_policy() {
  return static_cast<PlanPolicy>(policy_storage().load(std::memory_order_relaxed));
}

PlanPolicy begin_plan() {
  plans_made.fetch_add(1, std::memory_order_relaxed);
  return plan_policy();
}

PlanPolicy set_plan_policy(PlanPolicy policy) {
  return static_cast<PlanPolicy>(
      policy_storage().exchange(static_cast<int>(policy), std::memory_order_relaxed));
}

DepthwiseCandidates depthwise_candidates() {
  return static_cast<DepthwiseCandidates>(candidates_storage().load(std::memory_order_relaxed));
}

DepthwiseCandidates set_depthwise_candidates(DepthwiseCandidates choice) {
  return static_cast<DepthwiseCandidates>(
      candidates_storage().exchange(static_cast<int>(choice), std::memory_order_relaxed));
}

int64_t plan_count() { return plans_made.load(std::memory_order_relaxed); }

}  // namespace fusedconv
