// Fused CPU forward and activation backward. The convolution runs one (image, output channel) plane
// per OpenMP task and accumulates a whole output row at a time: for each (input channel, kernel
// tap) the inner loop over output columns is a strided axpy with no bounds test, because the range
// of columns whose input column lies inside the image is computed once per tap. That inner loop
// vectorises for stride 1, the common case.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fusedconv/activation.h"
#include "fusedconv/cpu.h"
#include "fusedconv/params.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedconv {
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

}  // namespace fusedconv
