// The fusedconv operator library: schema (defined once, here), validation, the CPU kernels'
// registration and the autograd kernel. CUDA kernels register in ops_cuda.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "fusedconv/activation.h"
#include "fusedconv/cpu.h"
#include "fusedconv/environment.h"
#include "fusedconv/params.h"
#include "fusedconv/shape.h"
#include "op_common.h"

namespace fusedconv {
namespace {

constexpr const char* kOpName = "conv2d_hardswish_relu";

DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      return DType::kFloat32;
  }
}

Strides4 strides_of(const at::Tensor& t) {
  return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

void check_dtype_supported(const at::Tensor& t, const char* name) {
  const at::ScalarType type = t.scalar_type();
  if (t.is_cuda()) {
    TORCH_CHECK_TYPE(type == at::kFloat || type == at::kHalf || type == at::kBFloat16 ||
                         type == at::kDouble,
                     kOpName, ": expected ", name,
                     " to be float32, float16, bfloat16 or float64 on CUDA, got ", type);
  } else {
    TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble || type == at::kBFloat16 ||
                         type == at::kHalf,
                     kOpName, ": expected ", name,
                     " to be float32, float64, bfloat16 or float16 on the CPU, got ", type);
  }
}

void check_same_device_and_dtype(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.device() == input.device(), kOpName, ": expected ", name,
                    " on the input's device ", input.device(), ", got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), kOpName, ": expected ", name,
                   " to have the input's dtype ", input.scalar_type(), ", got ",
                   t.scalar_type());
}

void check_pair(at::IntArrayRef values, size_t count, const char* name, bool allow_zero) {
  TORCH_CHECK_VALUE(values.size() == count, kOpName, ": expected ", name, " to have ", count,
                    " values, got ", values.size());
  for (int64_t v : values) {
    TORCH_CHECK_VALUE(allow_zero ? v >= 0 : v > 0, kOpName, ": expected every ", name,
                      allow_zero ? " value to be >= 0" : " value to be >= 1", ", got ", values);
  }
}

// torch.nn.functional.conv2d picks channels_last output when the input or the weight suggests it
// (cudnn_conv_suggest_memory_format / mkldnn_conv_use_channels_last), contiguous otherwise; and
// contiguous for an empty batch or channel dimension (its "Empty" backend) and for float64 on
// CUDA (cuDNN's suggestion excludes double). fusedconv/ops.py's meta kernel has the same rule.
at::MemoryFormat output_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.size(0) == 0 || input.size(1) == 0 ||
      (input.is_cuda() && input.scalar_type() == at::kDouble)) {
    return at::MemoryFormat::Contiguous;
  }
  if (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

}  // namespace

bool resolve_allow_tf32(c10::optional<bool> allow_tf32) {
  if (allow_tf32.has_value()) {
    return *allow_tf32;
  }
  // What PyTorch's own convolution reads: from 2.9 the per-operation setting
  // (torch.backends.cudnn.conv.fp32_precision; named by a string in 2.9, by an enum from 2.10),
  // before it torch.backends.cudnn.allow_tf32.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 9
  return at::globalContext().allowTF32CuDNN("conv");
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

ValidatedConv validate_conv(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(input.dim() == 4, kOpName,
                    ": expected input to be a 4-D tensor (N, C, H, W), got a ", input.dim(),
                    "-D tensor of shape ", input.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, kOpName,
                    ": expected weight to be a 4-D tensor (out_channels, in_channels / groups, "
                    "kernel_h, kernel_w), got a ",
                    weight.dim(), "-D tensor of shape ", weight.sizes());
  check_dtype_supported(input, "input");
  check_same_device_and_dtype(weight, "weight", input);
  check_pair(stride, 2, "stride", false);
  check_pair(padding, 4, "padding", true);
  check_pair(dilation, 2, "dilation", false);
  TORCH_CHECK_VALUE(groups >= 1, kOpName, ": expected groups >= 1, got ", groups);

  const int64_t out_channels = weight.size(0);
  const int64_t in_channels = input.size(1);
  TORCH_CHECK_VALUE(out_channels >= 1, kOpName,
                    ": expected weight to have at least one output channel, got weight of shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.size(1) >= 1 && weight.size(2) >= 1 && weight.size(3) >= 1, kOpName,
                    ": expected weight's in_channels / groups, kernel_h and kernel_w to be >= 1, "
                    "got weight of shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(out_channels % groups == 0, kOpName,
                    ": expected out_channels (weight.size(0) = ", out_channels,
                    ") to be divisible by groups = ", groups);
  TORCH_CHECK_VALUE(in_channels == weight.size(1) * groups, kOpName, ": expected input to have ",
                    weight.size(1) * groups, " channels (weight.size(1) = ", weight.size(1),
                    " x groups = ", groups, "), got input of shape ", input.sizes());

  at::Tensor bias_tensor;
  if (bias.has_value() && bias->defined()) {
    bias_tensor = *bias;
    check_same_device_and_dtype(bias_tensor, "bias", input);
    TORCH_CHECK_VALUE(bias_tensor.dim() == 1 && bias_tensor.size(0) == out_channels, kOpName,
                      ": expected bias of shape [", out_channels,
                      "] (one value per output channel), got ", bias_tensor.sizes());
    bias_tensor = bias_tensor.contiguous();
  }

  const int64_t out_height = conv_output_size(input.size(2), padding[0], padding[1],
                                              weight.size(2), stride[0], dilation[0]);
  const int64_t out_width = conv_output_size(input.size(3), padding[2], padding[3],
                                             weight.size(3), stride[1], dilation[1]);
  TORCH_CHECK_VALUE(
      out_height >= 1 && out_width >= 1, kOpName, ": input of spatial size ", input.size(2), "x",
      input.size(3), " (padded: ", input.size(2) + padding[0] + padding[1], "x",
      input.size(3) + padding[2] + padding[3], ") is smaller than the dilated kernel ",
      dilated_kernel_extent(weight.size(2), dilation[0]), "x",
      dilated_kernel_extent(weight.size(3), dilation[1]), " (weight shape ", weight.sizes(),
      ", dilation ", dilation, ")");

  ValidatedConv conv;
  conv.bias = bias_tensor;
  conv.out_height = out_height;
  conv.out_width = out_width;
  return conv;
}

ConvParams conv_params(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups) {
  ConvParams p{};
  p.batch = input.size(0);
  p.in_channels = input.size(1);
  p.in_height = input.size(2);
  p.in_width = input.size(3);
  p.out_channels = weight.size(0);
  p.out_height = output.size(2);
  p.out_width = output.size(3);
  p.kernel_h = weight.size(2);
  p.kernel_w = weight.size(3);
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_top = padding[0];
  p.pad_left = padding[2];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  p.groups = groups;
  p.input_strides = strides_of(input);
  p.weight_strides = strides_of(weight);
  p.output_strides = strides_of(output);
  p.dtype = to_dtype(input.scalar_type());
  p.input = input.data_ptr();
  p.weight = weight.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.output = output.data_ptr();
  p.workspace = nullptr;
  return p;
}

std::array<int64_t, 4> dense_strides(at::IntArrayRef sizes, at::MemoryFormat format) {
  if (format == at::MemoryFormat::ChannelsLast) {
    const std::vector<int64_t> strides = c10::get_channels_last_strides_2d(sizes);
    return {strides[0], strides[1], strides[2], strides[3]};
  }
  const int64_t w = std::max<int64_t>(sizes[3], 1);
  const int64_t hw = std::max<int64_t>(sizes[2], 1) * w;
  return {std::max<int64_t>(sizes[1], 1) * hw, hw, w, 1};
}

at::Tensor with_dense_strides(const at::Tensor& t, at::MemoryFormat format) {
  const std::array<int64_t, 4> expected = dense_strides(t.sizes(), format);
  if (t.strides() == at::IntArrayRef(expected)) {
    return t;
  }
  at::Tensor dense = at::empty_strided(t.sizes(), expected, t.options());
  dense.copy_(t);
  return dense;
}

ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ValidatedConv conv =
      validate_conv(input, weight, bias, stride, padding, dilation, groups);
  ForwardCall call;
  call.input = input;
  call.weight = weight;
  call.bias = conv.bias;
  call.output_sizes = {input.size(0), weight.size(0), conv.out_height, conv.out_width};
  call.output_format = output_memory_format(input, weight);
  // Described before it exists: the floor path never allocates it (its convolution returns z).
  call.params = conv_params(input, weight, conv.bias, input, stride, padding, dilation, groups);
  call.params.out_height = conv.out_height;
  call.params.out_width = conv.out_width;
  const std::array<int64_t, 4> strides = dense_strides(call.output_sizes, call.output_format);
  call.params.output_strides = Strides4{strides[0], strides[1], strides[2], strides[3]};
  call.params.output = nullptr;  // a fresh allocation: 16-byte aligned, as planned
  return call;
}

const at::Tensor& allocate_output(ForwardCall& call) {
  call.output =
      at::empty(call.output_sizes, call.input.options().memory_format(call.output_format));
  call.params.output = call.output.data_ptr();
  return call.output;
}

at::Tensor aten_convolution(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            bool allow_tf32) {
  at::Tensor padded = input;
  std::array<int64_t, 2> symmetric = {padding[0], padding[2]};
  if (padding[0] != padding[1] || padding[2] != padding[3]) {
    // Asymmetric ('same' with an even kernel): the convolution takes one padding per side
    // pair, so the extra rows and columns are padded explicitly.
    symmetric = {std::min(padding[0], padding[1]), std::min(padding[2], padding[3])};
    padded = at::constant_pad_nd(input, {padding[2] - symmetric[1], padding[3] - symmetric[1],
                                         padding[0] - symmetric[0], padding[1] - symmetric[0]},
                                 0);
  }
  at::Context& context = at::globalContext();
  return at::_convolution(
      padded, weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt, stride,
      symmetric, dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, groups,
      context.benchmarkCuDNN(), context.deterministicCuDNN() || context.deterministicAlgorithms(),
      context.userEnabledCuDNN(), allow_tf32);
}

at::Tensor floor_convolution(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool allow_tf32) {
  return with_dense_strides(
      aten_convolution(input, weight, bias, stride, padding, dilation, groups, allow_tf32),
      output_memory_format(input, weight));
}

void validate_backward(const at::Tensor& grad_output, const at::Tensor& input,
                       const at::Tensor& weight, const at::Tensor& output,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                       int64_t groups) {
  const ValidatedConv conv =
      validate_conv(input, weight, c10::nullopt, stride, padding, dilation, groups);
  const std::array<int64_t, 4> expected = {input.size(0), weight.size(0), conv.out_height,
                                           conv.out_width};
  TORCH_CHECK_VALUE(output.sizes() == at::IntArrayRef(expected), kOpName,
                    "_backward: expected output of shape ", at::IntArrayRef(expected), ", got ",
                    output.sizes());
  TORCH_CHECK_VALUE(grad_output.sizes() == output.sizes(), kOpName,
                    "_backward: expected grad_output of the output's shape ", output.sizes(),
                    ", got ", grad_output.sizes());
  check_same_device_and_dtype(output, "output", input);
  check_same_device_and_dtype(grad_output, "grad_output", input);
}

ActivationGradCall prepare_activation_grad(const at::Tensor& grad_output,
                                           const at::Tensor& output) {
  TORCH_CHECK_VALUE(grad_output.sizes() == output.sizes(),
                    "hardswish_relu_grad: expected grad_output of the output's shape ",
                    output.sizes(), ", got ", grad_output.sizes());
  check_dtype_supported(output, "output");
  TORCH_CHECK_VALUE(grad_output.device() == output.device(),
                    "hardswish_relu_grad: expected grad_output on the output's device ",
                    output.device(), ", got ", grad_output.device());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == output.scalar_type(),
                   "hardswish_relu_grad: expected grad_output to have the output's dtype ",
                   output.scalar_type(), ", got ", grad_output.scalar_type());
  // The kernel walks all three tensors with one flat index, so they share one dense layout: the
  // output's own (grad_output may arrive expanded or transposed, e.g. from a sum's backward).
  const at::MemoryFormat format = output.suggest_memory_format();
  ActivationGradCall call;
  call.output = output.contiguous(format);
  call.grad_output = grad_output.contiguous(format);
  call.grad_input = at::empty_like(call.output, call.output.options().memory_format(format));
  call.params.numel = call.output.numel();
  call.params.dtype = to_dtype(output.scalar_type());
  call.params.grad_output = call.grad_output.data_ptr();
  call.params.output = call.output.data_ptr();
  call.params.grad_input = call.grad_input.data_ptr();
  return call;
}

at::Tensor activation_grad(const at::Tensor& grad_output, const at::Tensor& output,
                           bool differentiable) {
  static auto grad_op = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("fusedconv::hardswish_relu_grad", "")
                            .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  if (!differentiable) {
    return grad_op.call(grad_output, output);
  }
  // activation.h's table in ATen ops. The clamp keeps sqrt's argument >= 9 on every branch, so
  // the unselected branches' derivatives stay finite (no 0 * NaN through where).
  // A NaN output selects as the first-order kernels do: the root branch (NaN) on the CPU,
  // the pass-through branch (1) on CUDA (HardSwishReLU::backward_cpu / backward).
  const at::Tensor root = at::sqrt(output.clamp(0, 3) * 24 + 9) / 6;
  const at::Tensor slope = output.is_cuda()
                               ? at::where(output <= 3, root, at::ones_like(output))
                               : at::where(output > 3, at::ones_like(output), root);
  return at::where(output <= 0, at::zeros_like(output), grad_output * slope);
}

namespace {

// ATen's CPU backward may compute entries it was not asked for (float32 / float64 return
// grad_weight under a [*, false, true] mask): drop them, as the schema and fake kernel promise.
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, std::array<bool, 3> mask) {
  if (!mask[0]) {
    std::get<0>(grads) = at::Tensor();
  }
  if (!mask[1]) {
    std::get<1>(grads) = at::Tensor();
  }
  if (!mask[2]) {
    std::get<2>(grads) = at::Tensor();
  }
  return grads;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_of(
    const at::Tensor& grad_z, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> mask) {
  const std::array<int64_t, 1> bias_sizes = {weight.size(0)};
  const std::array<int64_t, 2> no_output_padding = {0, 0};
  if (padding[0] == padding[1] && padding[2] == padding[3]) {
    const std::array<int64_t, 2> pad = {padding[0], padding[2]};
    return masked(at::convolution_backward(grad_z, input, weight, at::IntArrayRef(bias_sizes),
                                           stride, pad, dilation, /*transposed=*/false,
                                           no_output_padding, groups, mask),
                  mask);
  }
  // ATen's backward takes symmetric padding only ('same' with an even dilated kernel is not):
  // pad explicitly, differentiate the unpadded convolution, then crop grad_input back.
  const at::Tensor padded =
      at::constant_pad_nd(input, {padding[2], padding[3], padding[0], padding[1]}, 0);
  const std::array<int64_t, 2> no_pad = {0, 0};
  auto grads = masked(at::convolution_backward(grad_z, padded, weight,
                                               at::IntArrayRef(bias_sizes), stride, no_pad,
                                               dilation, /*transposed=*/false, no_output_padding,
                                               groups, mask),
                      mask);
  at::Tensor& grad_input = std::get<0>(grads);
  if (grad_input.defined()) {
    grad_input = grad_input.narrow(2, padding[0], input.size(2))
                     .narrow(3, padding[2], input.size(3))
                     .contiguous(input.suggest_memory_format());
  }
  return grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_composite(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask, bool differentiable) {
  return convolution_backward_of(activation_grad(grad_output, output, differentiable), input,
                                 weight, stride, padding, dilation, groups, mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_outputs(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::Tensor& input,
    const at::Tensor& weight) {
  const at::MemoryFormat format = output_memory_format(input, weight);
  for (at::Tensor* grad : {&std::get<0>(grads), &std::get<1>(grads), &std::get<2>(grads)}) {
    if (!grad->defined()) {
      *grad = at::empty({0}, input.options());
    } else if (grad->dim() == 4 && grad->numel() == 0) {
      // contiguous() keeps any strides of an empty tensor: allocate the rule's ones.
      *grad = at::empty(grad->sizes(), grad->options().memory_format(format));
    } else if (grad->dim() == 4) {
      *grad = with_dense_strides(*grad, format);  // no copy where the backend already chose it
    }
  }
  return grads;
}

namespace {

// FUSEDCONV_CPU_DIRECT=1 (read once per process) runs the fused OpenMP direct convolution
// instead of the floor path, for A/B timing and as its test switch.
bool cpu_direct_forced() {
  static const bool forced = environment_flag("FUSEDCONV_CPU_DIRECT");
  return forced;
}

// bfloat16 / float16 on the CPU (autocast's CPU types; the torch-free CPU kernels are float32 /
// float64): the same functor evaluated in float32 and rounded once, as PyTorch's CPU
// hardswish does, in one parallel pass.
void hardswish_relu_inplace_reduced_cpu(const at::Tensor& data) {
  AT_DISPATCH_REDUCED_FLOATING_TYPES(data.scalar_type(), "hardswish_relu_inplace", [&] {
    scalar_t* values = data.data_ptr<scalar_t>();
    at::parallel_for(0, data.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        values[i] = static_cast<scalar_t>(
            HardSwishReLU<float>::value(static_cast<float>(values[i])));
      }
    });
  });
}

void hardswish_relu_grad_reduced_cpu(const ActivationGradCall& call) {
  AT_DISPATCH_REDUCED_FLOATING_TYPES(call.output.scalar_type(), "hardswish_relu_grad", [&] {
    const scalar_t* grad_output = call.grad_output.data_ptr<scalar_t>();
    const scalar_t* output = call.output.data_ptr<scalar_t>();
    scalar_t* grad_input = call.grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, call.output.numel(), at::internal::GRAIN_SIZE,
                     [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        grad_input[i] = static_cast<scalar_t>(HardSwishReLU<float>::backward_cpu(
            static_cast<float>(grad_output[i]), static_cast<float>(output[i])));
      }
    });
  });
}

// The CPU forward: the floor path (PyTorch's oneDNN / native convolution and one in-place
// activation pass), measured faster than the OpenMP direct kernel on every CPU case
// (benchmarks/NOTES.md). allow_tf32 does not apply on the CPU.
at::Tensor conv2d_hardswish_relu_cpu_op(const at::Tensor& input, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, int64_t groups,
                                        c10::optional<bool> /*allow_tf32*/) {
  if (cpu_direct_forced()) {
    ForwardCall call = prepare_forward(input, weight, bias, stride, padding, dilation, groups);
    allocate_output(call);
    TORCH_CHECK_TYPE(conv_hardswish_relu_cpu(call.params), kOpName,
                     ": FUSEDCONV_CPU_DIRECT=1 runs float32 and float64 only, got ",
                     input.scalar_type());
    return call.output;
  }
  const ValidatedConv conv = validate_conv(input, weight, bias, stride, padding, dilation, groups);
  if (input.size(0) * weight.size(0) * conv.out_height * conv.out_width == 0) {
    return at::empty({input.size(0), weight.size(0), conv.out_height, conv.out_width},
                     input.options().memory_format(output_memory_format(input, weight)));
  }
  at::Tensor z = floor_convolution(input, weight, conv.bias, stride, padding, dilation, groups,
                                   /*allow_tf32=*/false);
  const ActivationParams params{z.numel(), to_dtype(input.scalar_type()), z.data_ptr()};
  if (!hardswish_relu_inplace_cpu(params)) {
    hardswish_relu_inplace_reduced_cpu(z);
  }
  return z;
}

at::Tensor hardswish_relu_grad_cpu_op(const at::Tensor& grad_output, const at::Tensor& output) {
  ActivationGradCall call = prepare_activation_grad(grad_output, output);
  if (!hardswish_relu_grad_cpu(call.params)) {
    hardswish_relu_grad_reduced_cpu(call);
  }
  return call.grad_input;
}

// The CPU backward's one layout rule. On torch 2.1 (oneDNN 3.1) the channels_last backward of
// grouped convolutions (depthwise included) ran 2-15x slower than the same backward on NCHW
// copies, copies included; on torch 2.4 and 2.9 it ran 1.1-5x faster than the copies (the
// networks suite's layers; benchmarks/NOTES.md). So on 2.1, measured slow, those run on NCHW
// copies, and backward_outputs hands the gradients back in channels_last.
bool cpu_backward_via_nchw(const at::Tensor& input, const at::Tensor& weight, int64_t groups) {
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR <= 1
  return groups > 1 && output_memory_format(input, weight) == at::MemoryFormat::ChannelsLast;
#else
  (void)input, (void)weight, (void)groups;
  return false;
#endif
}

// `t` with NCHW strides (with_dense_strides). Not contiguous(): a depthwise weight
// (C_in / groups == 1) in channels_last strides counts as contiguous too, and oneDNN, seeing
// channels_last, runs the whole backward in channels_last again.
at::Tensor nchw_copy(const at::Tensor& t) {
  return with_dense_strides(t, at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_hardswish_relu_backward_cpu_op(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask,
    c10::optional<bool> /*allow_tf32: does not apply on the CPU*/) {
  validate_backward(grad_output, input, weight, output, stride, padding, dilation, groups);
  if (cpu_backward_via_nchw(input, weight, groups)) {
    return backward_outputs(
        convolution_backward_of(nchw_copy(activation_grad(grad_output, output, false)),
                                nchw_copy(input), nchw_copy(weight), stride, padding, dilation,
                                groups, output_mask),
        input, weight);
  }
  return backward_outputs(backward_composite(grad_output, input, weight, output, stride, padding,
                                             dilation, groups, output_mask,
                                             /*differentiable=*/false),
                          input, weight);
}

// The forward operator's typed handle, called below the autograd key.
const c10::TypedOperatorHandle<decltype(conv2d_hardswish_relu_cpu_op)>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fusedconv::conv2d_hardswish_relu", "")
                             .typed<decltype(conv2d_hardswish_relu_cpu_op)>();
  return op;
}

// Autograd: saves x, W and y only; the backward recovers f'(z) from y (docs/DESIGN.md) and asks the
// backward op for exactly the gradients autograd needs. Under create_graph (double backward) it
// takes the differentiable composite path instead, whose g depends on y through ATen ops, so the
// second derivative (f''(z) from y included) is PyTorch's own.
class Conv2dHardSwishReLUFunction
    : public torch::autograd::Function<Conv2dHardSwishReLUFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups,
                            c10::optional<bool> allow_tf32) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = forward_op().call(input, weight, bias, stride, padding, dilation, groups,
                                 allow_tf32);
    }
    ctx->save_for_backward({input, weight, output});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    // The choice, not its resolution: with None the backward follows PyTorch's flags when it
    // runs, as nn.Conv2d's backward does.
    ctx->saved_data["allow_tf32"] = allow_tf32;
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static auto backward_op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedconv::conv2d_hardswish_relu_backward", "")
            .typed<decltype(conv2d_hardswish_relu_backward_cpu_op)>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& output = saved[2];
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      ctx->saved_data["has_bias"].toBool() &&
                                          ctx->needs_input_grad(2)};
    torch::autograd::variable_list grads(8);  // one per forward argument
    if (!(mask[0] || mask[1] || mask[2]) || !grad_outputs[0].defined()) {
      return grads;
    }
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    if (at::GradMode::is_enabled()) {
      std::tie(grads[0], grads[1], grads[2]) =
          backward_composite(grad_outputs[0], input, weight, output, stride, padding, dilation,
                             groups, mask, /*differentiable=*/true);
      return grads;
    }
    std::tie(grads[0], grads[1], grads[2]) =
        backward_op.call(grad_outputs[0], input, weight, output, stride, padding, dilation,
                         groups, mask, ctx->saved_data["allow_tf32"].toOptional<bool>());
    for (size_t i = 0; i < mask.size(); ++i) {
      if (!mask[i]) {
        grads[i] = at::Tensor();
      }
    }
    return grads;
  }
};

// relu(hardswish(conv2d(...))) in ATen's own differentiable operators, for what a C++ autograd
// Function cannot do: forward-mode AD (it has no jvp) and functorch transforms (torch.func.grad,
// vjp, jacrev, jvp, vmap, functionalize: Function::apply refuses to run under them). ATen's
// derivative and batching rules then apply, as they do to the unfused module; the convolution
// is the floor path's (its forward honours allow_tf32; ATen's convolution backward reads
// PyTorch's flags).
at::Tensor conv2d_hardswish_relu_composite(const at::Tensor& input, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, int64_t groups,
                                           c10::optional<bool> allow_tf32) {
  const ValidatedConv conv = validate_conv(input, weight, bias, stride, padding, dilation, groups);
  // Not floor_convolution: its exact-strides copy is an in-place copy_ into a fresh tensor,
  // which vmap cannot batch; ATen's convolution picks the memory format F.conv2d does.
  return at::relu(at::hardswish(
      aten_convolution(input, weight, conv.bias, stride, padding, dilation, groups,
                       input.is_cuda() && resolve_allow_tf32(allow_tf32))));
}

// functorch transforms are active: while its transform stack is not empty functorch keeps its
// dynamic-layer keys in the thread's included dispatch keys (ATen/functorch/DynamicLayer.h,
// which extensions cannot include on newer torch: it needs nlohmann/json), and then
// Function::apply raises.
bool functorch_transforms_active() {
  const c10::DispatchKeySet included = c10::impl::tls_local_dispatch_key_set().included_;
  return included.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
         included.has(c10::DispatchKey::FuncTorchDynamicLayerBackMode);
}

at::Tensor conv2d_hardswish_relu_autograd(const at::Tensor& input, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups,
                                          c10::optional<bool> allow_tf32) {
  const bool has_bias = bias.has_value() && bias->defined();
  const bool has_tangent = input._fw_grad(/*level=*/0).defined() ||
                           weight._fw_grad(/*level=*/0).defined() ||
                           (has_bias && bias->_fw_grad(/*level=*/0).defined());
  if (has_tangent || functorch_transforms_active()) {
    return conv2d_hardswish_relu_composite(input, weight, bias, stride, padding, dilation, groups,
                                           allow_tf32);
  }
  // Inference (grad mode off, or nothing that requires grad): the operator itself, as
  // Function::apply would run it, without the node, saved tensors and saved_data it would build
  // and drop; that host time shows on small problems.
  const bool needs_grad =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || weight.requires_grad() || (has_bias && bias->requires_grad()));
  if (!needs_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op().call(input, weight, bias, stride, padding, dilation, groups, allow_tf32);
  }
  return Conv2dHardSwishReLUFunction::apply(input, weight, bias, stride, padding, dilation,
                                            groups, allow_tf32);
}

// Autocast (CUDA and CPU): as torch.nn.functional.conv2d, which autocast runs in its lower
// precision type (float16 / bfloat16 by default): input, weight and bias are cast to it (float64
// and other devices' tensors stay as they are) and the output comes back in it, as
// relu(hardswish(conv2d(...))) does under the same autocast.
template <c10::DeviceType kDevice>
at::Tensor conv2d_hardswish_relu_autocast(const at::Tensor& input, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups,
                                          c10::optional<bool> allow_tf32) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  const at::ScalarType type = at::autocast::get_lower_precision_fp_from_device_type(kDevice);
  return forward_op().call(at::autocast::cached_cast(type, input, kDevice),
                           at::autocast::cached_cast(type, weight, kDevice),
                           at::autocast::cached_cast(type, bias, kDevice), stride, padding,
                           dilation, groups, allow_tf32);
}

}  // namespace
}  // namespace fusedconv

TORCH_LIBRARY(fusedconv, m) {
  // padding = (top, bottom, left, right): asymmetric so that 'same' works for even kernels.
  // allow_tf32 (float32 on CUDA): True allows TF32 products (one TF32 product on the fused
  // tensor-core kernels, cuDNN's TF32 on the floor path; ~3e-4 relative error), False keeps
  // float32 accuracy (3xTF32); None (the default) does what PyTorch's convolution does under
  // the current flags (torch.backends.cudnn.allow_tf32, or cudnn.conv.fp32_precision).
  m.def(
      "conv2d_hardswish_relu(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool? allow_tf32=None) -> Tensor");
  // grad_output * f'(output) for f = relu o hardswish: the activation's backward from its output.
  m.def("hardswish_relu_grad(Tensor grad_output, Tensor output) -> Tensor");
  // (grad_input, grad_weight, grad_bias) of one call from its saved input, weight and output;
  // entries output_mask does not ask for come back empty (numel 0).
  m.def(
      "conv2d_hardswish_relu_backward(Tensor grad_output, Tensor input, Tensor weight, "
      "Tensor output, int[2] stride, int[4] padding, int[2] dilation, int groups, "
      "bool[3] output_mask, bool? allow_tf32=None) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fusedconv, CPU, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_cpu_op);
  m.impl("hardswish_relu_grad", &fusedconv::hardswish_relu_grad_cpu_op);
  m.impl("conv2d_hardswish_relu_backward", &fusedconv::conv2d_hardswish_relu_backward_cpu_op);
}

TORCH_LIBRARY_IMPL(fusedconv, Autograd, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_autograd);
}

// vmap: the composite, whose ATen operators have batching rules, instead of functorch's
// fallback that runs the operator once per sample.
TORCH_LIBRARY_IMPL(fusedconv, FuncTorchBatched, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_composite);
}

TORCH_LIBRARY_IMPL(fusedconv, Autocast, m) {
  m.impl("conv2d_hardswish_relu",
         &fusedconv::conv2d_hardswish_relu_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fusedconv, AutocastCPU, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv::conv2d_hardswish_relu_autocast<c10::DeviceType::CPU>);
}
