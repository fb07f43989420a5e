// The host-side plan memo of the kernel families (their environment switches:
// fusedconv/environment.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/device_limits.h"
#include "fusedconv/environment.h"
#include "fusedconv/params.h"

namespace fusedconv {

// A call's shape and device limits, the key under which a kernel family memoizes its plan: the
// host-side tile search then runs once per shape and thread instead of on every call (a forward
// call planned up to three times: workspace size, dispatch, launch). Pointers and strides are
// not part of it: plans depend on shapes only (the dense-layout checks come before planning).
struct PlanKey {
  int64_t fields[20];

  bool operator==(const PlanKey& other) const {
    return std::memcmp(fields, other.fields, sizeof(fields)) == 0;
  }
};

inline PlanKey plan_key(const ConvParams& p, const DeviceLimits& limits, int64_t variant) {
  return PlanKey{{p.batch, p.in_channels, p.in_height, p.in_width, p.out_channels, p.out_height,
                  p.out_width, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_top,
                  p.pad_left, p.dilation_h, p.dilation_w, p.groups, limits.sm_count,
                  limits.max_shared_bytes, limits.cc_major * 100 + limits.cc_minor, variant}};
}

// The last shape a thread planned and its plan (one per plan function: `thread_local`).
template <typename Plan>
struct PlanMemo {
  bool valid = false;
  PlanKey key{};
  bool applies = false;
  Plan plan{};

  // The memoized answer of make(plan) -> applies for `key`, computing it on a new key.
  template <typename Make>
  bool get(const PlanKey& wanted, Plan& out, Make&& make) {
    if (!valid || !(key == wanted)) {
      valid = false;  // a throwing make cannot leave a stale entry behind (none throws today)
      applies = make(plan);
      key = wanted;
      valid = true;
    }
    out = plan;
    return applies;
  }
};

}  // namespace fusedconv
