// Reading a DeviceScalar inside a kernel, and applying device-side overrides to rule options.
#pragma once
#include "core/half.h"
#include "core/option_overrides.h"
#include "cuda/kernels.h"

namespace ft::cuda {

__device__ inline double load_scalar(const DeviceScalar& s) { return scalar_value(s.ptr, s.dtype); }

template <class O>
__device__ inline void apply_overrides(O& o, const StepScalars& s) {
  if constexpr (HasLr<O>::value) {  // Note [lr override]: only those rules are given one
    if (s.lr) set_lr(o, load_scalar(s.lr));
  }
  if (s.step) set_step(o, load_scalar(s.step), 0);
  if (s.coef) set_coef(o, load_scalar(s.coef), 0);
}

}  // namespace ft::cuda
