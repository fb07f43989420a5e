// Generic fused forward: direct convolution + bias + hardswish + relu for every configuration
// (any stride, padding, dilation, groups, memory layout and floating dtype). One thread computes one
// output element and writes it once; nothing intermediate touches global memory. This kernel is the
// correctness baseline the fast paths are tested against: slower, never wrong.
#include <cuda_runtime.h>

#include "forward/families.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/params.h"

namespace fusedconv {
namespace generic {
namespace {

constexpr int kThreads = 256;

template <typename Storage>
__global__ void __launch_bounds__(kThreads)
    conv_hardswish_relu_generic_kernel(const ConvParams p) {
  using Traits = StorageTraits<Storage>;
  using Acc = typename Traits::Acc;
  const Storage* __restrict__ input = static_cast<const Storage*>(p.input);
  const Storage* __restrict__ weight = static_cast<const Storage*>(p.weight);
  const Storage* __restrict__ bias = static_cast<const Storage*>(p.bias);
  Storage* __restrict__ output = static_cast<Storage*>(p.output);

  const int64_t in_channels_per_group = p.in_channels / p.groups;
  const int64_t out_channels_per_group = p.out_channels / p.groups;
  const int64_t total = p.batch * p.out_channels * p.out_height * p.out_width;
  // Walk the output in its own memory order so that consecutive threads store to consecutive
  // addresses: width fastest for NCHW, channels fastest for channels_last.
  const bool channels_fastest = p.output_strides.c == 1 && p.out_channels > 1;

  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; index < total;
       index += int64_t{blockDim.x} * gridDim.x) {
    int64_t n, channel, row, col;
    if (channels_fastest) {
      channel = index % p.out_channels;
      int64_t rest = index / p.out_channels;
      col = rest % p.out_width;
      rest /= p.out_width;
      row = rest % p.out_height;
      n = rest / p.out_height;
    } else {
      col = index % p.out_width;
      int64_t rest = index / p.out_width;
      row = rest % p.out_height;
      rest /= p.out_height;
      channel = rest % p.out_channels;
      n = rest / p.out_channels;
    }
    const int64_t group = channel / out_channels_per_group;
    const Storage* input_image =
        input + n * p.input_strides.n + group * in_channels_per_group * p.input_strides.c;
    const Storage* filter = weight + channel * p.weight_strides.n;
    const int64_t first_row = row * p.stride_h - p.pad_top;
    const int64_t first_col = col * p.stride_w - p.pad_left;

    Acc acc = bias != nullptr ? Traits::load(bias[channel]) : Acc(0);
    for (int64_t ci = 0; ci < in_channels_per_group; ++ci) {
      const Storage* input_plane = input_image + ci * p.input_strides.c;
      const Storage* filter_plane = filter + ci * p.weight_strides.c;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t in_row = first_row + kh * p.dilation_h;
        if (in_row < 0 || in_row >= p.in_height) {
          continue;
        }
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t in_col = first_col + kw * p.dilation_w;
          if (in_col < 0 || in_col >= p.in_width) {
            continue;
          }
          acc += Traits::load(input_plane[in_row * p.input_strides.h + in_col * p.input_strides.w]) *
                 Traits::load(filter_plane[kh * p.weight_strides.h + kw * p.weight_strides.w]);
        }
      }
    }
    output[n * p.output_strides.n + channel * p.output_strides.c + row * p.output_strides.h +
           col * p.output_strides.w] = Traits::store(HardSwishReLU<Acc>::value(acc));
  }
}

}  // namespace

cudaError_t launch(const ConvParams& params, cudaStream_t stream) {
  const int64_t total = params.batch * params.out_channels * params.out_height * params.out_width;
  if (total == 0) {
    return cudaSuccess;
  }
  const unsigned int blocks = grid_stride_blocks(total, kThreads);
  return dispatch_dtype(params.dtype, [&](auto storage_tag) {
    using Storage = decltype(storage_tag);
    conv_hardswish_relu_generic_kernel<Storage><<<blocks, kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  });
}

}  // namespace generic
}  // namespace fusedconv
