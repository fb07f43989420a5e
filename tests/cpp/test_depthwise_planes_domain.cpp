// The depthwise planes kernels' domain (common/depthwise_planes_domain.h): the staged plane up to
// 1024 elements, the computed one up to 4096, in either direction.
#include <gtest/gtest.h>

#include <cstdint>

#include "common/depthwise_planes_domain.h"

namespace {

using fusedconv::ConvParams;
using fusedconv::depthwise_planes::forward_applies;
using fusedconv::depthwise_planes::grad_input_applies;

ConvParams planes(int64_t in_height, int64_t in_width, int64_t out_height, int64_t out_width) {
  ConvParams p{};
  p.batch = 64;
  p.in_channels = p.out_channels = p.groups = 672;
  p.in_height = in_height;
  p.in_width = in_width;
  p.out_height = out_height;
  p.out_width = out_width;
  return p;
}

TEST(DepthwisePlanesDomain, StagedPlaneUpTo1024Elements) {
  EXPECT_TRUE(forward_applies(planes(14, 14, 7, 7)));       // MobileNetV3's 5x5 stride 2
  EXPECT_TRUE(forward_applies(planes(32, 32, 30, 30)));     // exactly 1024 staged
  EXPECT_FALSE(forward_applies(planes(33, 32, 31, 30)));
  EXPECT_TRUE(grad_input_applies(planes(34, 34, 32, 32)));  // 1024 of g, 1156 computed
  EXPECT_FALSE(grad_input_applies(planes(35, 35, 33, 33)));
}

TEST(DepthwisePlanesDomain, ComputedPlaneUpTo4096Elements) {
  // Padding makes an output plane larger than its input: the forward computes it.
  EXPECT_TRUE(forward_applies(planes(16, 16, 64, 64)));
  EXPECT_FALSE(forward_applies(planes(16, 16, 64, 65)));
  EXPECT_TRUE(grad_input_applies(planes(64, 64, 8, 8)));
  EXPECT_FALSE(grad_input_applies(planes(65, 64, 8, 8)));
}

TEST(DepthwisePlanesDomain, FewerThan2To30Planes) {
  ConvParams p = planes(7, 7, 7, 7);
  p.batch = (int64_t{1} << 30) / p.in_channels + 1;
  EXPECT_FALSE(forward_applies(p));
  EXPECT_FALSE(grad_input_applies(p));
}

}  // namespace
