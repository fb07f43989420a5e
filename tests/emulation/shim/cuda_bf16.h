// Host emulation of cuda_bf16.h's storage type and round-to-nearest-even conversions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t word = static_cast<uint32_t>(h.bits) << 16;
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t word;
  std::memcpy(&word, &v, 4);
  if (std::isnan(v)) {
    return {static_cast<uint16_t>((word >> 16) | 0x40)};
  }
  word += 0x7FFFu + ((word >> 16) & 1u);
  return {static_cast<uint16_t>(word >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
