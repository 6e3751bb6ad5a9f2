// SIMD vector types of the ISA this translation unit is compiled for, with loads, stores and the
// math overloads (Note [vector overloads]) the update rules need.
//
// Compiled once per ISA with FT_ISA_<name> defined (CMakeLists.txt).  Vectors are GCC vector
// types, so the rules' +, -, *, / and scalar broadcasts work on them unchanged.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include "core/dtype.h"
#include "core/half.h"
#include "core/macros.h"
#include "math/scalar_ops.h"

#if defined(FT_ISA_baseline) && defined(__x86_64__)
#define FT_ISA_baseline_x86 1  // SSE2: every x86-64 has it
#endif
#if defined(FT_ISA_avx512) || defined(FT_ISA_avx2) || defined(FT_ISA_baseline_x86)
#include <immintrin.h>
#endif

namespace ft::math {

#if defined(FT_ISA_avx512)
using VecF = __m512;
using VecD = __m512d;
constexpr int kLanesF = 16, kLanesD = 8;
FT_INLINE VecF ft_sqrt(VecF x) { return _mm512_sqrt_ps(x); }
FT_INLINE VecD ft_sqrt(VecD x) { return _mm512_sqrt_pd(x); }
FT_INLINE VecF ft_max(VecF a, VecF b) { return _mm512_max_ps(b, a); }
FT_INLINE VecD ft_max(VecD a, VecD b) { return _mm512_max_pd(b, a); }
FT_INLINE VecF ft_abs(VecF x) { return _mm512_abs_ps(x); }
FT_INLINE VecD ft_abs(VecD x) { return _mm512_abs_pd(x); }
#elif defined(FT_ISA_avx2)
using VecF = __m256;
using VecD = __m256d;
constexpr int kLanesF = 8, kLanesD = 4;
FT_INLINE VecF ft_sqrt(VecF x) { return _mm256_sqrt_ps(x); }
FT_INLINE VecD ft_sqrt(VecD x) { return _mm256_sqrt_pd(x); }
FT_INLINE VecF ft_max(VecF a, VecF b) { return _mm256_max_ps(b, a); }
FT_INLINE VecD ft_max(VecD a, VecD b) { return _mm256_max_pd(b, a); }
FT_INLINE VecF ft_abs(VecF x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
FT_INLINE VecD ft_abs(VecD x) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), x); }
#elif defined(FT_ISA_baseline_x86)
using VecF = __m128;
using VecD = __m128d;
constexpr int kLanesF = 4, kLanesD = 2;
FT_INLINE VecF ft_sqrt(VecF x) { return _mm_sqrt_ps(x); }
FT_INLINE VecD ft_sqrt(VecD x) { return _mm_sqrt_pd(x); }
FT_INLINE VecF ft_max(VecF a, VecF b) { return _mm_max_ps(b, a); }
FT_INLINE VecD ft_max(VecD a, VecD b) { return _mm_max_pd(b, a); }
FT_INLINE VecF ft_abs(VecF x) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), x); }
FT_INLINE VecD ft_abs(VecD x) { return _mm_andnot_pd(_mm_set1_pd(-0.0), x); }
#else
// Portable 16-byte vectors (aarch64: the compiler emits NEON for the per-lane loops).
typedef float VecF __attribute__((vector_size(16)));
typedef double VecD __attribute__((vector_size(16)));
constexpr int kLanesF = 4, kLanesD = 2;
#define FT_LANEWISE(V, N, expr) \
  V r;                          \
  for (int i = 0; i < N; ++i) r[i] = expr; \
  return r
FT_INLINE VecF ft_sqrt(VecF x) { FT_LANEWISE(VecF, 4, __builtin_sqrtf(x[i])); }
FT_INLINE VecD ft_sqrt(VecD x) { FT_LANEWISE(VecD, 2, __builtin_sqrt(x[i])); }
FT_INLINE VecF ft_max(VecF a, VecF b) { FT_LANEWISE(VecF, 4, a[i] < b[i] ? b[i] : a[i]); }
FT_INLINE VecD ft_max(VecD a, VecD b) { FT_LANEWISE(VecD, 2, a[i] < b[i] ? b[i] : a[i]); }
FT_INLINE VecF ft_abs(VecF x) { FT_LANEWISE(VecF, 4, __builtin_fabsf(x[i])); }
FT_INLINE VecD ft_abs(VecD x) { FT_LANEWISE(VecD, 2, __builtin_fabs(x[i])); }
#undef FT_LANEWISE
#endif
// torch.sign per lane, as the scalar ft_sign: compare masks select +1, -1 or x itself (+-0, NaN).
template <class V>
FT_INLINE V ft_sign_lanes(V x) {
  using M = decltype(x > x);
  const V zero{};
  const V one = zero + 1.0f;  // broadcast: exact in float and double lanes
  const M pos = x > zero, neg = x < zero;
  return (V)((pos & (M)one) | (neg & (M)(zero - one)) | (~(pos | neg) & (M)x));
}
FT_INLINE VecF ft_sign(VecF x) { return ft_sign_lanes(x); }
FT_INLINE VecD ft_sign(VecD x) { return ft_sign_lanes(x); }
// The max overloads put b first: x86 max returns its second operand when either is NaN, so a NaN
// in v (not in the running max) propagates, as torch.maximum does.

}  // namespace ft::math

namespace ft::cpu {

using math::VecD;
using math::VecF;
typedef uint32_t VecU __attribute__((vector_size(sizeof(VecF))));
typedef int32_t VecI __attribute__((vector_size(sizeof(VecF))));
constexpr int kLanesF = math::kLanesF, kLanesD = math::kLanesD;

// ---- loads: storage type -> compute vector (float32 for all but float64)
FT_INLINE VecF vload(const float* p) { VecF v; std::memcpy(&v, p, sizeof v); return v; }
FT_INLINE VecD vload(const double* p) { VecD v; std::memcpy(&v, p, sizeof v); return v; }

FT_INLINE VecF vload(const BFloat16* p) {
  // bfloat16 is the top half of a float32: widen each 16-bit lane and shift it up.
  uint16_t raw[kLanesF];
  std::memcpy(raw, p, sizeof raw);
  VecU u;
  for (int i = 0; i < kLanesF; ++i) u[i] = uint32_t(raw[i]) << 16;
  return (VecF)u;
}

FT_INLINE VecF vload(const Half* p) {
#if defined(FT_ISA_avx512)
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(FT_ISA_avx2)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  VecF v;
  for (int i = 0; i < kLanesF; ++i) v[i] = to_float(p[i]);
  return v;
#endif
}

// ---- stores: compute vector -> storage type, rounding to nearest even for half types
FT_INLINE void vstore(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }
FT_INLINE void vstore(double* p, VecD v) { std::memcpy(p, &v, sizeof v); }

FT_INLINE void vstore(BFloat16* p, VecF v) {
  VecU u = (VecU)v;
  VecU rounded = (u + (0x7FFFu + ((u >> 16) & 1u))) >> 16;  // Note [bf16 rounding]
  VecU nan = (VecU)(v != v);
  rounded = (nan & 0x7FC0u) | (~nan & rounded);
  uint16_t raw[kLanesF];
  for (int i = 0; i < kLanesF; ++i) raw[i] = uint16_t(rounded[i]);
  std::memcpy(p, raw, sizeof raw);
}

FT_INLINE void vstore(Half* p, VecF v) {
#if defined(FT_ISA_avx512)
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
#elif defined(FT_ISA_avx2)
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
#else
  for (int i = 0; i < kLanesF; ++i) p[i] = to_half(v[i]);
#endif
}

// ---- scalar versions for tails
FT_INLINE float sload(const float* p) { return *p; }
FT_INLINE double sload(const double* p) { return *p; }
FT_INLINE float sload(const Half* p) { return to_float(*p); }
FT_INLINE float sload(const BFloat16* p) { return to_float(*p); }
template <class S, class C> FT_INLINE void sstore(S* p, C v) { *p = Narrow<S>::from(v); }

// Tag dispatch so one generic body serves the vector loop and the scalar tail.
struct VectorTag {};
struct ScalarTag {};
template <class S> FT_INLINE auto load(VectorTag, const S* p) { return vload(p); }
template <class S> FT_INLINE auto load(ScalarTag, const S* p) { return sload(p); }
template <class S, class V> FT_INLINE void store(VectorTag, S* p, V v) { vstore(p, v); }
template <class S, class V> FT_INLINE void store(ScalarTag, S* p, V v) { sstore(p, v); }

// The vector of compute type C (Note [compute type]) and its lane count.
template <class C> struct VecOfT { using type = VecF; };
template <> struct VecOfT<double> { using type = VecD; };
template <class C> using VecOf = typename VecOfT<C>::type;
template <class C> constexpr int lanes() { return std::is_same_v<C, double> ? kLanesD : kLanesF; }

// ---- reductions: a vector's lanes summed into a double pairwise (lane i with lane i + n/2, then
// halving again), a fixed order whatever the thread count (Note [fixed chunking]) and log2(n)
// adds deep where a running sum was n deep (a row's sums wait on it: Note [chained sums]);
// scalars pass through (the tails of vector loops).
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define FT_HAS_SHUFFLEVECTOR 1
#endif
#endif
#ifndef FT_HAS_SHUFFLEVECTOR
#define FT_HAS_SHUFFLEVECTOR 0  // the halves go through memory: the same sums, slower
#endif
template <int N> struct DoublesT { typedef double type __attribute__((vector_size(N * 8))); };
template <int N> using Doubles = typename DoublesT<N>::type;
template <int N, std::size_t... I>
FT_INLINE double pairwise_sum(const Doubles<N>& v, std::index_sequence<I...>) {
  if constexpr (N == 1) {
    return v[0];
  } else {
#if FT_HAS_SHUFFLEVECTOR
    const Doubles<N / 2> lo = __builtin_shufflevector(v, v, I...);
    const Doubles<N / 2> hi = __builtin_shufflevector(v, v, (I + N / 2)...);
#else
    Doubles<N / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
#endif
    return pairwise_sum<N / 2>(lo + hi, std::make_index_sequence<N / 4>{});
  }
}
template <class V> FT_INLINE double lane_sum(const V& v) {
  constexpr int n = int(sizeof(V) / sizeof(v[0]));
  return pairwise_sum<n>(__builtin_convertvector(v, Doubles<n>), std::make_index_sequence<n / 2>{});
}
FT_INLINE double lane_sum(float v) { return v; }
FT_INLINE double lane_sum(double v) { return v; }

// Note [transposed lane sums]: the lane sums of a vector's worth of vectors at once, lane i of
// the result the sum of v[i]'s lanes, where a lane_sum each would spend a dozen shuffles, adds
// and conversions on every one (per channel of a group-norm backward over 7x7 maps, a third of
// its time). Folding pairs with shuffles takes W - 1 folds for W sums; the adds stay in the
// vectors' own type. Every sum adds adjacent lanes pairwise ((0 + 1) + (2 + 3), ...), whatever
// the other vectors hold, so a sum never depends on which vectors share the call.
#if FT_HAS_SHUFFLEVECTOR
constexpr int fold_index(int lane, int h, int n) {
  // The lanes of a (the first operand) and b that fold into `lane` at chunk width h: chunk q of
  // the result takes chunks 2 (q / 2) and 2 (q / 2) + 1 of a (q even) or of b (q odd).
  return (lane / h % 2) * n + (lane / h / 2) * 2 * h + lane % h;
}
template <int H, class V, std::size_t... L>
FT_INLINE V fold_pair(V a, V b, std::index_sequence<L...>) {
  constexpr int n = int(sizeof...(L));
  return __builtin_shufflevector(a, b, fold_index(int(L), H, n)...) +
         __builtin_shufflevector(a, b, (fold_index(int(L), H, n) + H)...);
}
template <int H, int N, class V>
FT_INLINE void fold_level(V* v) {
  if constexpr (H < N) {
    for (int i = 0; i < N; i += 2 * H) v[i] = fold_pair<H>(v[i], v[i + H], std::make_index_sequence<N>{});
    fold_level<2 * H, N>(v);
  }
}
#endif
template <class V>
FT_INLINE V lane_sums(V* v) {  // v[0 .. lanes): overwritten
  constexpr int n = int(sizeof(V) / sizeof(v[0][0]));
#if FT_HAS_SHUFFLEVECTOR
  fold_level<1, n>(v);
  return v[0];
#else
  V out;
  for (int i = 0; i < n; ++i) {
    auto t = v[i];
    for (int h = 1; h < n; h *= 2)
      for (int j = 0; j < n; j += 2 * h) t[j] = t[j] + t[j + h];
    out[i] = t[0];
  }
  return out;
#endif
}

// Note [overlapping last vector]: a run of len >= W values whose length is no multiple of W ends
// in a vector loaded at len - W, overlapping the one before by W - len % W lanes, where a scalar
// tail would take a lane at a time (a 7x7 channel: 3 vectors and a scalar of 16 lanes). An
// elementwise pass writes those lanes twice with the same values (outputs share no byte with
// inputs: Note [aliasing]); a sum keeps only the new lanes of it.
template <class V>
FT_INLINE V last_lanes(V v, int64_t keep) {  // v with all but its last `keep` lanes zeroed
  using E = std::decay_t<decltype(v[0])>;
  constexpr int n = int(sizeof(V) / sizeof(E));
  using M = decltype(v > v);
  V lane{};
  for (int i = 0; i < n; ++i) lane[i] = E(i);
  const M m = lane >= (V{} + E(n - keep));
  return (V)((M)v & m);
}
// The largest lane (of values >= 0: maxima of |v|), in double.
template <class V> FT_INLINE double lane_max(const V& v) {
  constexpr int n = int(sizeof(V) / sizeof(v[0]));
  double m = 0;
  for (int i = 0; i < n; ++i) m = math::ft_max(m, double(v[i]));
  return m;
}
FT_INLINE double lane_max(float v) { return v; }
FT_INLINE double lane_max(double v) { return v; }

}  // namespace ft::cpu
