// The NCHW depthwise planes kernels' domain (forward/depthwise_planes.cuh, and the planes
// grad_input in backward/depthwise_backward.cu): host code without CUDA headers. A warp stages
// one whole plane as float in shared memory (the forward's input plane, grad_input's output
// plane of g) and computes the other plane from it; both planes are bounded, so that no warp
// walks more than a few thousand elements. The callers check the layout (dense NCHW), the
// multiplier (1) and the type (accumulated in float).
#pragma once

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_planes {

constexpr int kMaxPlaneElements = 1024;          // staged: 4 KB a warp, 32 KB a CTA of 8 warps
constexpr int kMaxComputedElements = 4 * 1024;   // the plane a warp computes from it

inline bool plane_counts_fit(int64_t staged, int64_t computed, int64_t planes) {
  return staged <= kMaxPlaneElements && computed <= kMaxComputedElements &&
         planes < (int64_t{1} << 30);
}

inline bool forward_applies(const ConvParams& p) {
  return plane_counts_fit(p.in_height * p.in_width, p.out_height * p.out_width,
                          p.batch * p.in_channels);
}

inline bool grad_input_applies(const ConvParams& p) {
  return plane_counts_fit(p.out_height * p.out_width, p.in_height * p.in_width,
                          p.batch * p.in_channels);
}

}  // namespace depthwise_planes
}  // namespace fusedconv
