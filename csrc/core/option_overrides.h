// Overriding a rule's lr / step / coef from a runtime scalar (a capturable device value or a
// host array), for whichever of those fields a rule's Options has.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>
#include "core/macros.h"

namespace ft {

// Note [lr override]: every rule bound with an `lr` argument (bindings/optim.cpp) names its
// learning rate `lr`; run_rule asserts it at compile time, so an lr given as an array, on the
// host or the device, can never be dropped by a rule whose field has another name. Rules without
// an lr argument (ema_, scaling) have no such field and are never given one.
template <class O, class = void> struct HasLr : std::false_type {};
template <class O> struct HasLr<O, std::void_t<decltype(std::declval<O&>().lr = 0.0)>> : std::true_type {};
template <class O> FT_HD void set_lr(O& o, double v) {
  static_assert(HasLr<O>::value, "Note [lr override]: this rule's Options has no field named lr");
  o.lr = v;
}

// The int/long argument ranks the overloads: the first applies when the field exists.
// Note [step range]: a step is a whole number in [1, kMaxStep] (2**53, exact in a double). The
// host checks its values (bindings/multi_tensor_args.cpp); a device value is the caller's to keep
// valid, and one outside the range (NaN included) is clamped here rather than converted, since
// converting it to an integer is undefined behaviour.
constexpr double kMaxStep = 9007199254740992.0;
FT_HD inline int64_t step_value(double v) {
  return v >= 1.0 ? (v <= kMaxStep ? int64_t(v) : int64_t(kMaxStep)) : int64_t(1);
}
template <class O> FT_HD auto set_step(O& o, double v, int) -> decltype(o.step = 1, void()) {
  o.step = step_value(v);
}
template <class O> FT_HD auto set_step(O& o, double v, int) -> decltype(o.first_step = true, void()) {
  o.first_step = v == 1.0;
}
template <class O> FT_HD void set_step(O&, double, long) {}
template <class O> FT_HD auto set_coef(O& o, double v, int) -> decltype(o.coef = v, void()) { o.coef = v; }
template <class O> FT_HD void set_coef(O&, double, long) {}

}  // namespace ft
