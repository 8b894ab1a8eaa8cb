// float16 and bfloat16 <-> float32 conversions.
//
// Written branch-free (every case computed, then selected) so that the reduction loops that
// call them still vectorise with the baseline x86-64 instruction set; no F16C needed.
#pragma once

#include <cstdint>
#include <cstring>

namespace dist_sync {

inline float bits_to_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

inline uint32_t float_to_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Bitwise select: GCC if-converts `?:` only sometimes; masks keep the loops vectorisable.
inline uint32_t select_bits(bool condition, uint32_t if_true, uint32_t if_false) {
  const uint32_t mask = 0u - static_cast<uint32_t>(condition);
  return (if_true & mask) | (if_false & ~mask);
}

// Exact: every float16 is a float32.
inline float half_to_float(uint16_t half) {
  const uint32_t magnitude = half & 0x7fffu;
  // Shifting exponent and mantissa into float position and multiplying by 2^112 rebiases the
  // exponent (15 -> 127); float16 subnormals land on exactly the right float32 value too.
  uint32_t bits = float_to_bits(bits_to_float(magnitude << 13) * 0x1p112f);
  bits |= select_bits(magnitude >= 0x7c00u, 0x7f800000u, 0u);  // keep Inf and NaN
  return bits_to_float(bits | (static_cast<uint32_t>(half & 0x8000u) << 16));
}

// Round to nearest, ties to even; overflow gives Inf, NaN stays NaN.
inline uint16_t float_to_half(float value) {
  const uint32_t bits = float_to_bits(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  // Normal results: rebias the exponent, then round the 13 dropped mantissa bits to even.
  // Values in [65520, 65536) round up into the Inf encoding by themselves.
  const uint32_t normal =
      (magnitude - ((127u - 15u) << 23) + 0xfffu + ((magnitude >> 13) & 1u)) >> 13;
  // Subnormal results: adding 0.5f makes the FPU round at float16's subnormal spacing (2^-24).
  const uint32_t subnormal = float_to_bits(bits_to_float(magnitude) + 0.5f) - 0x3f000000u;
  const uint32_t special = select_bits(magnitude > 0x7f800000u, 0x7e00u, 0x7c00u);
  uint32_t result = select_bits(magnitude < 0x38800000u, subnormal, normal);
  result = select_bits(magnitude >= 0x47800000u, special, result);
  return static_cast<uint16_t>(result | sign);
}

inline float bfloat16_to_float(uint16_t value) {
  return bits_to_float(static_cast<uint32_t>(value) << 16);
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bfloat16(float value) {
  const uint32_t bits = float_to_bits(value);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(select_bits(is_nan, quiet_nan, rounded));
}

}  // namespace dist_sync
