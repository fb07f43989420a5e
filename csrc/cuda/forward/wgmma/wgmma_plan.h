// The wgmma forward's host-side plan: which variant and Layout a call gets (wgmma_plan.cu).
#pragma once

#include "common/device_limits.h"
#include "forward/wgmma/traits.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace wgmma {

// 3xTF32 for float32 unless TF32 mode is asked for; one TF32 product for float16 and bfloat16,
// whose values TF32 holds exactly (the products are exact, the sums float32 either way).
bool three_tf32_for(const ConvParams& p, bool allow_tf32);

// The resident variant where it applies (measured faster where both do), else the streamed
// one; false where neither does. Memoized per shape and thread.
bool choose_layout(const ConvParams& p, bool three_tf32, const DeviceLimits& limits,
                   Layout& layout);

}  // namespace wgmma
}  // namespace fusedconv
