// The depthwise backward's weight-pass slicing (both layouts), host code without CUDA headers so
// that the GoogleTest suite checks it (tests/cpp/test_depthwise_slices.cpp).
#pragma once

#include <cstdint>

#include "fusedconv/host_device.h"

namespace fusedconv {
namespace depthwise_backward {

// The weight pass's split of batch x out_height output rows into slices, both layouts: about
// kSlicesPerSm CTAs per SM (`wanted` slices per block of channels), of whole rows, each but the
// last at least `min_positions` positions where there are that many, and at least one.
// NCHW: a CTA per channel gives parallelism enough, and 2048 positions keep the reduction small.
// channels_last: a CTA per block of up to 28 channel vectors, so the slices must give the
// parallelism: channels_last_min_positions.
constexpr int kMinPositionsPerSlice = 2048;
constexpr int kMinPositionsPerSliceChannelsLast = 64;
constexpr int kSlicesPerSm = 8;  // CTAs per SM the weight pass aims at

// channels_last: at least 64 positions, and enough that a slice's partials (taps + 1 floats per
// channel) stay within half of the bytes of x and g it reads (2 x element_bytes per channel and
// position): 100 positions for 7x7 in 16 bits.
inline int64_t channels_last_min_positions(int64_t taps, int64_t element_bytes) {
  const int64_t balanced = (4 * (taps + 1) + element_bytes - 1) / element_bytes;
  return balanced > kMinPositionsPerSliceChannelsLast ? balanced
                                                      : kMinPositionsPerSliceChannelsLast;
}
inline void split_rows(int64_t total_rows, int64_t out_width, int64_t wanted,
                       int64_t min_positions, int32_t& slices, int32_t& rows_per_slice) {
  if (total_rows < 1) {  // an empty output: no slice (the planner sends it nowhere)
    slices = 0;
    rows_per_slice = 1;
    return;
  }
  const int64_t min_rows = (min_positions + out_width - 1) / out_width;
  const int64_t most = total_rows / min_rows;  // rounded down: no slice below min_rows
  const int64_t capped = wanted > most ? most : wanted;
  const int64_t count = capped < 1 ? 1 : capped;  // fewer rows than one slice's minimum: one
  rows_per_slice = static_cast<int32_t>((total_rows + count - 1) / count);
  slices = static_cast<int32_t>((total_rows + rows_per_slice - 1) / rows_per_slice);
}

// The output rows [first_row, last_row) of the batch x out_height rows that slice `slice`
// walks (split_rows' slices; the kernels of both layouts).
FUSEDCONV_HOST_DEVICE void slice_row_range(int64_t total_rows, int32_t rows_per_slice,
                                           int64_t slice, int64_t& first_row,
                                           int64_t& last_row) {
  first_row = slice * rows_per_slice;
  last_row = first_row + rows_per_slice < total_rows ? first_row + rows_per_slice : total_rows;
}

}  // namespace depthwise_backward
}  // namespace fusedconv
