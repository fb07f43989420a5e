// Output-size arithmetic (shape.h): hand-computed cases first, then a brute-force count of the
// window positions that fit, which does not share the closed-form formula it checks.
#include <gtest/gtest.h>

#include <cstdint>

#include "fusedconv/shape.h"

namespace {

using fusedconv::conv_output_size;
using fusedconv::dilated_kernel_extent;

TEST(DilatedKernelExtent, HandComputedCases) {
  EXPECT_EQ(dilated_kernel_extent(1, 1), 1);
  EXPECT_EQ(dilated_kernel_extent(1, 5), 1);  // a single tap spans one row whatever the dilation
  EXPECT_EQ(dilated_kernel_extent(3, 1), 3);
  EXPECT_EQ(dilated_kernel_extent(3, 2), 5);
  EXPECT_EQ(dilated_kernel_extent(2, 4), 5);
  EXPECT_EQ(dilated_kernel_extent(5, 3), 13);
}

// Arguments: input, pad_begin, pad_end, kernel, stride, dilation.
TEST(ConvOutputSize, UnitStrideNoPadding) {
  EXPECT_EQ(conv_output_size(5, 0, 0, 3, 1, 1), 3);
  EXPECT_EQ(conv_output_size(128, 0, 0, 3, 1, 1), 126);  // KernelBench v0.1
  EXPECT_EQ(conv_output_size(32, 0, 0, 3, 1, 1), 30);    // KernelBench v0
  EXPECT_EQ(conv_output_size(7, 0, 0, 1, 1, 1), 7);
}

TEST(ConvOutputSize, SymmetricPadding) {
  EXPECT_EQ(conv_output_size(5, 1, 1, 3, 1, 1), 5);
  EXPECT_EQ(conv_output_size(6, 2, 2, 5, 1, 1), 6);
  EXPECT_EQ(conv_output_size(4, 3, 3, 2, 1, 1), 9);  // padding wider than the kernel
}

TEST(ConvOutputSize, Stride) {
  EXPECT_EQ(conv_output_size(7, 0, 0, 3, 2, 1), 3);  // windows at 0, 2, 4
  EXPECT_EQ(conv_output_size(8, 0, 0, 3, 2, 1), 3);  // the last column is dropped
  EXPECT_EQ(conv_output_size(9, 1, 1, 3, 2, 1), 5);
  EXPECT_EQ(conv_output_size(10, 0, 0, 3, 3, 1), 3);  // windows at 0, 3, 6
  EXPECT_EQ(conv_output_size(5, 0, 0, 1, 4, 1), 2);   // 1x1 windows at 0 and 4
}

// pad_end differs from pad_begin for 'same' padding with an even kernel; only the total padding
// changes the count.
TEST(ConvOutputSize, AsymmetricPadding) {
  EXPECT_EQ(conv_output_size(4, 0, 1, 2, 1, 1), 4);  // 'same', kernel 2
  EXPECT_EQ(conv_output_size(4, 1, 0, 2, 1, 1), 4);
  EXPECT_EQ(conv_output_size(6, 1, 2, 4, 1, 1), 6);  // 'same', kernel 4
  EXPECT_EQ(conv_output_size(5, 1, 0, 2, 2, 1), 3);  // padded length 6: windows at 0, 2, 4
  EXPECT_EQ(conv_output_size(5, 0, 2, 3, 3, 1), 2);  // padded length 7: windows at 0, 3
}

TEST(ConvOutputSize, Dilation) {
  EXPECT_EQ(conv_output_size(7, 0, 0, 3, 1, 2), 3);  // extent 5
  EXPECT_EQ(conv_output_size(9, 1, 1, 3, 2, 3), 3);  // extent 7, padded length 11
  EXPECT_EQ(conv_output_size(8, 2, 2, 3, 1, 2), 8);  // 'same' for a dilated 3-tap kernel
}

TEST(ConvOutputSize, ExactFitGivesOne) {
  EXPECT_EQ(conv_output_size(5, 0, 0, 5, 1, 1), 1);
  EXPECT_EQ(conv_output_size(5, 0, 0, 3, 1, 2), 1);  // dilated extent 5
  EXPECT_EQ(conv_output_size(3, 1, 1, 5, 1, 1), 1);  // fits only thanks to padding
  EXPECT_EQ(conv_output_size(5, 0, 0, 5, 7, 1), 1);  // a stride beyond the input
  EXPECT_EQ(conv_output_size(1, 0, 0, 1, 1, 1), 1);
}

TEST(ConvOutputSize, TooSmallInputGivesZero) {
  EXPECT_EQ(conv_output_size(4, 0, 0, 5, 1, 1), 0);
  EXPECT_EQ(conv_output_size(4, 0, 0, 3, 1, 3), 0);  // dilated extent 7
  EXPECT_EQ(conv_output_size(1, 0, 0, 2, 1, 1), 0);
  EXPECT_EQ(conv_output_size(2, 1, 0, 5, 2, 1), 0);
  EXPECT_EQ(conv_output_size(0, 0, 0, 1, 1, 1), 0);
}

// Window o starts at padded position o * stride and covers taps o * stride + t * dilation; it is
// valid when every tap lies inside the padded input [0, pad_begin + input + pad_end).
int64_t count_valid_windows(int64_t input, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                            int64_t stride, int64_t dilation) {
  const int64_t padded = pad_begin + input + pad_end;
  int64_t count = 0;
  for (int64_t start = 0; start < padded; start += stride) {
    bool inside = true;
    for (int64_t tap = 0; tap < kernel; ++tap) {
      inside = inside && start + tap * dilation < padded;
    }
    count += inside ? 1 : 0;
  }
  return count;
}

TEST(ConvOutputSize, MatchesBruteForceCount) {
  int64_t checked = 0;
  for (int64_t input = 0; input <= 12; ++input) {
    for (int64_t pad_begin = 0; pad_begin <= 3; ++pad_begin) {
      for (int64_t pad_end = 0; pad_end <= 3; ++pad_end) {
        for (int64_t kernel = 1; kernel <= 5; ++kernel) {
          for (int64_t stride = 1; stride <= 4; ++stride) {
            for (int64_t dilation = 1; dilation <= 3; ++dilation) {
              const int64_t expected =
                  count_valid_windows(input, pad_begin, pad_end, kernel, stride, dilation);
              ASSERT_EQ(conv_output_size(input, pad_begin, pad_end, kernel, stride, dilation),
                        expected)
                  << "input " << input << " pad " << pad_begin << "/" << pad_end << " kernel "
                  << kernel << " stride " << stride << " dilation " << dilation;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 13 * 4 * 4 * 5 * 4 * 3);
}

TEST(DilatedKernelExtent, MatchesLastTapPlusOne) {
  for (int64_t kernel = 1; kernel <= 7; ++kernel) {
    for (int64_t dilation = 1; dilation <= 5; ++dilation) {
      int64_t last_tap = 0;
      for (int64_t tap = 0; tap < kernel; ++tap) {
        last_tap = tap * dilation;
      }
      EXPECT_EQ(dilated_kernel_extent(kernel, dilation), last_tap + 1)
          << "kernel " << kernel << " dilation " << dilation;
    }
  }
}

}  // namespace
