// The small-problem backward's entry points (small_backward.cu), called by backward_plan.cu only;
// 3x3 stride-1 layers go by bands of rows (small_backward_bands.h) wherever that applies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {
namespace small_backward {

// The small-problem forward's domain (forward/small_problem.cu: KernelBench's v0 and its kin):
// float32, groups 1, dense NCHW x and y starting 16-byte aligned, at most 16 output channels and
// 32 inputs per output position (in_channels x kernel_h x kernel_w); any stride, padding and
// dilation; batch x output plane and batch x input plane below 2^31.
bool applies(const ConvParams& params);
// The weight gradient's per-CTA partials and their counters, 0 where neither grad_weight nor
// grad_bias is wanted.
cudaError_t workspace_bytes(const ConvParams& params, bool params_wanted, int64_t& bytes);
// The gradients `bp` asks for (non-null pointers) in one kernel launch (and a memset of the
// counters where grad_weight or grad_bias is wanted); bp.workspace holds workspace_bytes.
cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream);

}  // namespace small_backward
}  // namespace fusedconv
