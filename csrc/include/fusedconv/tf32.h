// TF32 rounding of a float32 bit pattern, shared by the device operand splits and the C++ tests
// (which check it against a float64 reference): TF32 keeps float32's sign and exponent and the
// top 10 of its 23 mantissa bits.
#pragma once

#include <cstdint>

#include "fusedconv/host_device.h"

namespace fusedconv {

// cvt.rna.tf32.f32 for a finite x: to nearest, ties away from zero. Adding half a TF32 ulp to
// the magnitude bits carries into the exponent exactly when rounding up crosses a binade (up to
// infinity past the largest TF32), and the sign bit is never reached.
FUSEDCONV_HOST_DEVICE uint32_t tf32_round_bits(uint32_t finite_bits) {
  return (finite_bits + 0x1000u) & 0xffffe000u;
}

}  // namespace fusedconv
