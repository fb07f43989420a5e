// Division by a divisor fixed for a whole launch (CUTLASS's FastDivmod): the host picks a
// multiplier and a shift once, and the device replaces each 32-bit division (a ~20-instruction
// subroutine) by a multiply-high, a shift and a select. Exact for dividends in [0, 2^31).
#pragma once

#include <cstdint>

#include "fusedconv/host_device.h"

namespace fusedconv {

struct FastDivisor {
  uint32_t divisor;
  uint32_t multiplier;  // ceil(2^(31 + ceil(log2 divisor)) / divisor); unused for divisor 1
  uint32_t shift;       // ceil(log2 divisor) - 1

  // divisor in [1, 2^31).
  static FastDivisor make(uint32_t divisor) {
    FastDivisor result{divisor, 0u, 0u};
    if (divisor > 1) {
      uint32_t log2_ceil = 0;
      while ((uint64_t{1} << log2_ceil) < divisor) {
        ++log2_ceil;
      }
      const uint64_t power = uint64_t{1} << (31 + log2_ceil);
      result.multiplier = static_cast<uint32_t>((power + divisor - 1) / divisor);
      result.shift = log2_ceil - 1;
    }
    return result;
  }

  // dividend in [0, 2^31).
  FUSEDCONV_HOST_DEVICE uint32_t quotient(uint32_t dividend) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(dividend, multiplier);
#else
    const uint32_t high =
        static_cast<uint32_t>((uint64_t{dividend} * multiplier) >> 32);
#endif
    return divisor == 1 ? dividend : high >> shift;
  }

  // The quotient; `remainder` = dividend - quotient x divisor. dividend in [0, 2^31).
  FUSEDCONV_HOST_DEVICE uint32_t divide(uint32_t dividend, uint32_t& remainder) const {
    const uint32_t result = quotient(dividend);
    remainder = dividend - result * divisor;
    return result;
  }
};

}  // namespace fusedconv
