// The forward's dispatch rule, its one home: which kernel runs a call, and the workspace it
// needs. Under the default (measured) policy, in order:
//   0. depthwise convolutions (groups == in_channels > 1): the depthwise kernel, one launch, no
//      workspace, where it measured faster than the floor (NCHW float32 and bfloat16,
//      channels_last float32 3x3);
//   1. grouped convolutions (groups > 1, several channels per group): the grouped kernel,
//      where it measured faster than the floor (3x3 with 4-32 channels per group: float32
//      without TF32 in both layouts, NCHW float32 up to 16 channels per group, NCHW 16-bit
//      up to 8 at stride 1);
//   2. channels_last, groups 1, stride 1, more than 16 output channels, on Hopper: the wgmma
//      kernels in channels_last, where they measured faster than the channels_last GEMM and the
//      floor (3x3 kernels up to 128 outputs: float32 without TF32, and few input channels);
//   3. channels_last, groups 1: the channels_last GEMM, where it measured faster than the floor
//      (1x1 that does not reduce the channels; bfloat16 / float32 stems);
//   4. small problems (at most 16 output channels and 32 inputs per output position): the
//      small-problem kernels (DMMA / FFMA), one launch, no workspace;
//   5. on Hopper, more than 16 output channels: the wgmma kernels, where their tile fits and
//      they measured faster than the floor (NCHW; channels_last only under the fused policy);
//   6. the mma.sync tensor-core kernel (float32 / float16 / bfloat16 dense NCHW, any stride and
//      dilation), where its tile fits and it measured faster than the floor;
//   7. otherwise the floor: the operator library runs PyTorch's convolution plus one fused
//      activation pass (csrc/torch/ops_cuda.cpp).
// Each family's own `applies` says what it can run; the order and the crossovers (measured on an
// H200 against the floor, benchmarks/NOTES.md "Crossovers") are here. PlanPolicy::kFused drops
// the crossovers, kFloor takes the floor everywhere.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/configuration.h"
#include "common/depthwise_candidates.h"
#include "common/depthwise_rows_domain.h"
#include "common/plan_memo.h"
#include "common/plan_policy.h"
#include "forward/families.h"
#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace {

// Process-wide opt-out of the Hopper kernel (FUSEDCONV_DISABLE_WGMMA=1, read once): for A/B
// timing against the mma.sync kernel, and a way around it should it misbehave on some setup.
bool wgmma_disabled() {
  static const bool disabled = environment_flag("FUSEDCONV_DISABLE_WGMMA");
  return disabled;
}

// Up to 16 output channels the mma.sync kernel's 16-channel tiles win: one wgmma block pads
// them to 64 (measured crossover: 32 output channels run faster on wgmma; benchmarks/NOTES.md).
constexpr int64_t kMinWgmmaOutChannels = 17;

// The crossovers below come from benchmarks/crossover.py on an H200 (batch 32, float32 NCHW,
// both precision modes; benchmarks/results/h200_crossover.json, benchmarks/NOTES.md
// "Crossovers"): Python-call time of the fused kernel against the floor path. Applied on every
// architecture: the kernels and cuDNN's relative strengths are measured there only.

// The depthwise kernel beat the floor on all 112 NCHW shapes of its sweep (float32 and
// bfloat16, 1.11-2.21x: MobileNetV3 / EfficientNet channel counts at batch 32, k 3 and 5,
// stride 1 and 2). In channels_last, where cuDNN's NHWC kernels read channel vectors too, the
// vector kernel won all 28 float32 3x3 shapes (1.06-1.90x) but lost 14 of the 28 float32 5x5
// ones (to 0.76x) and 35 of the 56 bfloat16 ones (to 0.50x). float16 and float64 were not
// measured. With the candidate kernels (common/depthwise_candidates.h; fifteenth session,
// h200_crossover_depthwise_candidates.json and the GPU-time A/B, benchmarks/NOTES.md): NCHW
// float16 by vector rows won all 56 records (28 shapes, both precision modes, 1.21-3.32x),
// while outside the rows the older kernel lost to cuDNN's float16 kernel at stride 1 (0.67x,
// 0.78x in GPU time); channels_last float32 5x5 at stride 1 with staged filters won 12 of 14,
// the two losses where they are not staged (672 channels). channels_last 16-bit stays on the
// floor: in GPU time (batch 64) the floor beat our kernel on every such layer of the networks
// suite (0.56-0.89x). Where a candidate is the reason to leave the floor, the rule asks whether
// it runs (the switch): "none" never plans the older kernels where they lost to the floor.
bool depthwise_beats_floor(const ConvParams& p) {
  const bool nchw = p.input_strides.w == 1;  // channels_last has stride in_channels > 1 there
  if (nchw) {
    depthwise_rows::RowGeometry rows;
    const bool by_rows = depthwise_rows::row_geometry(p, rows) &&
                         run_candidate(DepthwiseCandidate::kRowsForward, p);
    return p.dtype == DType::kFloat32 || p.dtype == DType::kBFloat16 ||
           (p.dtype == DType::kFloat16 && by_rows);
  }
  if (p.dtype != DType::kFloat32 || !depthwise::vector_shape(p)) {
    return false;
  }
  const bool staged_5x5 = p.kernel_h == 5 && p.stride_h == 1 && p.stride_w == 1 &&
                          run_candidate(DepthwiseCandidate::kStagedForward, p);
  return p.kernel_h == 3 || staged_5x5;
}

// The grouped kernel (H100; benchmarks/NOTES.md, "Twentieth session";
// h100_crossover_grouped.json: Python calls at batch 32; h100_grouped_kernel_time.txt: GPU
// time at batch 64), measured on 3x3 layers of 4-32 input channels per group (as many output
// channels per group) and two grouped 1x1s:
// - float32 with TF32 disallowed, where cuDNN's grouped kernels run on CUDA cores too: won all
//   18 3x3 Python-call records in both layouts (1.61-8.03x);
// - float32 NCHW with TF32 allowed: won 8 of 9 (1.18-3.09x), and in GPU time every layer of up
//   to 16 channels per group (1.25-3.29x); 24 per group tied (1.07x), 32 lost (0.89x, 0.60x);
// - 16-bit NCHW at stride 1: up to 8 channels per group won both ways (Python calls
//   1.37-2.00x, GPU time 1.32-1.99x); 16 and 24 won Python calls only (GPU time 0.78x); at
//   stride 2 (8-32 per group) lost in GPU time (0.42-0.85x; cuDNN's 16-bit tensor cores);
// - channels_last with TF32 or in 16 bits, where cuDNN's NHWC kernels are 2-3x its NCHW ones:
//   lost 24 of 27 GPU-time records (its one 24-channel-per-group layer won in each dtype,
//   1.43-1.48x): the floor;
// - 1x1 (a batched GEMM per group; one tap per staged patch here): lost in GPU time but for
//   16-bit 480-channel ones (0.45-1.24x).
// Taken where every measure won, inside the measured range: the unrolled geometry (3x3,
// stride 1 or 2) with 4-32 input channels per group (2-3 per group were not measured), as
// below.
bool grouped_beats_floor(const ConvParams& p, bool allow_tf32) {
  const int64_t per_group = p.in_channels / p.groups;
  if (!grouped::unrolled_shape(p) || per_group < 4 || per_group > 32) {
    return false;
  }
  const bool nchw = p.input_strides.w == 1;  // channels_last has stride in_channels > 1 there
  if (p.dtype == DType::kFloat32) {
    return !allow_tf32 || (nchw && per_group <= 16);
  }
  return nchw && p.stride_h == 1 && per_group <= 8;
}

// The channels_last GEMM (benchmarks/NOTES.md, "First GPU round of kernels-next"): GPU time per
// call at batch 64 beat the floor on every 1x1 layer that does not reduce the channel count
// (1.07-2.34x, float16 / bfloat16 / float32 with TF32) and lost on those reducing from 240
// input channels on (0.49-0.97x) and on every 3x3 (0.34-0.83x, cuDNN's wgmma kernels).
// 3-channel stems (runs of kernel_w x C elements; nineteenth session, H100,
// h100_crossover_channels_last_stems.json): bfloat16 and float32 won all 12 in GPU time at batch
// 64 (1.31-2.54x) and all 18 Python-call records at batch 32 (1.41-2.66x), where cuDNN's
// channels_last kernels for 3 channels are slow; float16, where they are not, lost 5 of 6 in GPU
// time (0.68-0.94x): the floor. Up to 4 input channels (RGB / RGBA); wider runs were
// not measured.
// Dense layers of few input channels in whole vectors (twenty-fifth session, H100, GPU time at
// batch 64, `channels_last_gemm_kernel_time.py --small-channels`; 4-32 -> 16-64 channels, 3x3 /
// 5x5 / 7x7, stride 1 and 2, 56-224): float32 (TF32) won 11 of 12 up to 32 input channels
// (1.13-5.03x; 32 -> 32 at 112 tied, 0.99x), bfloat16 all 7 up to 16 (1.06-1.72x; 24 -> 24
// lost, 0.60x; 32 won 3 of 3), float16 lost 6 of 12 (cuDNN's float16 channels_last kernels
// are faster). 64 -> 64 lost in every type. With x staged through L1 where a pixel's channels
// fill less than a k step (twenty-sixth session, same sweep, h100_channels_last_l1.json):
// bfloat16 won all 11 up to 32 input channels (1.13-2.51x), float16 9 of 11 (1.11-1.77x; lost
// 16 -> 16, 0.87x, and tied 24 -> 24, 1.03x): both taken up to 32 input channels, float16 from
// 32 output channels on.
// Float32 with TF32 disallowed (3xTF32 against cuDNN's float32 kernels; twenty-sixth session,
// H100, GPU time at batch 64, `channels_last_gemm_kernel_time.py --float32-accuracy`,
// h100_channels_last_three_tf32.json): every 1x1 won (16 of 16, 1.09-4.08x), every dense layer
// of 4-64 input channels (13 of 13, 1.51-2.69x; 3x3 / 5x5 / 7x7, stride 1 and 2), every stride-2
// 3x3 of 128-512 channels (1.74-1.91x), the stems 5 of 6 (1.36-2.16x; 3 -> 16 at 224 tied,
// 0.99x); stride-1 3x3s of 128 and 256 channels lost (0.83x, 0.63x: cuDNN's Winograd), 512 at
// 7x7 won (1.44x). Taken inside the measured range: 1x1s, layers of up to 64 input and output
// channels (the stems among them), and strided kernels of up to 3x3 with more channels.
bool channels_last_three_tf32_beats_floor(const ConvParams& p) {
  const bool pointwise = p.kernel_h * p.kernel_w == 1;
  const bool strided_3x3 = (p.stride_h > 1 || p.stride_w > 1) && p.kernel_h <= 3 &&
                           p.kernel_w <= 3;
  return pointwise || strided_3x3 || (p.in_channels <= 64 && p.out_channels <= 64);
}

bool channels_last_gemm_beats_floor(const ConvParams& p, bool allow_tf32) {
  if (p.dtype == DType::kFloat32 && !allow_tf32) {
    return channels_last_three_tf32_beats_floor(p);
  }
  const bool stem = channels_last_gemm::stages_runs(p) && p.in_channels <= 4 &&
                   p.dtype != DType::kFloat16;
  const bool wide_enough_output = p.dtype != DType::kFloat16 || p.out_channels >= 32;
  const bool few_channels_spatial = !channels_last_gemm::stages_runs(p) &&
                                    p.kernel_h * p.kernel_w > 1 && p.in_channels <= 32 &&
                                    p.out_channels <= 64 && wide_enough_output;
  return (p.kernel_h * p.kernel_w == 1 && p.out_channels >= p.in_channels) || stem ||
         few_channels_spatial;
}

// wgmma beat the floor on 196 of the other 204 shapes it takes; it lost on 16 of the 24 1x1 convs
// that do not expand the channels from 64 input channels on (down to 0.49x against cuDNN's GEMM
// and the one-pass floor), which go to the floor.
// float16 / bfloat16 on the streamed variant (nineteenth session, H100, batch 32, Python calls,
// h100_crossover_fwd16.json) run TF32 products, half the rate of cuDNN's 16-bit ones, so they win
// on small calls only: with 3x3 kernels up to 2^30.8 multiply-adds (10 of 10, 1.11-1.96x), lost
// from 2^31.8 (0.65-0.97x); 1x1 (128 channels) won at 2^28.6 (1.19-1.25x), lost at 2^30.6
// (0.80-0.84x). The thresholds sit between. The resident variant keeps its rule: its one 16-bit
// 1x1 loss of that sweep (64 -> 128 at 56, 2^29.6, 0.92x) is a single shape, while the networks
// suite's 16-bit 1x1 layers on it run 2.0-2.5x eager at batch 64.
bool wgmma_beats_floor(const ConvParams& p, bool streamed) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  const bool non_expanding_1x1 = taps == 1 && p.in_channels >= 64 &&
                                 p.out_channels < p.in_channels;
  if (non_expanding_1x1) {
    return false;
  }
  if (!streamed || p.dtype == DType::kFloat32) {
    return true;
  }
  const int64_t multiply_adds =
      p.batch * p.out_height * p.out_width * p.out_channels * p.in_channels * taps;
  return multiply_adds <= (taps == 1 ? int64_t{1} << 29 : int64_t{1} << 31);
}

// The wgmma forward on channels_last against what the planner ran without it (the channels_last
// GEMM, or the floor; twenty-eighth session, H100, GPU time, crossover's layers at batch 64 and
// KernelBench v0.1 at batch 128, then wider layers of few input channels,
// `wgmma_channels_last_kernel_time.py [--wider]`, h100_wgmma_channels_last.json). 3x3 kernels
// only: it lost or tied on 1x1s but one (0.17-1.05x; 24 -> 144 in 3xTF32 won, 1.19x), where the
// GEMM's tiles and cuDNN fit better, and of larger kernels only one 5x5 shape in each type was
// measured. Up to 128 output channels (the widest measured).
// - float32 without TF32: every spatial layer won (17 of 17, 1.08-4.16x; 3-128 input channels,
//   24-128 outputs, resident and streamed): the GEMM issues its three products from registers.
// - float32 with TF32: up to 16 input channels into 48-128 outputs won (9 of 9, 1.07-3.64x;
//   v0.1 1.40x); into 32 outputs tied at 3x3 (0.97-1.01x: half of each 64-channel block is
//   padding; 5x5 won, 1.27x); from 24 input channels lost (0.46-0.98x, cuDNN's kernels).
// - float16 / bfloat16 (TF32 products at half the 16-bit rate): up to 8 input channels into
//   48-128 outputs won (14 of 14, 1.58-2.52x), bfloat16 into 32 too (1.36-1.46x; float16 8 -> 32
//   lost, 0.95x); 16 input channels lost into 32-64 outputs (0.60-0.64x, the GEMM) and won into
//   128 (1.25-1.27x, the floor); from 24 input channels all lost (0.22-0.53x).
bool channels_last_wgmma_beats(const ConvParams& p, bool allow_tf32) {
  if (p.kernel_h != 3 || p.kernel_w != 3 || p.out_channels > 128) {
    return false;
  }
  if (p.dtype == DType::kFloat32 && !allow_tf32) {
    return p.in_channels <= 128;
  }
  if (p.dtype == DType::kFloat32) {
    return p.in_channels <= 16 && p.out_channels >= 48;
  }
  const bool few_inputs = p.in_channels <= 8 &&
                          (p.out_channels >= 48 ||
                           (p.dtype == DType::kBFloat16 && p.out_channels >= 32));
  return few_inputs || (p.in_channels <= 16 && p.out_channels > 64);
}

// mma.sync beat the floor where the input has few channels (up to 8), and lost from 64 input
// channels on (down to 0.10x); in between it won or lost by shape. With 3xTF32, strided
// convolutions of 4-8 input channels were a toss-up (12 of 28 lost, 0.67-1.59x): the floor.
// float16 / bfloat16 run one TF32 product in either mode, like float32 with TF32 allowed: up to
// 8 input channels they won all 60 records of their sweep (nineteenth session, H100, batch 32,
// 1.04-3.46x; the stems at 224 1.05-3.46x); 16 channels won 35 of 36 (0.96-2.01x), not taken
// while measured by Python calls only.
bool mma_sync_beats_floor(const ConvParams& p, bool allow_tf32) {
  if (p.in_channels > 8) {
    return false;
  }
  const bool one_product = allow_tf32 || p.dtype != DType::kFloat32;
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  return one_product || p.in_channels <= 3 || !strided;
}

}  // namespace

cudaError_t plan_forward(const ConvParams& params, bool allow_tf32, ForwardPlan& plan) {
  plan = ForwardPlan{};
  if (!valid_geometry(params)) {
    return cudaErrorInvalidValue;
  }
  const PlanPolicy policy = begin_plan();
  if (params.batch * params.out_channels * params.out_height * params.out_width == 0) {
    plan.kernel = ForwardKernel::kNone;
    return cudaSuccess;
  }
  plan.kernel = ForwardKernel::kFloor;
  if (policy == PlanPolicy::kFloor) {
    return cudaSuccess;
  }
  const bool measured = policy == PlanPolicy::kMeasured;
  if (depthwise::applies(params) && (!measured || depthwise_beats_floor(params))) {
    plan.kernel = ForwardKernel::kDepthwise;
    return cudaSuccess;
  }
  if (grouped::applies(params) && (!measured || grouped_beats_floor(params, allow_tf32))) {
    plan.kernel = ForwardKernel::kGrouped;
    return cudaSuccess;
  }
  // The wgmma kernels: whether they apply, with their workspace (the streamed variant's).
  const ChannelsLastWgmma channels_last_choice = channels_last_wgmma();
  const bool channels_last =
      unit_stride_dense_channels_last(params) && !unit_stride_dense_nchw(params);
  bool wgmma_applies = false;
  int64_t wgmma_workspace = 0;
  if (!wgmma_disabled() && params.out_channels >= kMinWgmmaOutChannels &&
      !(channels_last && channels_last_choice == ChannelsLastWgmma::kNone)) {
    const cudaError_t status =
        wgmma::forward_applies(params, allow_tf32, wgmma_applies, wgmma_workspace);
    if (status != cudaSuccess) {
      return status;
    }
  }
  const bool streamed = wgmma_workspace > 0;  // only the streamed variant has a workspace
  if (wgmma_applies && channels_last &&
      (channels_last_choice == ChannelsLastWgmma::kAll ||
       (measured && channels_last_wgmma_beats(params, allow_tf32)))) {
    plan = ForwardPlan{ForwardKernel::kWgmma, wgmma_workspace};
    return cudaSuccess;
  }
  if (channels_last_gemm::applies(params) &&
      (!measured || channels_last_gemm_beats_floor(params, allow_tf32))) {
    plan.kernel = ForwardKernel::kChannelsLastGemm;
    return cudaSuccess;
  }
  if (small_problem::applies(params)) {
    plan.kernel = ForwardKernel::kSmallProblem;
    return cudaSuccess;
  }
  if (wgmma_applies &&
      (!measured || (!channels_last && wgmma_beats_floor(params, streamed)))) {
    plan = ForwardPlan{ForwardKernel::kWgmma, wgmma_workspace};
    return cudaSuccess;
  }
  bool applies = false;
  int64_t workspace_bytes = 0;
  if (measured && !mma_sync_beats_floor(params, allow_tf32)) {
    return cudaSuccess;
  }
  const cudaError_t status = mma_sync::forward_applies(params, applies, workspace_bytes);
  if (status == cudaSuccess && applies) {
    plan = ForwardPlan{ForwardKernel::kMmaSync, workspace_bytes};
  }
  return status;
}

cudaError_t launch_planned(const ConvParams& params, const ForwardPlan& plan, bool allow_tf32,
                           cudaStream_t stream) {
  switch (plan.kernel) {
    case ForwardKernel::kNone:
      return cudaSuccess;  // an empty output
    case ForwardKernel::kDepthwise:
      return depthwise::launch(params, stream);
    case ForwardKernel::kGrouped:
      return grouped::launch(params, stream);
    case ForwardKernel::kChannelsLastGemm:
      return channels_last_gemm::launch(params, allow_tf32, stream);
    case ForwardKernel::kSmallProblem:
      return small_problem::launch(params, stream);
    case ForwardKernel::kWgmma:
      return wgmma::launch(params, allow_tf32, stream);
    case ForwardKernel::kMmaSync:
      return mma_sync::launch(params, allow_tf32, stream);
    default:
      return cudaErrorNotSupported;  // the floor: the caller's convolution library runs it
  }
}

}  // namespace fusedconv
