// The forward kernel families' entry points, called by forward_plan.cu (the dispatch rule)
// and nowhere else. Each `applies` reads the current device; launchers never throw and return the
// launch's cudaError_t. params.workspace must hold the bytes the family asked for.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusedconv/params.h"

namespace fusedconv {

// Small problems (small_problem.cu): FP64 tensor-core MMAs on compute capability 8.0 and 9.0
// (unless FUSEDCONV_DISABLE_DMMA=1), float32 FFMA elsewhere. Float32 dense NCHW, groups 1, any
// stride and dilation, at most 16 output channels, in_channels x kernel_h x kernel_w <= 32 and
// batch x output plane below 2^31. Float32 accuracy or better in either precision mode; no
// workspace.
namespace small_problem {
bool applies(const ConvParams& params);
cudaError_t launch(const ConvParams& params, cudaStream_t stream);
}  // namespace small_problem

// Depthwise (depthwise.cu): groups == in_channels > 1 (any channel multiplier), dense NCHW or
// dense channels_last input and output in the same layout, any kernel, stride, padding and
// dilation, every dtype, input and batch x output channels x output rows x column strips below
// 2^31. Float32 accuracy (float64 for float64) in either precision mode; no workspace.
// `vector_shape`: the shapes its channels_last vector kernel takes (multiplier 1, whole
// 16-byte channel vectors, 3x3 or 5x5 at stride 1 or 2, no dilation); a call of that shape whose
// input or output is not 16-byte aligned runs the one-channel-per-lane kernel instead.
namespace depthwise {
bool applies(const ConvParams& params);
bool vector_shape(const ConvParams& params);
cudaError_t launch(const ConvParams& params, cudaStream_t stream);
}  // namespace depthwise

// Grouped (grouped.cu): groups > 1, float32 / float16 / bfloat16, dense NCHW or dense
// channels_last input and output in the same layout, any weight strides, kernel, stride,
// padding and dilation where one input channel's staged patch and weights fit 40 KB of shared
// memory; 32-bit offsets inside one image. Float32 FMAs (float32 accuracy in either precision
// mode), one rounding at the store; no workspace.
// `unrolled_shape`: the geometry of its unrolled instances (3x3, stride 1 or 2, no dilation).
namespace grouped {
bool applies(const ConvParams& params);
bool unrolled_shape(const ConvParams& params);
cudaError_t launch(const ConvParams& params, cudaStream_t stream);
}  // namespace grouped

// Channels_last GEMM (channels_last_gemm.cu): float16 / bfloat16, and float32 (one TF32 product
// where `allow_tf32`, 3xTF32 where not), groups 1, any kernel size, stride, padding and
// dilation, dense channels_last input and output, a weight with its input channels innermost
// (channels_last, or any 1x1), all three 16-byte aligned, channel counts whole 16-byte chunks,
// batch x output plane below 2^31, rows and columns below 2^30. float32 accumulation, one
// rounding at the store; no workspace. Compute capability 8.0 or newer (the library's minimum).
// `stages_runs`: input channels in no whole 16-byte vector (stems), staged as runs of
// kernel_w x C elements.
namespace channels_last_gemm {
bool applies(const ConvParams& params);
bool stages_runs(const ConvParams& params);
cudaError_t launch(const ConvParams& params, bool allow_tf32, cudaStream_t stream);
}  // namespace channels_last_gemm

// Hopper (wgmma/): `applies` on compute capability 9.0 with the sm_90a code built, stride 1 and
// dilation 1 on dense NCHW, more than 16 output channels, and a tile within shared memory for
// one of its variants: resident weights, up to 32 k steps of 8 input channels x one tap,
// float32, float16 or bfloat16 (those two in TF32 mode, which is exact for them); or streamed
// weights, up to 128 output channels, the same types. `workspace_bytes`: 0 for the resident variant,
// the split weights for the streamed one.
namespace wgmma {
cudaError_t forward_applies(const ConvParams& params, bool allow_tf32, bool& applies,
                            int64_t& workspace_bytes);
cudaError_t launch(const ConvParams& params, bool allow_tf32, cudaStream_t stream);
}  // namespace wgmma

// mma.sync tensor cores (mma_sync/): float32, float16 or bfloat16 dense NCHW, groups 1, any
// stride and dilation, where one chunk's staged tile fits shared memory. `workspace_bytes`: the split weights, 0
// where each CTA splits its own into shared memory.
namespace mma_sync {
cudaError_t forward_applies(const ConvParams& params, bool& applies, int64_t& workspace_bytes);
cudaError_t launch(const ConvParams& params, bool allow_tf32, cudaStream_t stream);
}  // namespace mma_sync

}  // namespace fusedconv
