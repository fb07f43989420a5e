// Plain-old-data description of one fused convolution call. Kernels and the CPU path take this struct
// and nothing from PyTorch (the FlashAttention `flash.h` habit): the GoogleTest suite links the core
// without libtorch, and the launchers stay callable from any host code.
#pragma once

#include <cstdint>

namespace fusedconv {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

constexpr int64_t element_bytes(DType dtype) {
  return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2;
}

// Element strides of a 4-D tensor, in (N, C, H, W) order whatever the memory layout is, so one
// kernel serves NCHW, channels_last and arbitrary non-contiguous views. 64-bit: a tensor may hold
// more than 2^31 elements.
struct Strides4 {
  int64_t n, c, h, w;
};

struct ConvParams {
  // Shapes. `in_channels` is the input's channel count (all groups together); the weight holds
  // in_channels / groups channels per output channel.
  int64_t batch;
  int64_t in_channels, in_height, in_width;
  int64_t out_channels, out_height, out_width;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  // Zero padding before the first row / column. Padding after the last one only changes the output
  // size, which out_height / out_width already carry ('same' padding with an even kernel is
  // asymmetric).
  int64_t pad_top, pad_left;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  Strides4 input_strides;
  Strides4 weight_strides;
  Strides4 output_strides;

  DType dtype;
  const void* input;
  const void* weight;
  const void* bias;  // nullptr when the convolution has no bias
  void* output;
  // Device scratch of forward_workspace_bytes(*this) bytes (launch.h), or nullptr when that is 0.
  void* workspace;
};

// The geometry every entry point assumes (the torch layer checks it with messages first): no
// negative size, kernel, stride and dilation at least 1, no negative leading padding, groups
// dividing both channel counts. Without it the kernels' 32-bit casts wrap and the CPU path
// divides by a zero stride; the planners and the CPU entry refuse such a call instead.
inline bool valid_geometry(const ConvParams& p) {
  const bool sizes = p.batch >= 0 && p.in_channels >= 0 && p.in_height >= 0 && p.in_width >= 0 &&
                     p.out_channels >= 0 && p.out_height >= 0 && p.out_width >= 0;
  const bool taps = p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1 &&
                    p.dilation_h >= 1 && p.dilation_w >= 1 && p.pad_top >= 0 && p.pad_left >= 0;
  const bool grouped = p.groups >= 1 && p.in_channels % p.groups == 0 &&
                       p.out_channels % p.groups == 0;
  return sizes && taps && grouped;
}

// Element-wise activation in place: data = relu(hardswish(data + bias[channel])), `numel`
// elements. The bias is optional (nullptr: none; CUDA only): element i's channel is
// (i / channel_stride) % channels, so channel_stride is H*W for NCHW and 1 for channels_last.
struct ActivationParams {
  int64_t numel;
  DType dtype;
  void* data;
  const void* bias = nullptr;
  int64_t channels = 1;
  int64_t channel_stride = 1;
};

// Element-wise backward of the activation: grad_input = grad_output * f'(output), all three tensors
// of `numel` elements, contiguous in the same memory order. With grad_bias (CUDA only,
// launch_hardswish_relu_bias_grad) also grad_bias[c] = the sum of grad_input over channel c,
// the tensors being [numel / (channels x channel_stride), channels, channel_stride]:
// channel_stride is H*W for NCHW and 1 for channels_last, as ActivationParams'.
struct ActivationGradParams {
  int64_t numel;
  DType dtype;
  const void* grad_output;
  const void* output;
  void* grad_input;
  void* grad_bias = nullptr;
  int64_t channels = 1;
  int64_t channel_stride = 1;
  // Device scratch of hardswish_relu_bias_grad_workspace_bytes(*this) bytes (launch.h).
  void* workspace = nullptr;
};

// Backward of one fused call: from grad_output (dL/dy) and the saved x, W and y, any of grad_input,
// grad_weight and grad_bias (a null pointer: not wanted). `conv` is the forward's description
// (input = x, weight = W, output = y); grad_output shares y's strides (output_strides), grad_input
// x's (input_strides); grad_weight is dense [out_channels, in_channels / groups, kh, kw].
struct ConvBackwardParams {
  ConvParams conv;
  const void* grad_output;
  void* grad_input;
  void* grad_weight;
  void* grad_bias;
  // Device scratch of backward_workspace_bytes(*this) bytes (launch.h), or nullptr when that is 0.
  void* workspace;
};

}  // namespace fusedconv
