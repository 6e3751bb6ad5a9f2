// Vector p-norms of many tensors at once: the per-element term and the final root.
#pragma once
#include <cmath>
#include "core/macros.h"

namespace ft::math {

enum class NormKind : int { L1, L2, Inf, P };

inline NormKind norm_kind(double p) {
  if (std::isinf(p)) return NormKind::Inf;
  if (p == 1.0) return NormKind::L1;
  if (p == 2.0) return NormKind::L2;
  return NormKind::P;
}

// Partial results combine by sum (L1, L2, P: sum of |x|^p) or by max (Inf); the norm is the p-th
// root of the combined partials.
FT_HD inline double norm_finish(NormKind k, double p, double combined) {
  switch (k) {
    case NormKind::L1: return combined;
    case NormKind::L2: return sqrt(combined);
    case NormKind::Inf: return combined;
    default: return pow(combined, 1.0 / p);
  }
}

// Note [NaN in norms]: a NaN anywhere makes the norm NaN, as in torch; for the max this needs
// the NaN test, since a comparison with NaN is false whichever side it is on.
FT_HD inline double norm_combine(NormKind k, double a, double b) {
  return k == NormKind::Inf ? (a < b || b != b ? b : a) : a + b;
}

// torch.nn.utils.clip_grad_norm_: grads *= min(1, max_norm / (total_norm + 1e-6)).
FT_HD inline double clip_coefficient(double max_norm, double total_norm) {
  double c = max_norm / (total_norm + 1e-6);
  return c < 1.0 ? c : 1.0;
}

}  // namespace ft::math
