// FastDivisor (fast_divisor.h) against the `/` and `%` operators: every dividend near the
// multiples of each divisor (where a rounding error in the multiplier would show first), the
// ends of the range, and a pseudo-random sample. The device path differs only in computing the
// multiply-high with __umulhi.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "fusedconv/fast_divisor.h"

namespace {

using fusedconv::FastDivisor;

constexpr uint32_t kMaxDividend = (uint32_t{1} << 31) - 1;

void expect_exact(const FastDivisor& fast, uint32_t dividend) {
  ASSERT_EQ(fast.quotient(dividend), dividend / fast.divisor)
      << "divisor " << fast.divisor << ", dividend " << dividend;
}

std::vector<uint32_t> divisors_under_test() {
  std::vector<uint32_t> divisors;
  for (uint32_t divisor = 1; divisor <= 1100; ++divisor) {
    divisors.push_back(divisor);
  }
  // Shapes of the benchmark (output planes and widths), powers of two and their neighbours,
  // and the largest divisors allowed.
  for (uint32_t divisor : {3969u, 15876u, 12544u, 50176u, 784u, 3136u, 65536u, 65537u, 1u << 20,
                           (1u << 20) + 1u, 1u << 30, (1u << 30) + 1u, kMaxDividend - 1u,
                           kMaxDividend}) {
    divisors.push_back(divisor);
  }
  return divisors;
}

TEST(FastDivisor, DividendsNearEveryMultiple) {
  for (uint32_t divisor : divisors_under_test()) {
    const FastDivisor fast = FastDivisor::make(divisor);
    for (uint32_t quotient = 0; quotient < 4000; ++quotient) {
      const uint64_t multiple = uint64_t{quotient} * divisor;
      for (int64_t offset = -2; offset <= 2; ++offset) {
        const int64_t dividend = static_cast<int64_t>(multiple) + offset;
        if (dividend >= 0 && dividend <= kMaxDividend) {
          expect_exact(fast, static_cast<uint32_t>(dividend));
        }
      }
    }
  }
}

TEST(FastDivisor, EndsOfTheRangeAndARandomSample) {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (uint32_t divisor : divisors_under_test()) {
    const FastDivisor fast = FastDivisor::make(divisor);
    expect_exact(fast, 0);
    expect_exact(fast, kMaxDividend);
    expect_exact(fast, kMaxDividend - divisor / 2);
    expect_exact(fast, kMaxDividend - kMaxDividend % divisor - 1);
    for (int sample = 0; sample < 2000; ++sample) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      expect_exact(fast, static_cast<uint32_t>(state >> 33));  // 31 random bits
    }
  }
}

}  // namespace
