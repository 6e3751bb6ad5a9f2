// Layer, RMS and group norm math for CPU lanes and CUDA threads, on top of batch norm's
// statistics and coefficients (math/batch_norm.h): RMS norm's statistic, the forward with a
// weight that varies along the normalized row, and the input gradient of all three.
#pragma once
#include "math/batch_norm.h"

namespace ft::math {

// RMS norm's statistic, mean(x^2) = m2 / n + mean^2, from the same blocked statistics as the
// variance (Note [bn statistics]); both terms are >= 0, so nothing cancels.
template <class T>
FT_HD FT_INLINE T mean_square(const BnStats<T>& s) {
  return s.count > T(0) ? s.m2 / s.count + s.mean * s.mean : T(0);
}

// Layer norm forward with per-element weight and bias: y = (x - mean) * rstd * w + b. RMS norm
// is mean 0 (centered() is then exact) and b 0.
template <class V, class T>
FT_HD FT_INLINE V ln_forward(V x, const SplitMean<T>& mean, T rstd, V w, V b) {
  return centered(x, mean) * rstd * w + b;
}

// Note [norm grad]: with g = weight * dy and xhat = (x - mean) * rstd over a group of n values,
//   dx = rstd * (g - sum(g) / n - xhat * sum(g * xhat) / n)
//      = g * rstd - (x - mean) * rstd^3 * sum_gxc / n - rstd * sum_g / n,
// sum_gxc = sum g * (x - mean).  RMS norm has mean 0 and no sum_g term (it subtracts no mean).
// A weight constant over a channel (group norm) folds into dy_scale = weight * rstd; a weight that
// varies inside the group (layer norm) multiplies dy before the map, with dy_scale = rstd. Never
// dividing by the weight keeps weight == 0 exact (batch norm's form divides dy's mean by n only).
template <class T>
struct NormGradCoeffs {
  SplitMean<T> mean;
  T dy_scale, proj, shift;
};
template <class T>
FT_HD FT_INLINE NormGradCoeffs<T> norm_grad_coeffs(double n, double sum_g, double sum_gxc,
                                                   double mean, double rstd, double weight) {
  return {split_mean<T>(mean), T(weight * rstd), T(rstd * rstd * rstd * sum_gxc / n),
          T(rstd * sum_g / n)};
}
template <class V, class T>
FT_HD FT_INLINE V norm_grad_input(V dy, V x, const NormGradCoeffs<T>& c) {
  return dy * c.dy_scale - centered(x, c.mean) * c.proj - c.shift;
}

// Instance norm's running statistics: torch's instance_norm updates one copy per sample and
// keeps their mean, which is the update by the mean over the batch of the instance means and
// biased variances (the update is linear in them); n is the values per instance.
template <class T>
FT_HD FT_INLINE void update_running_instance(T& running_mean, T& running_var, T sum_means,
                                             T sum_vars, T batch, T n, T momentum) {
  update_running<T>(running_mean, running_var, sum_means / batch, sum_vars / batch, n, momentum);
}

}  // namespace ft::math
