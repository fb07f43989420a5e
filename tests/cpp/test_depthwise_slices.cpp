// The depthwise backward's weight-pass slicing (backward/depthwise_slices.h): the slices cover
// every output row exactly once, each but the last holds at least the minimum positions where
// there are that many, there is always at least one, and the count follows `wanted`. A count of
// zero once divided by zero on problems smaller than one slice's minimum.
#include <gtest/gtest.h>

#include <cstdint>

#include "backward/depthwise_slices.h"

namespace {

using fusedconv::depthwise_backward::kMinPositionsPerSlice;
using fusedconv::depthwise_backward::kMinPositionsPerSliceChannelsLast;
using fusedconv::depthwise_backward::split_rows;

void check(int64_t total_rows, int64_t out_width, int64_t wanted, int64_t min_positions) {
  int32_t slices = -1, rows = -1;
  split_rows(total_rows, out_width, wanted, min_positions, slices, rows);
  ASSERT_GE(slices, 1) << total_rows << " " << out_width << " " << wanted;
  ASSERT_GE(rows, 1);
  EXPECT_GE(int64_t{slices} * rows, total_rows);        // every row in a slice
  EXPECT_LT(int64_t{slices - 1} * rows, total_rows);    // and no empty slice
  if (slices > 1) {
    EXPECT_GE(int64_t{rows} * out_width, min_positions);
  }
  EXPECT_LE(slices, wanted < 1 ? 1 : wanted);
}

TEST(DepthwiseSlices, FewerRowsThanOneSliceMakeOne) {
  int32_t slices = 0, rows = 0;
  // 63 rows of 26: below 2048 positions.
  split_rows(63, 26, 1056, kMinPositionsPerSlice, slices, rows);
  EXPECT_EQ(slices, 1);
  EXPECT_EQ(rows, 63);
}

TEST(DepthwiseSlices, HandComputedCases) {
  int32_t slices = 0, rows = 0;
  // The NCHW determinism test on 132 SMs, 32 channels.
  split_rows(224, 56, 33, kMinPositionsPerSlice, slices, rows);
  EXPECT_EQ(slices, 6);
  EXPECT_EQ(rows, 38);
  split_rows(270, 23, 528, kMinPositionsPerSlice, slices, rows);  // slices of at least 90 rows
  EXPECT_EQ(slices, 3);
  EXPECT_EQ(rows, 90);
  // channels_last, mnv3's 672-channel 5x5 s2 at batch 32 on 132 SMs (9 blocks of vectors):
  // slices of at least 10 rows of 7.
  split_rows(224, 7, 118, kMinPositionsPerSliceChannelsLast, slices, rows);
  EXPECT_EQ(slices, 21);
  EXPECT_EQ(rows, 11);
}

TEST(DepthwiseSlices, CoverEveryRowOverASweep) {
  for (int64_t total_rows = 1; total_rows <= 600; total_rows += 7) {
    for (int64_t out_width : {1, 3, 23, 56, 112, 3000}) {
      for (int64_t wanted : {0, 1, 2, 33, 1056}) {
        check(total_rows, out_width, wanted, kMinPositionsPerSlice);
        check(total_rows, out_width, wanted, kMinPositionsPerSliceChannelsLast);
      }
    }
  }
}

TEST(DepthwiseSlices, ChannelsLastMinimumKeepsPartialsWithinHalfTheReads) {
  using fusedconv::depthwise_backward::channels_last_min_positions;
  EXPECT_EQ(channels_last_min_positions(9, 2), 64);    // 3x3: the floor of 64
  EXPECT_EQ(channels_last_min_positions(25, 2), 64);   // 5x5 16-bit: 52 needed
  EXPECT_EQ(channels_last_min_positions(49, 2), 100);  // 7x7 16-bit
  EXPECT_EQ(channels_last_min_positions(49, 4), 64);   // 7x7 float32: 50 needed
  for (int64_t taps : {9, 25, 49}) {
    for (int64_t bytes : {2, 4}) {
      const int64_t positions = channels_last_min_positions(taps, bytes);
      EXPECT_LE(4 * (taps + 1), positions * bytes);  // partials <= half of 2 x bytes x positions
    }
  }
}

TEST(DepthwiseSlices, EmptyOutputHasNoSlice) {
  int32_t slices = -1, rows = -1;
  split_rows(0, 56, 33, kMinPositionsPerSlice, slices, rows);
  EXPECT_EQ(slices, 0);
}

TEST(DepthwiseSlices, SliceRowsCoverEveryRowOnceInOrder) {
  using fusedconv::depthwise_backward::slice_row_range;
  for (int64_t total_rows : {1, 7, 64, 1000, 7168}) {
    for (int64_t wanted : {1, 3, 33, 1056}) {
      int32_t slices = 0, rows = 0;
      split_rows(total_rows, 56, wanted, kMinPositionsPerSliceChannelsLast, slices, rows);
      int64_t next = 0;
      for (int64_t slice = 0; slice < slices; ++slice) {
        int64_t first = -1, last = -1;
        slice_row_range(total_rows, rows, slice, first, last);
        EXPECT_EQ(first, next);
        EXPECT_LT(first, last);
        EXPECT_LE(last - first, rows);
        next = last;
      }
      EXPECT_EQ(next, total_rows);
    }
  }
}

}  // namespace
