// Process-wide opt-outs read from the environment (FUSEDCONV_DISABLE_WGMMA, _DISABLE_DMMA,
// FUSEDCONV_CPU_DIRECT): A/B timing switches and ways around a path should it misbehave on some
// setup. Plain C++, shared by the CUDA planners and the CPU operator. FUSEDCONV_PLAN, the
// planners' policy (a word, not a flag), is read in csrc/cuda/common/plan_policy.cu.
#pragma once

#include <cstdlib>

namespace fusedconv {

// On when set to anything that does not start with '0' ("1", "yes"; also "false", so README
// documents =1). Callers read it once into a function-local static, so the hot path never calls
// getenv.
inline bool environment_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && value[0] != '0';
}

}  // namespace fusedconv
