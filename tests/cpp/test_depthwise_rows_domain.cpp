// The depthwise vector-row kernels' domain (common/depthwise_rows_domain.h): which calls a row
// walk takes, the vector it reads rows in, and its thread count.
#include <gtest/gtest.h>

#include <cstdint>

#include "common/depthwise_rows_domain.h"

namespace {

using fusedconv::ConvParams;
using fusedconv::DType;
using fusedconv::depthwise_rows::RowGeometry;
using fusedconv::depthwise_rows::row_geometry;
using fusedconv::depthwise_rows::row_vector_bytes;
using fusedconv::depthwise_rows::walk_threads;

// A 'same'-padded depthwise call: channels x height x width input, kernel k, stride s.
ConvParams call(int64_t k, int64_t s, int64_t height, int64_t width, DType dtype) {
  ConvParams p{};
  p.batch = 2;
  p.in_channels = p.out_channels = p.groups = 8;
  p.in_height = height;
  p.in_width = width;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = s;
  p.pad_top = p.pad_left = (k - 1) / 2;
  p.dilation_h = p.dilation_w = 1;
  p.out_height = (height + 2 * p.pad_top - k) / s + 1;
  p.out_width = (width + 2 * p.pad_left - k) / s + 1;
  p.dtype = dtype;
  return p;
}

TEST(DepthwiseRowsDomain, WidestVectorOfAtLeastTwoElements) {
  EXPECT_EQ(row_vector_bytes(56, 4), 16);  // 14 vectors of 4 floats
  EXPECT_EQ(row_vector_bytes(14, 4), 8);   // 7 x 2 floats
  EXPECT_EQ(row_vector_bytes(7, 4), 0);    // odd: one-element vectors only
  EXPECT_EQ(row_vector_bytes(112, 2), 16);
  EXPECT_EQ(row_vector_bytes(28, 2), 8);
  EXPECT_EQ(row_vector_bytes(14, 2), 4);
  EXPECT_EQ(row_vector_bytes(7, 2), 0);
  EXPECT_EQ(row_vector_bytes(2, 4), 8);  // a row of one vector
}

TEST(DepthwiseRowsDomain, SamePaddedThreeAndFiveAtStrideOneAndTwo) {
  for (const int64_t k : {3, 5}) {
    for (const int64_t s : {1, 2}) {
      for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        RowGeometry g;
        ASSERT_TRUE(row_geometry(call(k, s, 56, 56, dtype), g)) << k << " " << s;
        EXPECT_EQ(g.kernel, k);
        EXPECT_EQ(g.stride, s);
        EXPECT_EQ(g.vector_bytes, s == 1 || dtype == DType::kFloat32 ? 16 : 8);  // 56 or 28 columns
      }
    }
  }
}

TEST(DepthwiseRowsDomain, LeavesOtherGeometriesToTheOtherKernels) {
  RowGeometry g;
  EXPECT_FALSE(row_geometry(call(7, 1, 56, 56, DType::kFloat32), g));   // 7x7
  EXPECT_FALSE(row_geometry(call(3, 3, 57, 57, DType::kFloat32), g));   // stride 3
  EXPECT_FALSE(row_geometry(call(3, 2, 57, 57, DType::kFloat32), g));   // odd width at stride 2
  EXPECT_FALSE(row_geometry(call(3, 1, 56, 57, DType::kFloat32), g));   // no whole vectors
  EXPECT_FALSE(row_geometry(call(3, 1, 56, 56, DType::kFloat64), g));   // float64
  ConvParams unpadded = call(3, 1, 56, 56, DType::kFloat32);
  unpadded.pad_left = 0;
  unpadded.out_width = 54;
  EXPECT_FALSE(row_geometry(unpadded, g));
  ConvParams dilated = call(3, 1, 56, 56, DType::kFloat32);
  dilated.dilation_h = 2;
  EXPECT_FALSE(row_geometry(dilated, g));
  ConvParams rectangular = call(3, 1, 56, 56, DType::kFloat32);
  rectangular.kernel_w = 5;
  EXPECT_FALSE(row_geometry(rectangular, g));
  EXPECT_EQ(g.vector_bytes, 0);  // a refused call leaves no geometry behind
}

TEST(DepthwiseRowsDomain, ThreadCountsStayBelowThirtyTwoBits) {
  RowGeometry g;
  ConvParams large = call(3, 1, 1024, 1024, DType::kFloat16);  // 1024 / 8 x 256 row groups
  large.batch = 1;
  large.in_channels = large.out_channels = large.groups = 65536;  // 2^16 x 2^8 x 2^7 = 2^31
  EXPECT_FALSE(row_geometry(large, g));
  large.in_channels = large.out_channels = large.groups = 32768;  // 2^30
  EXPECT_TRUE(row_geometry(large, g));
}

TEST(DepthwiseRowsDomain, WalkThreadsCoverEveryRowGroupAndColumnGroup) {
  EXPECT_EQ(walk_threads(3, 8, 16, 4), 3 * 2 * 4);
  EXPECT_EQ(walk_threads(3, 9, 16, 4), 3 * 3 * 4);   // a partial row group
  EXPECT_EQ(walk_threads(1, 1, 16, 8), 1 * 1 * 2);   // the transposed walk's two vectors
  EXPECT_EQ(walk_threads(0, 9, 16, 4), 0);
}

}  // namespace
