// The small-problem backward by bands of rows (small_backward_bands.cu), called by
// small_backward.cu only, where it applies: that file's launch and workspace are then this one's.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {
namespace small_backward_bands {

// For a layer small_backward::applies to (its callers test that first: dtype, layout, groups and
// the index limits are not checked again here): 3x3, stride 1, no dilation, padding 0-2 on every
// side, and a band of at least 4 rows (or the whole plane) within the default 48 KB of shared
// memory.
bool applies(const ConvParams& params);
// Per-CTA weight partials (and the group sums above them) and their counters; 0 where neither
// grad_weight nor grad_bias is wanted.
cudaError_t workspace_bytes(const ConvParams& params, bool params_wanted, int64_t& bytes);
// The gradients `bp` asks for in one launch (after a memset of the counters where grad_weight or
// grad_bias is wanted); bp.workspace holds workspace_bytes.
cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream);

}  // namespace small_backward_bands
}  // namespace fusedconv
