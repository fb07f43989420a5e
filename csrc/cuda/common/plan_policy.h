// The planners' side of the plan policy (fusedconv/launch.h; plan_policy.cu).
#pragma once

#include "fusedconv/launch.h"

namespace fusedconv {

// Called once at the start of every plan_forward / plan_backward: counts the plan (plan_count)
// and returns the policy it follows.
PlanPolicy begin_plan();

}  // namespace fusedconv
