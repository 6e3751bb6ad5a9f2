// Batch norm math written once for CPU SIMD lanes, CPU scalars and CUDA threads: Welford/Chan
// statistics, running-stat updates, and the per-channel coefficients of forward and backward.
//
// Note [bn statistics]: a channel's statistics are (count, mean, m2) with m2 = sum (x - mean)^2,
// never sum x^2 - (sum x)^2 / n, which loses every digit in float32 once |mean| >> std. Partial
// statistics come from blocks of values summed around a shift close to the block's mean
// (from_shifted_sums) or from per-value Welford steps (welford_add), and are merged by Chan's
// rule (chan_merge) in a fixed order, so the result does not depend on how threads split work.
#pragma once
#include "core/macros.h"
#include "math/scalar_ops.h"

namespace ft::math {

// Statistics of `count` values: their mean and the sum of squared deviations from it.
template <class T>
struct BnStats {
  T count, mean, m2;
};

// Chan, Golub & LeVeque's pairwise merge: exact in exact arithmetic, and stable because only
// deviations (delta, m2) are added, never raw sums of squares.
template <class T>
FT_HD FT_INLINE BnStats<T> chan_merge(const BnStats<T>& a, const BnStats<T>& b) {
  const T n = a.count + b.count;
  if (b.count == T(0)) return a;
  if (a.count == T(0)) return b;
  const T delta = b.mean - a.mean;
  const T wb = b.count / n;
  return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.count * wb};
}

// The statistics of n parts at once, as folding chan_merge over them would give in exact
// arithmetic: the count-weighted mean of the means, then m2 = sum (m2_i + count_i d_i^2) with
// d_i the part's mean minus it. One division where the fold takes one per part (a channels-last
// group merges its channels' statistics: 2048 channels a sample at (8, 2048, 7, 7)).
template <class T>
FT_HD BnStats<T> merge_all(const BnStats<T>* s, int64_t n) {
  T count = T(0), sum = T(0);
  for (int64_t i = 0; i < n; ++i) {
    count = count + s[i].count;
    sum = sum + s[i].count * s[i].mean;
  }
  if (count == T(0)) return {T(0), T(0), T(0)};
  const T mean = sum / count;
  T m2 = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T d = s[i].mean - mean;
    m2 = m2 + (s[i].m2 + s[i].count * d * d);
  }
  return {count, mean, m2};
}

// One Welford step: the running statistics after one more value x.
template <class T>
FT_HD FT_INLINE void welford_add(BnStats<T>& s, T x) {
  s.count = s.count + T(1);
  const T d = x - s.mean;
  s.mean = s.mean + d / s.count;
  s.m2 = s.m2 + d * (x - s.mean);
}

// Statistics of n values from s1 = sum (x - shift) and s2 = sum (x - shift)^2. Stable when the
// shift is near the values' mean (Note [bn statistics]); the clamp absorbs rounding below 0.
template <class T>
FT_HD FT_INLINE BnStats<T> from_shifted_sums(T n, T shift, T s1, T s2) {
  if (n == T(0)) return {T(0), T(0), T(0)};
  const T d = s1 / n;
  return {n, shift + d, ft_max(s2 - s1 * d, T(0))};
}

template <class T> FT_HD FT_INLINE T biased_var(const BnStats<T>& s) {
  return s.count > T(0) ? s.m2 / s.count : T(0);
}

// 1 / sqrt(var + eps), the "invstd" PyTorch saves for the backward.
template <class T> FT_HD FT_INLINE T inv_std(T var, T eps) { return T(1) / ft_sqrt(var + eps); }

// torch's running-stat update: r = momentum * batch + (1 - momentum) * r, with the unbiased
// variance var * n / (n - 1) for running_var (n > 1 is the caller's precondition).
template <class T>
FT_HD FT_INLINE void update_running(T& running_mean, T& running_var, T mean, T biased, T n,
                                    T momentum) {
  running_mean = momentum * mean + (T(1) - momentum) * running_mean;
  running_var = momentum * (biased * n / (n - T(1))) + (T(1) - momentum) * running_var;
}

// Note [split mean]: the mean is carried as hi + lo in the storage precision, so (x - hi) - lo
// centers x almost exactly: x - hi is exact when x is near hi (Sterbenz), and lo restores the
// digits a float32 mean would lose at mean 1e4. Centered values feed both directions.
template <class T> struct SplitMean { T hi, lo; };
template <class T>
FT_HD FT_INLINE SplitMean<T> split_mean(double mean) {
  const T hi = T(mean);
  return {hi, T(mean - double(hi))};
}
template <class V, class T>
FT_HD FT_INLINE V centered(V x, const SplitMean<T>& m) { return (x - m.hi) - m.lo; }

// Forward: y = (x - mean) * invstd * weight + bias.
template <class T>
struct BnForwardCoeffs {
  SplitMean<T> mean;
  T scale, bias;
};
FT_HD FT_INLINE double bn_forward_scale(double invstd, double weight) { return invstd * weight; }
template <class T>
FT_HD FT_INLINE BnForwardCoeffs<T> bn_forward_coeffs(double mean, double invstd, double weight,
                                                     double bias) {
  return {split_mean<T>(mean), T(bn_forward_scale(invstd, weight)), T(bias)};
}
template <class V, class T>
FT_HD FT_INLINE V bn_forward(V x, const BnForwardCoeffs<T>& c) {
  return centered(x, c.mean) * c.scale + c.bias;
}

// Backward of the training-mode forward, from the channel sums sum_dy = sum dy and
// sum_dy_xc = sum dy * (x - mean) over its n values:
//   dbias = sum_dy, dweight = sum_dy_xc * invstd,
//   dx = weight * invstd * (dy - sum_dy / n - (x - mean) * invstd^2 * sum_dy_xc / n).
template <class T>
struct BnBackwardCoeffs {
  SplitMean<T> mean;
  T mean_dy, proj, scale;
};
template <class T>
FT_HD FT_INLINE BnBackwardCoeffs<T> bn_backward_coeffs(double n, double sum_dy, double sum_dy_xc,
                                                       double mean, double invstd,
                                                       double weight) {
  return {split_mean<T>(mean), T(sum_dy / n), T(sum_dy_xc / n * invstd * invstd),
          T(weight * invstd)};
}
template <class V, class T>
FT_HD FT_INLINE V bn_backward(V dy, V x, const BnBackwardCoeffs<T>& c) {
  return (dy - c.mean_dy - centered(x, c.mean) * c.proj) * c.scale;
}
FT_HD FT_INLINE double bn_dweight(double sum_dy_xc, double invstd) { return sum_dy_xc * invstd; }
// The channel sum of dy * (x - mean) from that of dy * xhat (Note [given sums]); invstd > 0.
FT_HD FT_INLINE double bn_sum_dy_xc(double sum_dy_xhat, double invstd) { return sum_dy_xhat / invstd; }

}  // namespace ft::math
