#include <torch/extension.h>

// ---- csrc/torch/ops.cpp ----
// The fusedconv operator library: schema (defined once, here), validation, the CPU kernels'
// registration and the autograd kernel. CUDA kernels register in ops_cuda.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

// ---- csrc/include/fusedconv/activation.h ----
// f = relu o hardswish, its value and its derivative recovered from the output alone (CUTLASS's
// `HardSwish<T>` functor habit: one small host/device struct shared by every kernel and the tests).

#include <cmath>
#include <type_traits>

// ---- csrc/include/fusedconv/host_device.h ----
// FUSEDCONV_HOST_DEVICE: functions compiled for both sides when nvcc builds the unit, plain
// inline C++ otherwise (the torch-free headers are shared with the CPU path and the C++ tests).

#if defined(__CUDACC__)
#define FUSEDCONV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDCONV_HOST_DEVICE inline
#endif

namespace fusedconv_kernelbench {

template <typename T>
struct HardSwishReLU {
  // relu(hardswish(z)) with hardswish(z) = z * min(max(z + 3, 0), 6) * (1 / 6), the order and
  // the rounded 1/6 of PyTorch's CUDA kernel. The multiplication matters on the GPU: an IEEE
  // division is a slow-path-checked subroutine there, and in the wgmma kernel's epilogue the
  // divisions were most of the issued instructions. Every max/min keeps a NaN (NaN in, NaN out,
  // and -inf gives -inf * 0 = NaN), as torch.relu(F.hardswish(z)) does.
  // On the GPU in float32: z * gate with gate = clamp(z / 6 + 1/2, 0, 1) from one saturating
  // FMA, then one NaN-keeping max: 3 instructions where the form above takes 6, in the fast
  // kernels' epilogues (which issue this for every output). Within 2 ulp of the form above; the
  // same NaN and infinity results (a NaN saturates to gate 0 and z * 0 is NaN again; -inf * 0 is
  // NaN; +inf * 1 is +inf).
  static FUSEDCONV_HOST_DEVICE T value(T z) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float gate;
      asm("fma.rn.sat.f32 %0, %1, %2, %3;" : "=f"(gate) : "f"(z), "f"(1.0f / 6.0f), "f"(0.5f));
      return max_keep_nan(z * gate, 0.0f);
    }
#endif
    const T shifted = min_keep_nan(max_keep_nan(z + T(3), T(0)), T(6));
    return max_keep_nan(z * shifted * (T(1) / T(6)), T(0));
  }

  // f'(z) from y = f(z) (docs/DESIGN.md, "What it computes"):
  //   y <= 0      -> 0   (relu passes no gradient where its output is not positive)
  //   0 < y <= 3  -> (2z + 3) / 6 with z = (sqrt(9 + 24y) - 3) / 2, i.e. sqrt(9 + 24y) / 6;
  //                  y == 3 gives 1.5 (exactly on the host), PyTorch's hardswish slope at z == 3
  //   y > 3       -> 1
  // NaN fails every comparison and lands on 1, matching PyTorch, whose hardswish and relu backward
  // both pass the incoming gradient through at a NaN.
  // Branch-free (selects, no divergent branches per element): the fused backward evaluates it for
  // every staged element. The root is taken of whatever 9 + 24y is and only selected on (0, 3].
  static FUSEDCONV_HOST_DEVICE T grad_from_output(T y) {
    const T slope = y <= T(3) ? root_over_six(T(9) + T(24) * y) : T(1);
    return y <= T(0) ? T(0) : slope;
  }

  // dL/dz from dL/dy and y. Where relu passes nothing (y <= 0) this is an exact 0, not
  // grad_y * 0: PyTorch's relu backward selects, so a non-finite grad_y there gives 0, not NaN.
  static FUSEDCONV_HOST_DEVICE T backward(T grad_y, T y) {
    return y <= T(0) ? T(0) : grad_y * grad_from_output(y);  // a select, as above
  }

  // backward as PyTorch's CPU kernels give it: their vectorised hardswish backward returns NaN
  // at a NaN input (CUDA's passes grad_y through, as `backward` does), so a NaN output, from a
  // NaN pre-activation, gives a NaN gradient that spreads through the convolution's backward.
  // Every branch is computed and then selected, so that the CPU loops vectorise (with
  // -fno-math-errno, sqrt is one instruction); the root of a negative argument is never selected.
  static T backward_cpu(T grad_y, T y) {
    using std::sqrt;
    const T root = sqrt(T(9) + T(24) * y) / T(6);  // NaN for a NaN y: kept below
    const T slope = y > T(3) ? T(1) : root;
    const T grad = grad_y * slope;
    return y <= T(0) ? T(0) : grad;
  }

 private:
  // max(a, b) and min(a, b) for a bound b that is never NaN; a NaN `a` comes back. On the GPU
  // in float32 one NaN-propagating FMNMX each (PTX max.NaN / min.NaN) where the comparison
  // form cost a compare and a select; elsewhere the comparisons.
  static FUSEDCONV_HOST_DEVICE T max_keep_nan(T a, T b) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float result;
      asm("max.NaN.f32 %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b));
      return result;
    }
#endif
    return a < b ? b : a;
  }
  static FUSEDCONV_HOST_DEVICE T min_keep_nan(T a, T b) {
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same<T, float>::value) {
      float result;
      asm("min.NaN.f32 %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b));
      return result;
    }
#endif
    return a > b ? b : a;
  }

  // sqrt(t) / 6. On the GPU in float32 through the reciprocal square root (MUFU.RSQ, a few ulp):
  // IEEE sqrt and division cost ~30 instructions, which the fused backward pays for every staged
  // element of g. Elsewhere (host, float64) exactly rounded.
  static FUSEDCONV_HOST_DEVICE float root_over_six(float t) {
#if defined(__CUDA_ARCH__)
    return t * rsqrtf(t) * (1.0f / 6.0f);
#else
    using std::sqrt;
    return sqrt(t) / 6.0f;
#endif
  }
  static FUSEDCONV_HOST_DEVICE double root_over_six(double t) {
    using std::sqrt;
    return sqrt(t) / 6.0;
  }
};

}  // namespace fusedconv_kernelbench
// ---- csrc/include/fusedconv/cpu.h ----
// The fused CPU path (OpenMP, no PyTorch): same semantics as the CUDA kernels, float32 and float64
// (float64 so that torch.autograd.gradcheck can run on the CPU).

// ---- csrc/include/fusedconv/params.h ----
// Plain-old-data description of one fused convolution call. Kernels and the CPU path take this
// struct and nothing from PyTorch (the FlashAttention `flash.h` habit): the GoogleTest suite links
// the core without libtorch, and the launchers stay callable from any host code.

#include <cstdint>

namespace fusedconv_kernelbench {

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
// of `numel` elements, contiguous in the same memory order.
struct ActivationGradParams {
  int64_t numel;
  DType dtype;
  const void* grad_output;
  const void* output;
  void* grad_input;
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

}  // namespace fusedconv_kernelbench

namespace fusedconv_kernelbench {

// y = relu(hardswish(conv2d(x, W, b))). Returns false, computing nothing, for a dtype other than
// float32 / float64 or a geometry valid_geometry (params.h) refuses; the torch layer validates
// both first.
bool conv_hardswish_relu_cpu(const ConvParams& params);

// data = relu(hardswish(data)) in place, `numel` contiguous elements (the floor path's pass after
// PyTorch's convolution). Same dtype rule.
bool hardswish_relu_inplace_cpu(const ActivationParams& params);

// grad_input = grad_output * f'(output). Same dtype rule.
bool hardswish_relu_grad_cpu(const ActivationGradParams& params);

}  // namespace fusedconv_kernelbench
// ---- csrc/include/fusedconv/environment.h ----
// Process-wide opt-outs read from the environment (FUSEDCONV_DISABLE_WGMMA, _DISABLE_DMMA,
// FUSEDCONV_CPU_DIRECT): A/B timing switches and ways around a path should it misbehave on some
// setup. Plain C++, shared by the CUDA planners and the CPU operator. FUSEDCONV_PLAN, the
// planners' policy (a word, not a flag), is read in csrc/cuda/common/plan_policy.cu.

#include <cstdlib>

namespace fusedconv_kernelbench {

// On when set to anything that does not start with '0' ("1", "yes"; also "false", so README
// documents =1). Callers read it once into a function-local static, so the hot path never calls
// getenv.
inline bool environment_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && value[0] != '0';
}

}  // namespace fusedconv_kernelbench
// ---- csrc/include/fusedconv/shape.h ----
// Output-size arithmetic of a 2-D convolution, shared by input validation and the C++ tests.

#include <cstdint>

namespace fusedconv_kernelbench {

// Rows (or columns) the kernel spans once dilated: d * (k - 1) + 1.
inline int64_t dilated_kernel_extent(int64_t kernel, int64_t dilation) {
  return dilation * (kernel - 1) + 1;
}

// Output length along one axis, as torch.nn.functional.conv2d computes it. Returns a value <= 0
// when the padded input is smaller than the dilated kernel; callers report that as an error.
inline int64_t conv_output_size(int64_t input, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                                int64_t stride, int64_t dilation) {
  const int64_t span = input + pad_begin + pad_end - dilated_kernel_extent(kernel, dilation);
  if (span < 0) {
    return 0;
  }
  return span / stride + 1;
}

}  // namespace fusedconv_kernelbench
// ---- csrc/torch/op_common.h ----
// What the CPU and CUDA registrations share: argument validation (every message names the argument
// and says what was expected and what came), output allocation, and the translation of tensors
// into the torch-free params structs the kernels take.

#include <ATen/ATen.h>

#include <array>
#include <tuple>


namespace fusedconv_kernelbench {

// allow_tf32 as the operators take it: True / False, or None for what PyTorch's own convolution
// does under the current flags (torch.backends.cudnn.allow_tf32 / cudnn.conv.fp32_precision).
bool resolve_allow_tf32(c10::optional<bool> allow_tf32);

// What validate_conv learned: the bias made contiguous (undefined when there is none) and the
// output's spatial size.
struct ValidatedConv {
  at::Tensor bias;
  int64_t out_height, out_width;
};

// Checks the forward's arguments; every message names the argument, the expectation and what came.
ValidatedConv validate_conv(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// The kernels' description of a call whose tensors exist (output allocated by the caller).
ConvParams conv_params(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups);

// A validated forward call: the tensors the kernel reads and writes (kept alive here) and their
// description for the kernel. The output is described (sizes, the memory format
// torch.nn.functional.conv2d would pick, its strides in params) before it is allocated.
struct ForwardCall {
  at::Tensor input, weight, bias, output;
  std::array<int64_t, 4> output_sizes;
  at::MemoryFormat output_format;
  ConvParams params;
};

// Validates the arguments of fusedconv::conv2d_hardswish_relu and fills in the params, with
// params.output null until allocate_output. `padding` holds (top, bottom, left, right).
ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Allocates call.output as described and points params.output at it (for the fused kernels; the
// floor path's convolution returns its own).
const at::Tensor& allocate_output(ForwardCall& call);

// The strides at::empty gives a (N, C, H, W) tensor in `format` (contiguous or channels_last).
std::array<int64_t, 4> dense_strides(at::IntArrayRef sizes, at::MemoryFormat format);

// `t`, or a copy of it, with exactly dense_strides(t.sizes(), format): the fake kernels'
// strides. Not contiguous(format): where a size is 1 (a depthwise weight's one input channel, a
// 1x1 plane) other strides satisfy the format too, and torch.compile checks the exact ones.
at::Tensor with_dense_strides(const at::Tensor& t, at::MemoryFormat format);

// The floor path's convolution, where no fused kernel applies: PyTorch's own (at::_convolution:
// cuDNN / oneDNN, with `allow_tf32` and PyTorch's benchmark / determinism / enable flags, the bias
// (validated, or undefined) inside the call; asymmetric padding padded explicitly), returned
// dense with the strides the fake kernel reports, ready for the in-place activation pass.
at::Tensor floor_convolution(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool allow_tf32);

// Checks fusedconv::conv2d_hardswish_relu_backward's arguments: the forward's, plus output and
// grad_output of the forward output's shape, device and dtype.
void validate_backward(const at::Tensor& grad_output, const at::Tensor& input,
                       const at::Tensor& weight, const at::Tensor& output,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                       int64_t groups);

// g = grad_output * f'(output): the element-wise op, or with `differentiable` differentiable
// ATen ops (double backward).
at::Tensor activation_grad(const at::Tensor& grad_output, const at::Tensor& output,
                           bool differentiable);

// ATen's convolution backward of g (any padding: asymmetric padding padded explicitly); entries
// not asked for by `mask` (input, weight, bias) are undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_of(
    const at::Tensor& grad_z, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> mask);

// Gradients any backend can compute: activation_grad, then convolution_backward_of.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_composite(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> mask, bool differentiable);

// The backward op's results as the fake kernel (fusedconv/ops.py) reports them: defined tensors
// only (the schema has no optional outputs: an entry not asked for is an empty tensor, which the
// autograd kernel turns back into "no gradient"), and grad_input / grad_weight in the forward
// output's memory format rule (channels_last where input or weight suggests it), whichever
// backend computed them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_outputs(
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::Tensor& input,
    const at::Tensor& weight);

struct ActivationGradCall {
  at::Tensor grad_output, output, grad_input;
  ActivationGradParams params;
};

ActivationGradCall prepare_activation_grad(const at::Tensor& grad_output, const at::Tensor& output);

}  // namespace fusedconv_kernelbench

namespace fusedconv_kernelbench {
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

at::Tensor floor_convolution(const at::Tensor& input, const at::Tensor& weight,
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
  at::Tensor z = at::_convolution(
      padded, weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt, stride,
      symmetric, dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, groups,
      context.benchmarkCuDNN(), context.deterministicCuDNN() || context.deterministicAlgorithms(),
      context.userEnabledCuDNN(), allow_tf32);
  return with_dense_strides(z, output_memory_format(input, weight));
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
                            .findSchemaOrThrow("fusedconv_kernelbench::hardswish_relu_grad", "")
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
                             .findSchemaOrThrow("fusedconv_kernelbench::conv2d_hardswish_relu", "")
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
            .findSchemaOrThrow("fusedconv_kernelbench::conv2d_hardswish_relu_backward", "")
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

at::Tensor conv2d_hardswish_relu_autograd(const at::Tensor& input, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups,
                                          c10::optional<bool> allow_tf32) {
  // Inference (grad mode off, or nothing that requires grad, and no forward-mode tangents): the
  // operator itself, as Function::apply would run it, without the node, saved tensors and
  // saved_data it would build and drop; that host time shows on small problems. Inputs with a
  // forward-mode tangent (forward AD ignores grad mode) still go through Function::apply, which
  // raises that C++ custom Functions have no jvp instead of dropping the tangent.
  const bool has_bias = bias.has_value() && bias->defined();
  const bool needs_grad =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || weight.requires_grad() || (has_bias && bias->requires_grad()));
  const bool has_tangent = input._fw_grad(/*level=*/0).defined() ||
                           weight._fw_grad(/*level=*/0).defined() ||
                           (has_bias && bias->_fw_grad(/*level=*/0).defined());
  if (!needs_grad && !has_tangent) {
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
}  // namespace fusedconv_kernelbench

TORCH_LIBRARY(fusedconv_kernelbench, m) {
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

TORCH_LIBRARY_IMPL(fusedconv_kernelbench, CPU, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv_kernelbench::conv2d_hardswish_relu_cpu_op);
  m.impl("hardswish_relu_grad", &fusedconv_kernelbench::hardswish_relu_grad_cpu_op);
  m.impl("conv2d_hardswish_relu_backward", \
      &fusedconv_kernelbench::conv2d_hardswish_relu_backward_cpu_op);
}

TORCH_LIBRARY_IMPL(fusedconv_kernelbench, Autograd, m) {
  m.impl("conv2d_hardswish_relu", &fusedconv_kernelbench::conv2d_hardswish_relu_autograd);
}

TORCH_LIBRARY_IMPL(fusedconv_kernelbench, Autocast, m) {
  m.impl("conv2d_hardswish_relu",
         &fusedconv_kernelbench::conv2d_hardswish_relu_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fusedconv_kernelbench, AutocastCPU, m) {
  m.impl("conv2d_hardswish_relu", \
      &fusedconv_kernelbench::conv2d_hardswish_relu_autocast<c10::DeviceType::CPU>);
}
// ---- csrc/cpu/conv_cpu.cpp ----
// Fused CPU forward and activation backward. The convolution runs one (image, output channel) plane
// per OpenMP task and accumulates a whole output row at a time: for each (input channel, kernel
// tap) the inner loop over output columns is a strided axpy with no bounds test, because the range
// of columns whose input column lies inside the image is computed once per tap. That inner loop
// vectorises for stride 1, the common case.
#include <algorithm>
#include <cstdint>
#include <vector>


#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedconv_kernelbench {
namespace {

// First output index o >= 0 with o * stride + offset >= 0.
int64_t first_valid_output(int64_t offset, int64_t stride) {
  return offset >= 0 ? 0 : (-offset + stride - 1) / stride;
}

// One past the last output index o with o * stride + offset < limit (0 when there is none).
int64_t end_valid_output(int64_t offset, int64_t stride, int64_t limit, int64_t outputs) {
  const int64_t last_input = limit - 1 - offset;
  if (last_input < 0) {
    return 0;
  }
  return std::min(outputs, last_input / stride + 1);
}

template <typename T>
void conv_hardswish_relu_plane(const ConvParams& p, int64_t n, int64_t channel, T* row_acc) {
  const T* input = static_cast<const T*>(p.input);
  const T* weight = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* output = static_cast<T*>(p.output);

  const int64_t in_channels_per_group = p.in_channels / p.groups;
  const int64_t group = channel / (p.out_channels / p.groups);
  const T* input_image =
      input + n * p.input_strides.n + group * in_channels_per_group * p.input_strides.c;
  const T* filter = weight + channel * p.weight_strides.n;
  const T bias_value = bias != nullptr ? bias[channel] : T(0);

  for (int64_t row = 0; row < p.out_height; ++row) {
    std::fill(row_acc, row_acc + p.out_width, bias_value);
    for (int64_t ci = 0; ci < in_channels_per_group; ++ci) {
      const T* input_plane = input_image + ci * p.input_strides.c;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t in_row = row * p.stride_h - p.pad_top + kh * p.dilation_h;
        if (in_row < 0 || in_row >= p.in_height) {
          continue;
        }
        const T* input_row = input_plane + in_row * p.input_strides.h;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const T tap = filter[ci * p.weight_strides.c + kh * p.weight_strides.h +
                               kw * p.weight_strides.w];
          const int64_t col_offset = kw * p.dilation_w - p.pad_left;
          const int64_t col_begin = first_valid_output(col_offset, p.stride_w);
          const int64_t col_end = end_valid_output(col_offset, p.stride_w, p.in_width, p.out_width);
          const int64_t step = p.stride_w * p.input_strides.w;
          const T* source = input_row + (col_begin * p.stride_w + col_offset) * p.input_strides.w;
          for (int64_t col = col_begin; col < col_end; ++col, source += step) {
            row_acc[col] += tap * *source;
          }
        }
      }
    }
    T* output_row = output + n * p.output_strides.n + channel * p.output_strides.c +
                    row * p.output_strides.h;
    for (int64_t col = 0; col < p.out_width; ++col) {
      output_row[col * p.output_strides.w] = HardSwishReLU<T>::value(row_acc[col]);
    }
  }
}

template <typename T>
void conv_hardswish_relu_typed(const ConvParams& p) {
  const int64_t planes = p.batch * p.out_channels;
#pragma omp parallel
  {
    std::vector<T> row_acc(static_cast<size_t>(p.out_width));
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      conv_hardswish_relu_plane<T>(p, plane / p.out_channels, plane % p.out_channels,
                                   row_acc.data());
    }
  }
}

// Element-wise passes wake the OpenMP team only above this many elements: waking it costs
// microseconds, more than a small layer's whole pass (at::internal::GRAIN_SIZE's role in ATen).
constexpr int64_t kParallelElements = 32768;

// Calls body(T{}) for float32 / float64 and returns true; false for any other dtype.
template <typename Body>
bool dispatch_float_dtype(DType dtype, Body&& body) {
  switch (dtype) {
    case DType::kFloat32:
      body(float{});
      return true;
    case DType::kFloat64:
      body(double{});
      return true;
    default:
      return false;
  }
}

// The element-wise passes' loops, compiled for AVX2 and for the baseline with the CPU's choice
// made once at load time (GCC's target_clones, a glibc ifunc), as ATen's own CPU kernels
// dispatch: the baseline x86-64 build vectorises them with 16-byte SSE only. Measured on this
// 2-core AVX2 machine (benchmarks/NOTES.md): forward pass 0.31-0.51 -> 0.26 ms, gradient pass
// 0.46-0.67 -> 0.43-0.49 ms on 802816 floats. Plain functions elsewhere.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define FUSEDCONV_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FUSEDCONV_CPU_CLONES
#endif

template <typename T>
void hardswish_relu_span(T* data, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    data[i] = HardSwishReLU<T>::value(data[i]);
  }
}

template <typename T>
void hardswish_relu_grad_span(const T* grad_output, const T* output, T* grad_input, int64_t begin,
                              int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    grad_input[i] = HardSwishReLU<T>::backward_cpu(grad_output[i], output[i]);
  }
}

FUSEDCONV_CPU_CLONES void activation_span(float* data, int64_t begin, int64_t end) {
  hardswish_relu_span(data, begin, end);
}
FUSEDCONV_CPU_CLONES void activation_span(double* data, int64_t begin, int64_t end) {
  hardswish_relu_span(data, begin, end);
}
FUSEDCONV_CPU_CLONES void activation_grad_span(const float* grad_output, const float* output,
                                               float* grad_input, int64_t begin, int64_t end) {
  hardswish_relu_grad_span(grad_output, output, grad_input, begin, end);
}
FUSEDCONV_CPU_CLONES void activation_grad_span(const double* grad_output, const double* output,
                                               double* grad_input, int64_t begin, int64_t end) {
  hardswish_relu_grad_span(grad_output, output, grad_input, begin, end);
}

// Calls body(begin, end) on `numel` elements split into one contiguous span per OpenMP thread
// (64-element aligned boundaries), in parallel above kParallelElements.
template <typename Body>
void for_each_span(int64_t numel, Body&& body) {
#ifdef _OPENMP
#pragma omp parallel if (numel > kParallelElements)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t chunk = ((numel + threads - 1) / threads + 63) / 64 * 64;
    const int64_t begin = std::min(numel, omp_get_thread_num() * chunk);
    body(begin, std::min(numel, begin + chunk));
  }
#else
  body(int64_t{0}, numel);
#endif
}

template <typename T>
void hardswish_relu_inplace_typed(const ActivationParams& p) {
  T* data = static_cast<T*>(p.data);
  for_each_span(p.numel, [&](int64_t begin, int64_t end) { activation_span(data, begin, end); });
}

template <typename T>
void hardswish_relu_grad_typed(const ActivationGradParams& p) {
  const T* grad_output = static_cast<const T*>(p.grad_output);
  const T* output = static_cast<const T*>(p.output);
  T* grad_input = static_cast<T*>(p.grad_input);
  for_each_span(p.numel, [&](int64_t begin, int64_t end) {
    activation_grad_span(grad_output, output, grad_input, begin, end);
  });
}

}  // namespace

bool conv_hardswish_relu_cpu(const ConvParams& params) {
  if (!valid_geometry(params)) {
    return false;
  }
  return dispatch_float_dtype(params.dtype, [&](auto tag) {
    conv_hardswish_relu_typed<decltype(tag)>(params);
  });
}

bool hardswish_relu_inplace_cpu(const ActivationParams& params) {
  return dispatch_float_dtype(params.dtype, [&](auto tag) {
    hardswish_relu_inplace_typed<decltype(tag)>(params);
  });
}

bool hardswish_relu_grad_cpu(const ActivationGradParams& params) {
  return dispatch_float_dtype(params.dtype, [&](auto tag) {
    hardswish_relu_grad_typed<decltype(tag)>(params);
  });
}

}  // namespace fusedconv_kernelbench
