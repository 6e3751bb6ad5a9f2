// Scalar overloads of the few non-arithmetic operations the update rules use (sqrt, max, abs, sign).
// Note [vector overloads]: csrc/cpu/vec.h declares the same names for SIMD vectors; it must be
// included before the rule headers so that the templates in csrc/math find those overloads.
#pragma once
#include <cmath>
#include "core/macros.h"

namespace ft::math {

FT_HD FT_INLINE float ft_sqrt(float x) { return sqrtf(x); }
FT_HD FT_INLINE double ft_sqrt(double x) { return sqrt(x); }
FT_HD FT_INLINE float ft_max(float a, float b) { return a < b ? b : a; }
FT_HD FT_INLINE double ft_max(double a, double b) { return a < b ? b : a; }
FT_HD FT_INLINE float ft_abs(float x) { return fabsf(x); }
FT_HD FT_INLINE double ft_abs(double x) { return fabs(x); }
// torch.sign: +1 or -1 by the sign, x itself for +-0 and NaN.
FT_HD FT_INLINE float ft_sign(float x) { return x > 0 ? 1.0f : (x < 0 ? -1.0f : x); }
FT_HD FT_INLINE double ft_sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : x); }

}  // namespace ft::math
