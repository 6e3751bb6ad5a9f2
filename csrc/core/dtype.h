// Element types fusedtrain kernels read and write, and their storage structs.
#pragma once
#include <cstdint>
#include <cstddef>

namespace ft {

enum class DType : uint8_t { f32, f64, f16, bf16 };

// Half types are opaque 16-bit storage; arithmetic always happens after widening (csrc/core/half.h).
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

inline size_t dtype_size(DType d) { return d == DType::f64 ? 8 : d == DType::f32 ? 4 : 2; }
inline bool is_half(DType d) { return d == DType::f16 || d == DType::bf16; }

// Note [compute type]: float64 data is updated in float64; every other dtype in float32, and
// optimizer state of half params is float32.
inline DType compute_dtype(DType d) { return d == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace ft
