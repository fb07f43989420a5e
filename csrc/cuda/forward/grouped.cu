// Grouped forward (groups > 1, several input channels per group: ResNeXt's 3x3 layers, grouped
// 1x1s): convolution, bias, hardswish and relu in one launch, no workspace, float32 / float16 /
// bfloat16 in dense NCHW or dense channels_last. Few channels per group leave the GEMMs short
// (K = channels x taps of one group: 36 for ResNeXt-50's first stage), where cuDNN's grouped
// kernels run far below both the FMA rate and the copy bandwidth; so a direct convolution on
// CUDA cores: float32 FMAs of the input's values (exact products of 16-bit ones), float32
// accuracy in either precision mode, one rounding at the store.
//
// A CTA takes one image, one group, a tile of output rows x columns, and one or more blocks of
// kQ output channels of that group. Per chunk of the group's input channels it stages the
// tile's input patch (zero on the padding) and the chunk's weights in shared memory as float32;
// each thread then computes kStrip consecutive output columns x kQ output channels. In the
// unrolled geometries (3x3, stride 1 or 2, no dilation) a thread loads the span of a kernel
// row its strip covers once per (channel, kernel row) with 16-byte loads and reuses it across
// the row's taps; stride 2 stages even and odd columns in separate phases so those loads stay
// contiguous. Other geometries load per tap. A CTA's patch is a few KB, so the staging is
// latency-bound: each thread keeps 8 loads in flight, consecutive lanes reading the layout's
// innermost dimension (columns in NCHW, by aligned vectors of 4 or 2 where the rows allow;
// channels in channels_last, by aligned vectors of 4 where the groups allow).
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/configuration.h"
#include "forward/families.h"
#include "fusedconv/activation.h"
#include "fusedconv/dtype.cuh"
#include "fusedconv/fast_divisor.h"
#include "fusedconv/params.h"

namespace fusedconv {
namespace grouped {
namespace {

constexpr int kStrip = 4;          // output columns per thread
constexpr int kMaxThreads = 128;   // threads per CTA: pixel threads x channel blocks
constexpr int kMaxStrips = 32;     // strips per tile row: tiles up to 128 columns wide
constexpr int64_t kSharedBudget = 40 * 1024;  // bytes, inside the 48 KB any launch may take

// One launch's tiling, in floats and counts (every value fits 32 bits: applies checks).
struct Tile {
  int cin_g, cout_g;      // channels per group
  int taps;               // kernel_h x kernel_w
  int strips, rows;       // a tile: rows x (strips x kStrip) output positions
  int pixel_threads;      // strips x rows
  int blocks_per_cta;     // blocks of kQ output channels per CTA, sharing its staged input
  int cta_blocks;         // CTAs per (image, group, tile)
  int tiles_h, tiles_w;
  int phase_pitch;        // floats of one stride phase of a staged row (a multiple of 4)
  int row_pitch;          // phases x phase_pitch
  int in_rows;            // staged rows per channel
  int patch;              // in_rows x row_pitch: floats per staged channel
  int chunk, chunk_shift; // input channels staged at once (a power of 2) and its log2
  FastDivisor row_pitch_divisor, in_rows_divisor;  // the staging's index decoding
  // NCHW rows loaded `vector` elements at a time (1, 2 or 4): `vectors` aligned vectors per
  // staged row, the first starting `lead` columns before the patch. channels_last: each
  // pixel's chunk of channels loaded `vector` (1 or 4) channels at a time.
  int vector, lead, vectors;
  FastDivisor vectors_divisor;
  int weights;            // floats of staged weights per chunk
  int threads;            // a multiple of 32
};

// Output channels per thread: 8, or 4 for groups of up to 4 output channels.
int channel_block(int64_t cout_g) { return cout_g > 4 ? 8 : 4; }

// The compile-time geometry of a call: 3x3 at stride 1 or 2 without dilation (kernel 3, stride
// 1 / 2), or 0 / 0 for the run-time instance.
void unrolled_geometry(const ConvParams& p, int& kernel, int& stride) {
  const bool unrolled = p.kernel_h == 3 && p.kernel_w == 3 && p.dilation_h == 1 &&
                        p.dilation_w == 1 && p.stride_h == p.stride_w &&
                        (p.stride_h == 1 || p.stride_h == 2);
  kernel = unrolled ? 3 : 0;
  stride = unrolled ? static_cast<int>(p.stride_h) : 0;
}

// The tiling of `p`; false where one input channel's patch and weights exceed the budget.
bool make_tile(const ConvParams& p, Tile& t) {
  if (p.out_height <= 0 || p.out_width <= 0) {
    return false;  // an empty output is planned as no launch before any family is asked
  }
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  const int64_t phases = kernel > 0 ? stride : 1;
  const int64_t kq = channel_block(p.out_channels / p.groups);
  const int64_t strips_total = (p.out_width + kStrip - 1) / kStrip;
  const int64_t tiles_w = (strips_total + kMaxStrips - 1) / kMaxStrips;
  const int64_t strips = (strips_total + tiles_w - 1) / tiles_w;
  const int64_t rows_max = kMaxThreads / strips;
  const int64_t tiles_h = (p.out_height + rows_max - 1) / rows_max;
  const int64_t rows = (p.out_height + tiles_h - 1) / tiles_h;
  const int64_t cout_g = p.out_channels / p.groups;
  const int64_t cout_blocks = (cout_g + kq - 1) / kq;
  int64_t blocks_per_cta = kMaxThreads / (strips * rows);
  blocks_per_cta = blocks_per_cta < 1 ? 1 : blocks_per_cta > cout_blocks ? cout_blocks
                                                                           : blocks_per_cta;
  const int64_t in_rows = (rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t in_cols =
      (strips * kStrip - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  // Either side past the budget alone: refused before their product can overflow.
  if (in_rows > kSharedBudget / 4 || in_cols > kSharedBudget / 4) {
    return false;
  }
  const int64_t phase_pitch = ((in_cols + phases - 1) / phases + 3) / 4 * 4;
  const int64_t patch = in_rows * phases * phase_pitch;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t cin_g = p.in_channels / p.groups;
  const auto bytes = [&](int64_t chunk) {
    return 4 * chunk * (patch + blocks_per_cta * kq * taps);
  };
  if (bytes(1) > kSharedBudget) {
    return false;
  }
  int64_t chunk = 1;
  int shift = 0;
  while (chunk * 2 <= cin_g && bytes(chunk * 2) <= kSharedBudget) {
    chunk *= 2;
    ++shift;
  }
  t.cin_g = static_cast<int>(cin_g);
  t.cout_g = static_cast<int>(cout_g);
  t.taps = static_cast<int>(taps);
  t.strips = static_cast<int>(strips);
  t.rows = static_cast<int>(rows);
  t.pixel_threads = static_cast<int>(strips * rows);
  t.blocks_per_cta = static_cast<int>(blocks_per_cta);
  t.cta_blocks = static_cast<int>((cout_blocks + blocks_per_cta - 1) / blocks_per_cta);
  t.tiles_h = static_cast<int>(tiles_h);
  t.tiles_w = static_cast<int>(tiles_w);
  t.phase_pitch = static_cast<int>(phase_pitch);
  t.row_pitch = static_cast<int>(phases * phase_pitch);
  t.in_rows = static_cast<int>(in_rows);
  t.patch = static_cast<int>(patch);
  t.row_pitch_divisor = FastDivisor::make(static_cast<uint32_t>(phases * phase_pitch));
  t.in_rows_divisor = FastDivisor::make(static_cast<uint32_t>(in_rows));
  // NCHW rows of whole, aligned vectors: every vector lies wholly inside or outside a row,
  // and a tile's first staged column is (-pad_left) mod vector past a vector's start (tile
  // columns start at multiples of kStrip, a multiple of the vector).
  bool channels_last = false;
  dense_layout(p.input_strides, p.in_channels, p.in_height, p.in_width, channels_last);
  const uintptr_t address = reinterpret_cast<uintptr_t>(p.input);
  const int64_t element = element_bytes(p.dtype);
  int64_t vector = 1;
  for (int64_t v = 4; v > 1 && vector == 1; v /= 2) {
    if (!channels_last && p.in_width % v == 0 && address % (v * element) == 0) {
      vector = v;
    }
  }
  // channels_last: a pixel's chunk of a group's channels, in vectors of 4 where every chunk
  // starts at a multiple of 4 channels (groups and chunks of multiples of 4, a pixel pitch of
  // whole vectors, an aligned start): ResNeXt's 4-32 channels per group.
  if (channels_last && cin_g % 4 == 0 && chunk % 4 == 0 && p.in_channels % 4 == 0 &&
      address % (4 * element) == 0) {
    vector = 4;
  }
  const int64_t lead = ((-p.pad_left) % vector + vector) % vector;
  const int64_t vectors = (lead + phases * phase_pitch + vector - 1) / vector;
  t.vector = static_cast<int>(vector);
  t.lead = static_cast<int>(lead);
  t.vectors = static_cast<int>(vectors);
  t.vectors_divisor = FastDivisor::make(static_cast<uint32_t>(vectors));
  t.chunk = static_cast<int>(chunk);
  t.chunk_shift = shift;
  t.weights = static_cast<int>(blocks_per_cta * kq * chunk * taps);
  t.threads = static_cast<int>((strips * rows * blocks_per_cta + 31) / 32 * 32);
  return true;
}

int64_t cta_count(const ConvParams& p, const Tile& t) {
  return p.batch * p.groups * t.cta_blocks * t.tiles_h * t.tiles_w;
}

// Elements each thread loads before it stores any: the staging is latency-bound (one CTA's
// patch is a few KB), so a thread keeps kBatch loads in flight instead of one.
constexpr int kBatch = 8;

// Stages input channels [channel0, channel0 + count) of one image's patch rows from ih0 and
// columns from iw0 as float32, zero outside the input; column c of a staged row lands in
// phase c % kPhases at c / kPhases. Channels from `count` to the chunk are left unwritten (the
// compute loop stops at `count`). Consecutive threads take consecutive elements of the layout's
// innermost dimension: columns in NCHW, channels in channels_last.
template <typename Storage, bool kChannelsLast, int kPhases>
__device__ __forceinline__ void stage_input(float* staged, const ConvParams& p, const Tile& t,
                                            const Storage* image, int channel0, int count,
                                            int ih0, int iw0) {
  using Traits = StorageTraits<Storage>;
  const int height = static_cast<int>(p.in_height), width = static_cast<int>(p.in_width);
  // NCHW: e = (ci x in_rows + row) x row_pitch + c; channels_last: e = (row x row_pitch + c)
  // x chunk + ci.
  const int total = kChannelsLast ? (t.in_rows * t.row_pitch) << t.chunk_shift
                                  : count * t.in_rows * t.row_pitch;
  for (int base = threadIdx.x; base < total; base += blockDim.x * kBatch) {
    float values[kBatch];
    int targets[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int e = base + j * static_cast<int>(blockDim.x);
      uint32_t c = 0, ci = 0, row = 0;
      if constexpr (kChannelsLast) {
        ci = static_cast<uint32_t>(e) & (t.chunk - 1);
        row = t.row_pitch_divisor.divide(static_cast<uint32_t>(e) >> t.chunk_shift, c);
      } else {
        ci = t.in_rows_divisor.divide(t.row_pitch_divisor.divide(static_cast<uint32_t>(e), c),
                                      row);
      }
      const int ih = ih0 + static_cast<int>(row), iw = iw0 + static_cast<int>(c);
      const bool staged_element = e < total && static_cast<int>(ci) < count;
      targets[j] = staged_element ? static_cast<int>(ci) * t.patch +
                                        static_cast<int>(row) * t.row_pitch +
                                        static_cast<int>(c % kPhases) * t.phase_pitch +
                                        static_cast<int>(c / kPhases)
                                  : -1;
      values[j] = 0.0f;
      if (staged_element && ih >= 0 && ih < height && iw >= 0 && iw < width) {
        const int offset = kChannelsLast
                               ? (ih * width + iw) * static_cast<int>(p.in_channels) +
                                     channel0 + static_cast<int>(ci)
                               : ((channel0 + static_cast<int>(ci)) * height + ih) * width + iw;
        values[j] = Traits::load(image[offset]);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (targets[j] >= 0) {
        staged[targets[j]] = values[j];
      }
    }
  }
}

// kVector elements of Storage from `source` (aligned to their size) as float32.
template <typename Storage, int kVector>
__device__ __forceinline__ void load_vector(const Storage* source, float (&values)[kVector]) {
  using Traits = StorageTraits<Storage>;
  constexpr int kBytes = kVector * static_cast<int>(sizeof(Storage));
  using Word = typename std::conditional<
      kBytes == 16, uint4,
      typename std::conditional<kBytes == 8, uint2, uint32_t>::type>::type;
  static_assert(sizeof(Word) == kBytes, "a vector is one 4-, 8- or 16-byte word");
  union {
    Word word;
    Storage elements[kVector];
  } bits;
  bits.word = *reinterpret_cast<const Word*>(source);
#pragma unroll
  for (int k = 0; k < kVector; ++k) {
    values[k] = Traits::load(bits.elements[k]);
  }
}

// stage_input for NCHW rows of whole, aligned kVector-element vectors (Tile::vector): one
// load and one index decoding per vector instead of per element.
template <typename Storage, int kPhases, int kVector>
__device__ __forceinline__ void stage_input_vectors(float* staged, const ConvParams& p,
                                                    const Tile& t, const Storage* image,
                                                    int channel0, int count, int ih0,
                                                    int iw0) {
  constexpr int kVectorBatch = kBatch / kVector > 2 ? kBatch / kVector : 2;
  const int height = static_cast<int>(p.in_height), width = static_cast<int>(p.in_width);
  const int iw_base = iw0 - t.lead;  // a multiple of kVector
  const int total = count * t.in_rows * t.vectors;  // e = (ci x in_rows + row) x vectors + v
  for (int base = threadIdx.x; base < total; base += blockDim.x * kVectorBatch) {
    float values[kVectorBatch][kVector];
    int row_targets[kVectorBatch], first_column[kVectorBatch];
#pragma unroll
    for (int j = 0; j < kVectorBatch; ++j) {
      const int e = base + j * static_cast<int>(blockDim.x);
      uint32_t v = 0, row = 0;
      const uint32_t ci =
          t.in_rows_divisor.divide(t.vectors_divisor.divide(static_cast<uint32_t>(e), v), row);
      const int ih = ih0 + static_cast<int>(row);
      const int iw = iw_base + static_cast<int>(v) * kVector;
      row_targets[j] = e < total ? static_cast<int>(ci) * t.patch +
                                       static_cast<int>(row) * t.row_pitch
                                 : -1;
      first_column[j] = static_cast<int>(v) * kVector - t.lead;
#pragma unroll
      for (int k = 0; k < kVector; ++k) {
        values[j][k] = 0.0f;
      }
      if (e < total && ih >= 0 && ih < height && iw >= 0 && iw < width) {
        load_vector<Storage, kVector>(
            image + ((channel0 + static_cast<int>(ci)) * height + ih) * width + iw, values[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kVectorBatch; ++j) {
#pragma unroll
      for (int k = 0; k < kVector; ++k) {
        const int c = first_column[j] + k;
        if (row_targets[j] >= 0 && c >= 0 && c < t.row_pitch) {
          staged[row_targets[j] + (c % kPhases) * t.phase_pitch + c / kPhases] = values[j][k];
        }
      }
    }
  }
}

// stage_input for channels_last with each pixel's chunk of channels in aligned kVector-channel
// vectors (Tile::vector): one load and one index decoding per vector instead of per channel.
// Vectors from `count` to the chunk are left unwritten, as stage_input leaves its channels.
template <typename Storage, int kPhases, int kVector>
__device__ __forceinline__ void stage_input_channel_vectors(float* staged, const ConvParams& p,
                                                            const Tile& t, const Storage* image,
                                                            int channel0, int count, int ih0,
                                                            int iw0) {
  constexpr int kVectorBatch = kBatch / kVector > 2 ? kBatch / kVector : 2;
  const int height = static_cast<int>(p.in_height), width = static_cast<int>(p.in_width);
  const int channels = static_cast<int>(p.in_channels);
  const int vector_shift = t.chunk_shift - 2;  // log2(chunk / kVector); kVector is 4
  static_assert(kVector == 4, "channels_last stages vectors of 4 channels");
  // e = (row x row_pitch + c) x (chunk / kVector) + vector
  const int total = (t.in_rows * t.row_pitch) << vector_shift;
  for (int base = threadIdx.x; base < total; base += blockDim.x * kVectorBatch) {
    float values[kVectorBatch][kVector];
    int targets[kVectorBatch];
#pragma unroll
    for (int j = 0; j < kVectorBatch; ++j) {
      const int e = base + j * static_cast<int>(blockDim.x);
      const int ci = (e & ((1 << vector_shift) - 1)) * kVector;
      uint32_t c = 0;
      const uint32_t row = t.row_pitch_divisor.divide(static_cast<uint32_t>(e) >> vector_shift, c);
      const int ih = ih0 + static_cast<int>(row), iw = iw0 + static_cast<int>(c);
      const bool staged_vector = e < total && ci < count;
      targets[j] = staged_vector ? ci * t.patch + static_cast<int>(row) * t.row_pitch +
                                       static_cast<int>(c % kPhases) * t.phase_pitch +
                                       static_cast<int>(c / kPhases)
                                 : -1;
#pragma unroll
      for (int k = 0; k < kVector; ++k) {
        values[j][k] = 0.0f;
      }
      if (staged_vector && ih >= 0 && ih < height && iw >= 0 && iw < width) {
        load_vector<Storage, kVector>(image + (ih * width + iw) * channels + channel0 + ci,
                                      values[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kVectorBatch; ++j) {
      if (targets[j] >= 0) {
#pragma unroll
        for (int k = 0; k < kVector; ++k) {
          staged[targets[j] + k * t.patch] = values[j][k];
        }
      }
    }
  }
}

// Stages the weights of input channels [channel0, channel0 + count) of the group for the CTA's
// output-channel blocks as [block][channel][tap][kQ] float32, zero past the group's output
// channels and the chunk's input channels. With the kernel size known (kKernel), a thread
// loads all of its filter's taps before storing them.
template <typename Storage, int kQ, int kKernel>
__device__ __forceinline__ void stage_weights(float* staged, const ConvParams& p, const Tile& t,
                                              int first_out_channel, int out_limit,
                                              int channel0, int count) {
  using Traits = StorageTraits<Storage>;
  const Storage* weight = static_cast<const Storage*>(p.weight);
  const Strides4& s = p.weight_strides;
  for (int e = threadIdx.x; e < t.blocks_per_cta * kQ * t.chunk; e += blockDim.x) {
    const int q = e % kQ, rest = e / kQ;
    const int ci = rest & (t.chunk - 1), block = rest >> t.chunk_shift;
    const int oc = block * kQ + q;  // relative to first_out_channel
    const bool valid = ci < count && oc < out_limit;
    const Storage* source =
        weight + (valid ? (first_out_channel + oc) * s.n + (channel0 + ci) * s.c : 0);
    float* target = staged + ((block * t.chunk + ci) * t.taps) * kQ + q;
    if constexpr (kKernel > 0) {
      float taps[kKernel * kKernel];
#pragma unroll
      for (int tap = 0; tap < kKernel * kKernel; ++tap) {
        taps[tap] = valid ? Traits::load(source[(tap / kKernel) * s.h + (tap % kKernel) * s.w])
                          : 0.0f;
      }
#pragma unroll
      for (int tap = 0; tap < kKernel * kKernel; ++tap) {
        target[tap * kQ] = taps[tap];
      }
    } else {
      for (int ty = 0, tap = 0; ty < p.kernel_h; ++ty) {
        for (int tx = 0; tx < p.kernel_w; ++tx, ++tap) {
          target[tap * kQ] = valid ? Traits::load(source[ty * s.h + tx * s.w]) : 0.0f;
        }
      }
    }
  }
}

// `count` floats from 16-byte aligned shared memory into registers, in 16- and 8-byte loads.
template <int kCount>
__device__ __forceinline__ void load_span(const float* source, float (&values)[kCount]) {
  static_assert(kCount >= 4, "a span holds at least one strip");
  const float4 head = *reinterpret_cast<const float4*>(source);
  values[0] = head.x;
  values[1] = head.y;
  values[2] = head.z;
  values[3] = head.w;
  int j = 4;
  if constexpr (kCount >= 6) {
    const float2 pair = *reinterpret_cast<const float2*>(source + 4);
    values[4] = pair.x;
    values[5] = pair.y;
    j = 6;
  }
#pragma unroll
  for (; j < kCount; ++j) {
    values[j] = source[j];
  }
}

template <int kQ>
__device__ __forceinline__ void load_weights(const float* source, float (&w)[kQ]) {
#pragma unroll
  for (int q = 0; q < kQ; q += 4) {
    const float4 v = *reinterpret_cast<const float4*>(source + q);
    w[q] = v.x;
    w[q + 1] = v.y;
    w[q + 2] = v.z;
    w[q + 3] = v.w;
  }
}

// Stores kCount values rounded to Storage at consecutive elements: as one aligned vector
// (kCount x sizeof(Storage) is 8, 16 or 32 bytes), or the first `valid` element by element
// where `vector` is false.
template <typename Storage, int kCount>
__device__ __forceinline__ void store_values(Storage* target, const float (&values)[kCount],
                                             bool vector, int valid) {
  using Traits = StorageTraits<Storage>;
  constexpr int kBytes = kCount * static_cast<int>(sizeof(Storage));
  if (vector) {
    union {
      Storage elements[kCount];
      uint2 half[kBytes / 8];
      uint4 whole[kBytes >= 16 ? kBytes / 16 : 1];
    } pack;
#pragma unroll
    for (int j = 0; j < kCount; ++j) {
      pack.elements[j] = Traits::store(values[j]);
    }
    if constexpr (kBytes == 8) {
      *reinterpret_cast<uint2*>(target) = pack.half[0];
    } else {
#pragma unroll
      for (int j = 0; j < kBytes / 16; ++j) {
        reinterpret_cast<uint4*>(target)[j] = pack.whole[j];
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < kCount; ++j) {
    if (j < valid) {
      target[j] = Traits::store(values[j]);
    }
  }
}

// kKernel / kStride: 3 and 1 or 2 (square, no dilation), or 0 / 0 for any geometry.
// kVector: NCHW rows, or channels_last pixels' channels, staged kVector elements at a time
// (Tile::vector).
template <typename Storage, bool kChannelsLast, int kQ, int kKernel, int kStride, int kVector>
__global__ void __launch_bounds__(kMaxThreads)
    conv_hardswish_relu_grouped_kernel(const ConvParams p, const Tile t) {
  using Traits = StorageTraits<Storage>;
  constexpr int kPhases = kKernel > 0 ? kStride : 1;
  extern __shared__ float4 shared_words[];
  float* staged_input = reinterpret_cast<float*>(shared_words);
  float* staged_weights = staged_input + t.chunk * t.patch;

  // blockIdx.x = (((n * groups + g) * tiles_h + th) * tiles_w + tw) * cta_blocks + cb: the CTAs
  // that share one input patch are neighbours.
  uint32_t index = blockIdx.x;
  const int cb = static_cast<int>(index % t.cta_blocks);
  index /= t.cta_blocks;
  const int tw = static_cast<int>(index % t.tiles_w);
  index /= t.tiles_w;
  const int th = static_cast<int>(index % t.tiles_h);
  index /= t.tiles_h;
  const int group = static_cast<int>(index % p.groups);
  const int64_t n = index / p.groups;

  const int block = threadIdx.x / t.pixel_threads;  // this thread's channel block in the CTA
  const int pixel = threadIdx.x - block * t.pixel_threads;
  const bool active = block < t.blocks_per_cta;
  const int row = pixel / t.strips, strip = pixel - row * t.strips;
  const int first_out_channel = (cb * t.blocks_per_cta) * kQ;  // within the group
  const int out_limit = t.cout_g - first_out_channel;          // valid channels from there on

  const int stride_h = kKernel > 0 ? kStride : static_cast<int>(p.stride_h);
  const int stride_w = kKernel > 0 ? kStride : static_cast<int>(p.stride_w);
  const int oh0 = th * t.rows, ow0 = tw * t.strips * kStrip;
  const int ih0 = oh0 * stride_h - static_cast<int>(p.pad_top);
  const int iw0 = ow0 * stride_w - static_cast<int>(p.pad_left);
  const Storage* image = static_cast<const Storage*>(p.input) + n * p.input_strides.n;
  const int group_channel0 = group * t.cin_g;

  float acc[kStrip][kQ];
#pragma unroll
  for (int i = 0; i < kStrip; ++i) {
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
      acc[i][q] = 0.0f;
    }
  }

  for (int c0 = 0; c0 < t.cin_g; c0 += t.chunk) {
    const int count = t.cin_g - c0 < t.chunk ? t.cin_g - c0 : t.chunk;
    __syncthreads();  // the previous chunk's reads are done
    if constexpr (kVector > 1 && kChannelsLast) {
      stage_input_channel_vectors<Storage, kPhases, kVector>(staged_input, p, t, image,
                                                             group_channel0 + c0, count, ih0,
                                                             iw0);
    } else if constexpr (kVector > 1) {
      stage_input_vectors<Storage, kPhases, kVector>(staged_input, p, t, image,
                                                     group_channel0 + c0, count, ih0, iw0);
    } else {
      stage_input<Storage, kChannelsLast, kPhases>(staged_input, p, t, image,
                                                   group_channel0 + c0, count, ih0, iw0);
    }
    stage_weights<Storage, kQ, kKernel>(staged_weights, p, t, group * t.cout_g + first_out_channel,
                               out_limit, c0, count);
    __syncthreads();
    if (!active) {
      continue;
    }
    const float* weights = staged_weights + block * t.chunk * t.taps * kQ;
    const float* input = staged_input + row * stride_h * t.row_pitch + strip * kStrip * (
        kPhases > 1 ? 1 : stride_w);
    for (int ci = 0; ci < count; ++ci) {
      const float* channel_input = input + ci * t.patch;
      const float* channel_weights = weights + ci * t.taps * kQ;
      if constexpr (kKernel > 0) {
        // Phase ph holds columns ph, ph + kStride, ...: tap tx reads phase tx % kStride at
        // offset i + tx / kStride for output column i of the strip.
        constexpr int kSpan0 = kStrip + (kKernel - 1) / kStride;
        constexpr int kSpan1 = kStride > 1 ? kStrip + (kKernel - 2) / kStride : kStrip;
#pragma unroll
        for (int ty = 0; ty < kKernel; ++ty) {
          const float* span_row = channel_input + ty * t.row_pitch;
          float span0[kSpan0];
          float span1[kSpan1];
          load_span(span_row, span0);
          if constexpr (kStride > 1) {
            load_span(span_row + t.phase_pitch, span1);
          }
#pragma unroll
          for (int tx = 0; tx < kKernel; ++tx) {
            float w[kQ];
            load_weights(channel_weights + (ty * kKernel + tx) * kQ, w);
#pragma unroll
            for (int i = 0; i < kStrip; ++i) {
              const float v = (tx % kStride == 0) ? span0[i + tx / kStride]
                                                  : span1[i + tx / kStride];
#pragma unroll
              for (int q = 0; q < kQ; ++q) {
                acc[i][q] = fmaf(v, w[q], acc[i][q]);
              }
            }
          }
        }
      } else {
        const int kh = static_cast<int>(p.kernel_h), kw = static_cast<int>(p.kernel_w);
        const int dilation_h = static_cast<int>(p.dilation_h);
        const int dilation_w = static_cast<int>(p.dilation_w);
        for (int ty = 0; ty < kh; ++ty) {
          const float* tap_row = channel_input + ty * dilation_h * t.row_pitch;
          for (int tx = 0; tx < kw; ++tx) {
            float w[kQ];
            load_weights(channel_weights + (ty * kw + tx) * kQ, w);
#pragma unroll
            for (int i = 0; i < kStrip; ++i) {
              const float v = tap_row[i * stride_w + tx * dilation_w];
#pragma unroll
              for (int q = 0; q < kQ; ++q) {
                acc[i][q] = fmaf(v, w[q], acc[i][q]);
              }
            }
          }
        }
      }
    }
  }
  if (!active) {
    return;
  }

  // Epilogue: bias, relu(hardswish), one rounding at the store.
  const int oh = oh0 + row, ow = ow0 + strip * kStrip;
  const int block_channel = first_out_channel + block * kQ;  // within the group
  const int channels = t.cout_g - block_channel < kQ ? t.cout_g - block_channel : kQ;
  const int columns = static_cast<int>(p.out_width) - ow < kStrip
                          ? static_cast<int>(p.out_width) - ow
                          : kStrip;
  if (oh >= p.out_height || channels <= 0 || columns <= 0) {
    return;
  }
  const int out_channel0 = group * t.cout_g + block_channel;
  const Storage* bias = static_cast<const Storage*>(p.bias);
#pragma unroll
  for (int q = 0; q < kQ; ++q) {
    const float b = bias != nullptr && q < channels ? Traits::load(bias[out_channel0 + q]) : 0.0f;
#pragma unroll
    for (int i = 0; i < kStrip; ++i) {
      acc[i][q] = HardSwishReLU<float>::value(acc[i][q] + b);
    }
  }
  const Strides4& s = p.output_strides;
  Storage* out = static_cast<Storage*>(p.output) + n * s.n + oh * s.h + ow * s.w +
                 out_channel0 * s.c;
  constexpr int64_t kVectorBytes = 16;
  const uintptr_t address = reinterpret_cast<uintptr_t>(out);
  if constexpr (kChannelsLast) {
    // Each column's kQ channels are contiguous: one vector where they are whole and aligned.
    constexpr int kBytes = kQ * static_cast<int>(sizeof(Storage));
    const bool vector = channels == kQ &&
                        address % (kBytes < kVectorBytes ? kBytes : kVectorBytes) == 0 &&
                        (s.w * static_cast<int64_t>(sizeof(Storage))) % kBytes == 0;
#pragma unroll
    for (int i = 0; i < kStrip; ++i) {
      if (i < columns) {
        store_values<Storage, kQ>(out + i * s.w, acc[i], vector, channels);
      }
    }
  } else {
    // Each channel's kStrip columns are contiguous.
    constexpr int kBytes = kStrip * static_cast<int>(sizeof(Storage));
    const bool vector = columns == kStrip && address % kBytes == 0 &&
                        (s.c * static_cast<int64_t>(sizeof(Storage))) % kBytes == 0;
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
      if (q < channels) {
        float values[kStrip];
#pragma unroll
        for (int i = 0; i < kStrip; ++i) {
          values[i] = acc[i][q];
        }
        store_values<Storage, kStrip>(out + q * s.c, values, vector, columns);
      }
    }
  }
}

template <typename Storage, bool kChannelsLast, int kQ, int kVector>
cudaError_t launch_instance(const ConvParams& p, const Tile& t, cudaStream_t stream) {
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  const dim3 grid(static_cast<uint32_t>(cta_count(p, t)));
  const size_t bytes = static_cast<size_t>(4) * (t.chunk * t.patch + t.weights);
  if (kernel == 3 && stride == 1) {
    conv_hardswish_relu_grouped_kernel<Storage, kChannelsLast, kQ, 3, 1, kVector>
        <<<grid, t.threads, bytes, stream>>>(p, t);
  } else if (kernel == 3 && stride == 2) {
    conv_hardswish_relu_grouped_kernel<Storage, kChannelsLast, kQ, 3, 2, kVector>
        <<<grid, t.threads, bytes, stream>>>(p, t);
  } else {
    conv_hardswish_relu_grouped_kernel<Storage, kChannelsLast, kQ, 0, 0, kVector>
        <<<grid, t.threads, bytes, stream>>>(p, t);
  }
  return cudaGetLastError();
}

template <typename Storage, int kQ>
cudaError_t launch_layout(const ConvParams& p, const Tile& t, bool channels_last,
                          cudaStream_t stream) {
  if (channels_last) {
    return t.vector == 4 ? launch_instance<Storage, true, kQ, 4>(p, t, stream)
                         : launch_instance<Storage, true, kQ, 1>(p, t, stream);
  }
  switch (t.vector) {
    case 4:
      return launch_instance<Storage, false, kQ, 4>(p, t, stream);
    case 2:
      return launch_instance<Storage, false, kQ, 2>(p, t, stream);
    default:
      return launch_instance<Storage, false, kQ, 1>(p, t, stream);
  }
}

}  // namespace

bool unrolled_shape(const ConvParams& p) {
  int kernel = 0, stride = 0;
  unrolled_geometry(p, kernel, stride);
  return kernel > 0;
}

bool applies(const ConvParams& p) {
  if (p.groups <= 1 || (p.dtype != DType::kFloat32 && p.dtype != DType::kFloat16 &&
                        p.dtype != DType::kBFloat16)) {
    return false;
  }
  bool input_channels_last = false, output_channels_last = false;
  if (!dense_layout(p.input_strides, p.in_channels, p.in_height, p.in_width,
                    input_channels_last) ||
      !dense_layout(p.output_strides, p.out_channels, p.out_height, p.out_width,
                    output_channels_last) ||
      input_channels_last != output_channels_last) {
    return false;
  }
  // 32-bit arithmetic inside one image, and on every row and column a tap can reach.
  constexpr int64_t kIntLimit = int64_t{1} << 31;
  const int64_t strips = (p.out_width + kStrip - 1) / kStrip;
  const int64_t row_reach = p.pad_top + p.out_height * p.stride_h + p.kernel_h * p.dilation_h;
  const int64_t col_reach =
      p.pad_left + strips * kStrip * p.stride_w + p.kernel_w * p.dilation_w;
  if (p.stride_h >= kIntLimit || p.stride_w >= kIntLimit || p.dilation_h >= kIntLimit ||
      p.dilation_w >= kIntLimit || p.kernel_h >= kIntLimit || p.kernel_w >= kIntLimit ||
      p.pad_top >= kIntLimit || p.pad_left >= kIntLimit || row_reach >= kIntLimit ||
      col_reach >= kIntLimit ||
      p.in_channels * p.in_height * p.in_width >= kIntLimit ||
      p.out_channels * p.out_height * p.out_width >= kIntLimit ||
      p.out_channels * p.in_channels / p.groups * p.kernel_h * p.kernel_w >= kIntLimit) {
    return false;
  }
  Tile t{};
  return make_tile(p, t) && cta_count(p, t) < kIntLimit;
}

cudaError_t launch(const ConvParams& p, cudaStream_t stream) {
  Tile t{};
  if (!make_tile(p, t)) {
    return cudaErrorInvalidValue;
  }
  if (cta_count(p, t) == 0) {
    return cudaSuccess;
  }
  bool channels_last = false;
  dense_layout(p.input_strides, p.in_channels, p.in_height, p.in_width, channels_last);
  const bool wide = channel_block(t.cout_g) == 8;
  return dispatch_dtype(p.dtype, [&](auto zero) -> cudaError_t {
    using Storage = decltype(zero);
    if constexpr (sizeof(Storage) == 8) {
      return cudaErrorInvalidValue;  // float64 is the floor's (applies)
    } else {
      return wide ? launch_layout<Storage, 8>(p, t, channels_last, stream)
                  : launch_layout<Storage, 4>(p, t, channels_last, stream);
    }
  });
}

}  // namespace grouped
}  // namespace fusedconv
