// Building blocks shared by the update rules: gradient direction, L2 and decoupled decay, lerp.
#pragma once
#include "core/macros.h"
#include "math/scalar_ops.h"

namespace ft::math {

// Note [gradient preprocessing order]: like torch.optim, an update first unscales the gradient
// (AMP's grad_scale), then negates it for maximize, then adds L2 weight decay wd * p.
template <class V, class T>
FT_HD FT_INLINE V directional_grad(V g, const V& p, bool maximize, T weight_decay) {
  if (maximize) g = -g;
  if (weight_decay != T(0)) g = g + weight_decay * p;
  return g;
}

// Adam's two weight decays (Adam, NAdam): decoupled (AdamW) scales p by decay_factor = 1 - lr*wd
// before the step and leaves g alone; otherwise L2 decay adds wd*p to g.
template <class V, class T>
FT_HD FT_INLINE V adam_decay(V g, V& p, bool decoupled, bool maximize, T weight_decay,
                             T decay_factor) {
  if (!decoupled) return directional_grad(g, p, maximize, weight_decay);
  if (maximize) g = -g;
  if (weight_decay != T(0)) p = p * decay_factor;
  return g;
}

// start + w * (end - start), evaluated from the nearer end as torch.lerp does so that w close to
// 1 loses no precision. w is a scalar, so the branch is uniform across SIMD lanes.
template <class V, class T>
FT_HD FT_INLINE V lerp(const V& start, const V& end, T w) {
  return w < T(0.5) ? start + w * (end - start) : end - (end - start) * (T(1) - w);
}

}  // namespace ft::math
