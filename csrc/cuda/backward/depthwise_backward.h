// The depthwise backward's entry points (depthwise_backward.cu), called by backward_plan.cu only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backward/depthwise_slices.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace depthwise_backward {

// groups == in_channels == out_channels > 1 (multiplier 1), square 3x3 / 5x5 / 7x7 kernels, any
// stride, padding and dilation, dense NCHW x and y, or dense channels_last ones in whole 16-byte
// channel vectors, 16-byte aligned (grad_y read in y's layout), float32 / float16 / bfloat16,
// index spaces below 2^30.
bool applies(const ConvParams& params);
// The weight pass's partials (float32), 0 where neither grad_weight nor grad_bias is wanted;
// in channels_last g's storage first.
cudaError_t workspace_bytes(const ConvParams& params, bool params_wanted, int64_t& bytes);
// The gradients `bp` asks for (non-null pointers); bp.workspace holds workspace_bytes (in
// channels_last it and grad_input must be 16-byte aligned: cudaErrorInvalidValue otherwise).
cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream);

// The channels_last kernels (depthwise_backward_channels_last.cu), reached through the three
// above: `applies` is their layout test only (dense channels_last x and y, whole vectors,
// aligned), the rest of the domain being the callers'.
namespace channels_last {
bool applies(const ConvParams& params);
cudaError_t workspace_bytes(const ConvParams& params, bool params_wanted, int64_t& bytes);
cudaError_t launch(const ConvBackwardParams& bp, cudaStream_t stream);
// The sliding weight pass's shapes: 3x3 / 5x5 at stride 1 or 2, no dilation (7x7's 16-bit
// instances would hold 150 registers). Where it also runs: common/depthwise_candidates.h.
bool sliding_weight_pass_applies(const ConvParams& params);
}  // namespace channels_last

}  // namespace depthwise_backward
}  // namespace fusedconv
