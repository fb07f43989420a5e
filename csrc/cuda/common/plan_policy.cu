// The planners' process-wide policy, the depthwise candidates' and channels_last wgmma's
// switches and the plan counter (fusedconv/launch.h). Relaxed atomics: the switches are for
// tests and benchmarks, not synchronisation points; a plan reads the policy once, a depthwise
// launch or crossover reads its switch once.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/plan_policy.h"
#include "fusedconv/launch.h"

namespace fusedconv {
namespace {

// The index of environment `variable`'s value among `names` (launch.h); unset or anything else
// is 0, the default.
int choice_from_environment(const char* variable, const char* const (&names)[3]) {
  const char* value = std::getenv(variable);
  for (int i = 1; value != nullptr && i < 3; ++i) {
    if (std::strcmp(value, names[i]) == 0) {
      return i;
    }
  }
  return 0;
}

std::atomic<int>& policy_storage() {
  static std::atomic<int> policy{choice_from_environment("FUSEDCONV_PLAN", kPlanPolicyNames)};
  return policy;
}

std::atomic<int>& candidates_storage() {
  static std::atomic<int> choice{
      choice_from_environment("FUSEDCONV_DEPTHWISE_CANDIDATES", kDepthwiseCandidatesNames)};
  return choice;
}

std::atomic<int>& channels_last_wgmma_storage() {
  static std::atomic<int> choice{
      choice_from_environment("FUSEDCONV_CHANNELS_LAST_WGMMA", kChannelsLastWgmmaNames)};
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

ChannelsLastWgmma channels_last_wgmma() {
  return static_cast<ChannelsLastWgmma>(
      channels_last_wgmma_storage().load(std::memory_order_relaxed));
}

ChannelsLastWgmma set_channels_last_wgmma(ChannelsLastWgmma choice) {
  return static_cast<ChannelsLastWgmma>(
      channels_last_wgmma_storage().exchange(static_cast<int>(choice),
                                             std::memory_order_relaxed));
}

int64_t plan_count() { return plans_made.load(std::memory_order_relaxed); }

}  // namespace fusedconv
