// Layer, RMS and group norm math for CPU lanes and CUDA threads, on top of batch norm's
// statistics and coefficients (math/batch_norm.h): RMS norm's statistic, the forward with a
// weight that varies along the normalized row, and the input gradient of all three.
#pragma once
#include "core/norm_args.h"
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

// Note [group sums]: group and instance norm keep their per-(sample, channel) and per-group
// results in flat double arrays, two values per entry: inst[2 * k] = (mean, biased var) of group
// k = n * G + g; sums[2 * (n * C + c)] = (sum dy, sum dy * (x - mean)) of channel c of sample n.
// Every sum over samples or channels below runs in index order, on CPU and CUDA alike.

// Instance norm's running statistics of channel c (G == C). torch's instance_norm updates one
// copy per sample and keeps their mean, which is the update by the mean over the batch of the
// instance means and biased variances (the update is linear in them).
FT_HD inline void instance_running_update(const GnForwardArgs& a, const double* inst, int64_t c) {
  const GnShape& s = a.shape;
  double sum_means = 0, sum_vars = 0;
  for (int64_t n = 0; n < s.n; ++n) {
    sum_means += inst[2 * (n * s.c + c)];
    sum_vars += inst[2 * (n * s.c + c) + 1];
  }
  double rm = a.running_mean.get(c, 0.0), rv = a.running_var.get(c, 1.0);
  update_running<double>(rm, rv, sum_means / double(s.n), sum_vars / double(s.n),
                         double(s.per_group()), a.momentum);
  a.running_mean.set(c, rm);
  a.running_var.set(c, rv);
}

// Group k's sums of g = weight * dy from its channels' (Note [norm grad]), then set(i, coeffs)
// for each of its channels i = n * C + c. weight: a.weight, or its values read beforehand
// (weight.get(c, 1.0), as ChannelArray's).
template <class T, class Weight, class Set>
FT_HD void group_grad_coeffs(const GnBackwardArgs& a, const Weight& weight, const double* sums, int64_t k,
                             Set&& set) {
  const GnShape& s = a.shape;
  const int64_t n = k / s.groups, c0 = k % s.groups * s.per_group_channels();
  const int64_t c1 = c0 + s.per_group_channels();
  double sum_g = 0, sum_gxc = 0;
  for (int64_t c = c0; c < c1; ++c) {
    const double w = weight.get(c, 1.0);
    sum_g += w * sums[2 * (n * s.c + c)];
    sum_gxc += w * sums[2 * (n * s.c + c) + 1];
  }
  const double mean = a.mean.get(k, 0.0), rstd = a.rstd.get(k, 0.0);
  // The group's terms once; only dy_scale = weight * rstd differs between its channels.
  NormGradCoeffs<T> co = norm_grad_coeffs<T>(double(s.per_group()), sum_g, sum_gxc, mean, rstd, 1.0);
  for (int64_t c = c0; c < c1; ++c) {
    co.dy_scale = T(weight.get(c, 1.0) * rstd);
    set(n * s.c + c, co);
  }
}
template <class T, class Set>
FT_HD void group_grad_coeffs(const GnBackwardArgs& a, const double* sums, int64_t k, Set&& set) {
  group_grad_coeffs<T>(a, a.weight, sums, k, static_cast<Set&&>(set));
}

// Sample n's terms of channel c's dweight = sum over samples of rstd * sum dy * (x - mean) and
// dbias = sum dy, added to dw and db (rstd: the sample's group's).
FT_HD FT_INLINE void add_param_terms(const double* sums, int64_t C, int64_t n, int64_t c, double rstd,
                                     double& dw, double& db) {
  dw += rstd * sums[2 * (n * C + c) + 1];
  db += sums[2 * (n * C + c)];
}

// Channel c's dweight and dbias, its samples in order.
FT_HD inline void group_param_grads(const GnBackwardArgs& a, const double* sums, int64_t c) {
  const GnShape& s = a.shape;
  const int64_t g = c / s.per_group_channels();
  double dw = 0, db = 0;
  for (int64_t n = 0; n < s.n; ++n) add_param_terms(sums, s.c, n, c, a.rstd.get(n * s.groups + g, 0.0), dw, db);
  a.dweight.set(c, dw);
  a.dbias.set(c, db);
}

}  // namespace ft::math
