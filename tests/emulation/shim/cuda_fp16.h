// Host emulation of cuda_fp16.h's storage type and round-to-nearest conversions (GCC _Float16).
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  uint16_t bits;
};
struct __half2 {
  __half x, y;
};

inline float __half2float(__half h) {
  _Float16 value;
  std::memcpy(&value, &h.bits, 2);
  return static_cast<float>(value);
}
inline __half __float2half_rn(float v) {
  const _Float16 value = static_cast<_Float16>(v);
  __half h;
  std::memcpy(&h.bits, &value, 2);
  return h;
}
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
