// tf32_round_bits (tf32.h) against a float64 reference of round-to-nearest, ties away from zero,
// to TF32's 10 mantissa bits: every binade's ties and neighbours, subnormals, the overflow to
// infinity past the largest TF32, and a pseudo-random sample of finite floats of both signs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "fusedconv/tf32.h"

namespace {

using fusedconv::tf32_round_bits;

float from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

uint32_t to_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// |x| rounded to a multiple of TF32's spacing at x, ties away from zero, in float64 (exact:
// every float32 and every multiple involved is a float64).
float reference_rna(float x) {
  const double magnitude = std::fabs(static_cast<double>(x));
  int exponent = 0;
  std::frexp(magnitude, &exponent);  // magnitude in [2^(exponent - 1), 2^exponent)
  // Spacing: 2^-10 of the binade for normal numbers, float32's subnormal spacing x 2^13 below.
  const int spacing_exponent = exponent - 1 < -126 ? -136 : exponent - 1 - 10;
  const double spacing = std::ldexp(1.0, spacing_exponent);
  const double units = std::floor(magnitude / spacing);
  const double remainder = magnitude - units * spacing;
  const double rounded = (remainder >= spacing / 2 ? units + 1 : units) * spacing;
  const float result = rounded > std::numeric_limits<float>::max()
                           ? std::numeric_limits<float>::infinity()
                           : static_cast<float>(rounded);
  return std::signbit(x) ? -result : result;
}

void expect_rna(uint32_t bits) {
  const float x = from_bits(bits);
  ASSERT_TRUE(std::isfinite(x));
  const float expected = reference_rna(x);
  ASSERT_EQ(tf32_round_bits(bits), to_bits(expected))
      << "x = " << x << " (bits 0x" << std::hex << bits << ")";
}

TEST(Tf32RoundBits, TiesAndNeighboursInEveryBinade) {
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t exponent = 0; exponent < 255; ++exponent) {
      for (uint32_t top : {0u, 1u, 0x155u, 0x3feu, 0x3ffu}) {  // kept mantissa bits
        for (uint32_t low : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu}) {  // dropped bits
          expect_rna(sign << 31 | exponent << 23 | top << 13 | low);
        }
      }
    }
  }
}

TEST(Tf32RoundBits, OverflowAndZeros) {
  EXPECT_EQ(tf32_round_bits(0x7f7fffffu), 0x7f800000u);  // FLT_MAX rounds up to infinity
  EXPECT_EQ(tf32_round_bits(0xff7fffffu), 0xff800000u);
  EXPECT_EQ(tf32_round_bits(0x7f7fefffu), 0x7f7fe000u);  // below the tie: the largest TF32
  EXPECT_EQ(tf32_round_bits(0x00000000u), 0x00000000u);
  EXPECT_EQ(tf32_round_bits(0x80000000u), 0x80000000u);
}

TEST(Tf32RoundBits, RandomFiniteFloats) {
  uint64_t state = 0x2545f4914f6cdd1dull;
  int checked = 0;
  while (checked < 2000000) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const uint32_t bits = static_cast<uint32_t>(state >> 32);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
      continue;  // infinities and NaN: the callers keep those out
    }
    expect_rna(bits);
    ++checked;
  }
}

}  // namespace
