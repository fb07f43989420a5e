// fusedconv::HardSwishReLU<T> (activation.h) against an independent float64 formula, branch by
// branch. The backward recovers f'(z) from y = f(z) alone, so every branch of the DESIGN.md table is
// checked through the round trip grad_from_output(value(z)).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fusedconv/activation.h"

namespace {

using fusedconv::HardSwishReLU;

// relu(hardswish(z)) written the way PyTorch documents hardswish, in float64.
double reference_value(double z) {
  const double hardswish = z * std::clamp(z + 3.0, 0.0, 6.0) / 6.0;
  return std::max(hardswish, 0.0);
}

// d/dz relu(hardswish(z)), with PyTorch's slope 1.5 at z == 3 (its hardswish backward uses the
// middle branch on the closed interval [-3, 3]).
double reference_derivative(double z) {
  if (z <= 0.0) {
    return 0.0;
  }
  if (z <= 3.0) {
    return (2.0 * z + 3.0) / 6.0;
  }
  return 1.0;
}

// Per-type tolerances and magnitudes. value() rounds four times (z + 3, the product, the rounded
// 1/6 and the scaling by it), so a few ulps; grad_from_output() goes through sqrt(9 + 24y) of a
// rounded y.
template <typename T>
struct Precision;

template <>
struct Precision<float> {
  static constexpr double kValueRelTol = 1e-6;
  static constexpr double kGradRelTol = 1e-5;
  // value() is quadratic on (0, 3), so a central difference is exact up to rounding; the step
  // only has to keep rounding of y (~1e-7 relative) small against 2h.
  static constexpr double kFiniteDifferenceStep = 1.0 / 64.0;
  static constexpr double kFiniteDifferenceTol = 1e-3;
  // Large but with z * 6 still finite: value() multiplies by 6 before scaling by 1/6.
  static constexpr double kLarge = 1e30;
};

template <>
struct Precision<double> {
  static constexpr double kValueRelTol = 1e-15;
  static constexpr double kGradRelTol = 1e-12;
  static constexpr double kFiniteDifferenceStep = 1e-5;
  static constexpr double kFiniteDifferenceTol = 1e-8;
  static constexpr double kLarge = 1e300;
};

template <typename T>
class HardSwishReLUTest : public ::testing::Test {
 protected:
  using P = Precision<T>;

  static T below(T x) { return std::nextafter(x, -std::numeric_limits<T>::infinity()); }
  static T above(T x) { return std::nextafter(x, std::numeric_limits<T>::infinity()); }

  static std::vector<T> at_most_minus_three() {
    return {T(-P::kLarge), T(-1e6), T(-1000), T(-10), T(-4), T(-3.5), below(T(-3)), T(-3),
            std::numeric_limits<T>::lowest()};
  }
  static std::vector<T> minus_three_to_zero() {
    return {above(T(-3)), T(-2.9), T(-2), T(-1.5), T(-1), T(-0.5), T(-1e-6),
            -std::numeric_limits<T>::min(), T(-0.0), T(0)};
  }
  // Starts at the smallest normal number: below it y = z / 2 underflows and relu reports no
  // gradient, as PyTorch's relu backward (which also reads only y) does.
  static std::vector<T> zero_to_three() {
    return {std::numeric_limits<T>::min(), T(1e-30), T(1e-6), T(0.01), T(0.1), T(0.5), T(1),
            T(1.5), T(2), T(2.5), T(2.999), below(T(3))};
  }
  static std::vector<T> above_three() {
    return {above(T(3)), T(3.001), T(3.5), T(4), T(10), T(1000), T(1e6), T(P::kLarge),
            std::numeric_limits<T>::max() / T(8)};
  }

  // Every multiple of 1/64 in [-5, 5]: exact in both types, hits -3, 0 and 3 exactly.
  static std::vector<T> dense_sweep() {
    std::vector<T> points;
    for (int i = -320; i <= 320; ++i) {
      points.push_back(T(i) / T(64));
    }
    return points;
  }

  static void expect_value_matches_reference(T z) {
    const double expected = reference_value(static_cast<double>(z));
    const double actual = static_cast<double>(HardSwishReLU<T>::value(z));
    EXPECT_NEAR(actual, expected, P::kValueRelTol * std::abs(expected)) << "z = " << z;
  }

  static void expect_grad_matches_derivative(T z) {
    const double expected = reference_derivative(static_cast<double>(z));
    const T y = HardSwishReLU<T>::value(z);
    const double actual = static_cast<double>(HardSwishReLU<T>::grad_from_output(y));
    EXPECT_NEAR(actual, expected, P::kGradRelTol * std::abs(expected))
        << "z = " << z << ", y = " << y;
  }
};

using FloatingTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(HardSwishReLUTest, FloatingTypes);

TYPED_TEST(HardSwishReLUTest, ValueIsZeroAtOrBelowMinusThree) {
  using T = TypeParam;
  for (const T z : TestFixture::at_most_minus_three()) {
    EXPECT_EQ(HardSwishReLU<T>::value(z), T(0)) << "z = " << z;
  }
}

// hardswish is negative on (-3, 0); relu must clamp it to exactly zero.
TYPED_TEST(HardSwishReLUTest, ValueIsZeroBetweenMinusThreeAndZero) {
  using T = TypeParam;
  for (const T z : TestFixture::minus_three_to_zero()) {
    EXPECT_EQ(HardSwishReLU<T>::value(z), T(0)) << "z = " << z;
  }
}

TYPED_TEST(HardSwishReLUTest, ValueIsQuadraticBetweenZeroAndThree) {
  using T = TypeParam;
  for (const T z : TestFixture::zero_to_three()) {
    TestFixture::expect_value_matches_reference(z);
    EXPECT_GT(HardSwishReLU<T>::value(z), T(0)) << "z = " << z;
    EXPECT_LT(HardSwishReLU<T>::value(z), T(3)) << "z = " << z;
  }
}

TYPED_TEST(HardSwishReLUTest, ValueIsExactlyThreeAtThree) {
  using T = TypeParam;
  EXPECT_EQ(HardSwishReLU<T>::value(T(3)), T(3));
}

TYPED_TEST(HardSwishReLUTest, ValueIsIdentityAboveThree) {
  using T = TypeParam;
  for (const T z : TestFixture::above_three()) {
    TestFixture::expect_value_matches_reference(z);
  }
}

TYPED_TEST(HardSwishReLUTest, ValueMatchesReferenceOnDenseSweep) {
  for (const auto z : TestFixture::dense_sweep()) {
    TestFixture::expect_value_matches_reference(z);
  }
}

// torch.relu(F.hardswish(nan)) is nan; a fmax-based relu would silently turn it into 0.
TYPED_TEST(HardSwishReLUTest, ValueOfNaNIsNaN) {
  using T = TypeParam;
  EXPECT_TRUE(std::isnan(HardSwishReLU<T>::value(std::numeric_limits<T>::quiet_NaN())));
}

TYPED_TEST(HardSwishReLUTest, GradIsZeroWhereOutputIsZero) {
  using T = TypeParam;
  std::vector<T> points = TestFixture::at_most_minus_three();
  const std::vector<T> middle = TestFixture::minus_three_to_zero();
  points.insert(points.end(), middle.begin(), middle.end());
  for (const T z : points) {
    EXPECT_EQ(HardSwishReLU<T>::grad_from_output(HardSwishReLU<T>::value(z)), T(0))
        << "z = " << z;
  }
}

TYPED_TEST(HardSwishReLUTest, GradIsLinearBetweenZeroAndThree) {
  for (const auto z : TestFixture::zero_to_three()) {
    TestFixture::expect_grad_matches_derivative(z);
  }
}

// PyTorch's hardswish backward uses (2z + 3) / 6 on the closed interval, so 1.5 at z == 3 exactly.
TYPED_TEST(HardSwishReLUTest, GradIsOneAndAHalfAtThree) {
  using T = TypeParam;
  EXPECT_EQ(HardSwishReLU<T>::grad_from_output(HardSwishReLU<T>::value(T(3))), T(1.5));
}

TYPED_TEST(HardSwishReLUTest, GradIsOneAboveThree) {
  using T = TypeParam;
  for (const T z : TestFixture::above_three()) {
    EXPECT_EQ(HardSwishReLU<T>::grad_from_output(HardSwishReLU<T>::value(z)), T(1))
        << "z = " << z;
  }
}

TYPED_TEST(HardSwishReLUTest, GradMatchesDerivativeOnDenseSweep) {
  for (const auto z : TestFixture::dense_sweep()) {
    TestFixture::expect_grad_matches_derivative(z);
  }
}

// PyTorch's relu and hardswish backward both pass the incoming gradient through at a NaN output,
// and at +inf (z > 3 branch).
TYPED_TEST(HardSwishReLUTest, GradPassesThroughAtNaNAndInfinity) {
  using T = TypeParam;
  EXPECT_EQ(HardSwishReLU<T>::grad_from_output(std::numeric_limits<T>::quiet_NaN()), T(1));
  EXPECT_EQ(HardSwishReLU<T>::grad_from_output(std::numeric_limits<T>::infinity()), T(1));
}

// Where relu passes nothing, backward() is an exact 0 even for a non-finite incoming gradient
// (PyTorch's threshold_backward selects); elsewhere it is grad_y * f'(y).
TYPED_TEST(HardSwishReLUTest, BackwardSelectsZeroWhereReluIsClosed) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  EXPECT_EQ(HardSwishReLU<T>::backward(inf, T(0)), T(0));
  EXPECT_EQ(HardSwishReLU<T>::backward(nan, T(0)), T(0));
  EXPECT_EQ(HardSwishReLU<T>::backward(T(2), T(4)), T(2));
  EXPECT_EQ(HardSwishReLU<T>::backward(T(2), T(3)), T(3));
  EXPECT_EQ(HardSwishReLU<T>::backward(T(2), nan), T(2));  // passes through, as PyTorch does
}

// Central differences of value() itself, away from the kinks at 0 and 3, so the derivative table
// is checked against the function and not only against a second hand-written formula.
TYPED_TEST(HardSwishReLUTest, ValueAgreesWithFiniteDifferences) {
  using T = TypeParam;
  using P = typename TestFixture::P;
  const T h = T(P::kFiniteDifferenceStep);
  const std::vector<T> points = {T(-6),  T(-4),   T(-2.5), T(-1.25), T(-0.5), T(0.25), T(0.75),
                                 T(1.3), T(1.75), T(2.2),  T(2.75),  T(3.5),  T(5),    T(40)};
  for (const T z : points) {
    const double difference =
        (static_cast<double>(HardSwishReLU<T>::value(z + h)) -
         static_cast<double>(HardSwishReLU<T>::value(z - h))) /
        (2.0 * static_cast<double>(h));
    EXPECT_NEAR(difference, reference_derivative(static_cast<double>(z)), P::kFiniteDifferenceTol)
        << "z = " << z;
  }
}

}  // namespace
