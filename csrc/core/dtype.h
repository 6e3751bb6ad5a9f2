// Element types fusedtrain kernels read and write, and their storage structs.
#pragma once
#include <cstdint>
#include <cstddef>
#include <type_traits>

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
// The same as a type: the arithmetic type of storage type S, for every CPU and CUDA kernel.
template <class S> using ComputeOf = std::conditional_t<std::is_same_v<S, double>, double, float>;

// A storage type as a value, for the visitors below.
template <class S> struct TypeTag { using type = S; };

// Note [dtype pairs]: the (param, grad) storage pairs an optimizer kernel exists for, one list
// for the CPU drivers, the CUDA kernels and the binding's check: same dtype, or float32 params
// with half grads, or half params with float32 grads.
#define FT_DTYPE_PAIRS(X)              \
  X(f32, float, f32, float)            \
  X(f64, double, f64, double)          \
  X(f32, float, f16, Half)             \
  X(f32, float, bf16, BFloat16)        \
  X(f16, Half, f16, Half)              \
  X(f16, Half, f32, float)             \
  X(bf16, BFloat16, bf16, BFloat16)    \
  X(bf16, BFloat16, f32, float)

// Calls f(TypeTag<P>{}, TypeTag<G>{}) for the pair (param, grad); false when it has no kernel.
template <class F>
bool visit_dtype_pair(DType param, DType grad, F&& f) {
#define FT_VISIT_PAIR(pd, P, gd, G)                       \
  if (param == DType::pd && grad == DType::gd) {          \
    f(TypeTag<P>{}, TypeTag<G>{});                        \
    return true;                                          \
  }
  FT_DTYPE_PAIRS(FT_VISIT_PAIR)
#undef FT_VISIT_PAIR
  return false;
}

inline bool is_dtype_pair(DType param, DType grad) {
  return visit_dtype_pair(param, grad, [](auto, auto) {});
}

// Calls f(TypeTag<S>{}) with the storage type of d.
template <class F>
decltype(auto) visit_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f64: return f(TypeTag<double>{});
    case DType::f16: return f(TypeTag<Half>{});
    case DType::bf16: return f(TypeTag<BFloat16>{});
    case DType::f32: break;
  }
  return f(TypeTag<float>{});
}

}  // namespace ft
