// Scalar float <-> float16/bfloat16 conversions with round-to-nearest-even, host and device.
#pragma once
#include <cstdint>
#include <cstring>
#include "core/dtype.h"
#include "core/macros.h"

namespace ft {

FT_HD FT_INLINE uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
FT_HD FT_INLINE float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

FT_HD FT_INLINE float to_float(BFloat16 h) { return f32_from_bits(uint32_t(h.bits) << 16); }

// Note [bf16 rounding]: round to nearest even by adding 0x7FFF plus the lowest kept bit; NaN stays
// a quiet NaN instead of rounding into infinity.  A GPU of compute capability 8.0 or newer has
// the conversion as one instruction: the same rounding, subnormals kept, NaN as the quiet NaN
// 0x7FFF, where the integer form is six.
FT_HD FT_INLINE BFloat16 to_bf16(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return BFloat16{r};
#else
  uint32_t u = f32_bits(f);
  if (f != f) return BFloat16{uint16_t(0x7FC0)};
  u += 0x7FFFu + ((u >> 16) & 1u);
  return BFloat16{uint16_t(u >> 16)};
#endif
}

// float16 <-> float: the device's conversion instructions (exact, and round to nearest even with
// subnormals kept, as the integer forms below for the host); NaN is 0x7FFF there.
FT_HD FT_INLINE float to_float(Half h) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(h.bits));
  return r;
#else
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1Fu;
  uint32_t mant = h.bits & 0x3FFu;
  if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) {
    float v = float(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
    return f32_from_bits(sign | f32_bits(v));
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

FT_HD FT_INLINE Half to_half(float f) {
#if defined(__CUDA_ARCH__)
  uint16_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return Half{r};
#else
  uint32_t x = f32_bits(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return Half{uint16_t(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u))};
  if (x >= 0x477FF000u) return Half{uint16_t(sign | 0x7C00u)};  // rounds past 65504
  if (x < 0x38800000u) {
    // Subnormal or zero: adding 0.5f puts the half's 2^-24 ulp at the float's last bit, so the
    // FPU's own round-to-nearest-even does the rounding.
    uint32_t r = f32_bits(f32_from_bits(x) + 0.5f) - 0x3F000000u;
    return Half{uint16_t(sign | r)};
  }
  uint32_t odd = (x >> 13) & 1u;
  x += 0xC8000FFFu + odd;  // rebias exponent by -112 and round to nearest even
  return Half{uint16_t(sign | (x >> 13))};
#endif
}

FT_HD FT_INLINE float to_float(float f) { return f; }
FT_HD FT_INLINE double to_float(double d) { return d; }

template <class S> struct Narrow;
template <> struct Narrow<float> { FT_HD static float from(float v) { return v; } };
template <> struct Narrow<double> { FT_HD static double from(double v) { return v; } };
template <> struct Narrow<Half> { FT_HD static Half from(float v) { return to_half(v); } };
template <> struct Narrow<BFloat16> { FT_HD static BFloat16 from(float v) { return to_bf16(v); } };

// The value of one element of any supported dtype (AMP scalars, capturable lr/step).
FT_HD inline double scalar_value(const void* p, DType d) {
  switch (d) {
    case DType::f32: return *static_cast<const float*>(p);
    case DType::f64: return *static_cast<const double*>(p);
    case DType::f16: return to_float(*static_cast<const Half*>(p));
    case DType::bf16: return to_float(*static_cast<const BFloat16*>(p));
  }
  return 0.0;
}

}  // namespace ft
