// Validation of a multi-tensor call's lists and its conversion into a MultiTensor.
#pragma once
#include <array>

#include "bindings/interop.h"
#include "core/multi_tensor.h"

namespace ft::bind {

// Names of one call's lists, in slot order (Note [slot roles]); nullptr: the slot is unused.
struct SlotNames {
  const char* fn;
  std::array<const char*, kNumSlots> names;
};

// The lists of one call, as Python objects (None where absent).
struct SlotArgs {
  std::array<py::handle, kNumSlots> lists;
};

// Validates every list (lengths, dtypes, shapes, contiguity, writability, device) and fills a
// MultiTensor whose slot pointers are set for the present lists.  Raises before anything is
// written.  `required` masks the slots that must be present.
MultiTensor gather(const SlotNames& names, const SlotArgs& args, int required, ExportHolder& keep);

// The per-step scalars of a rule call: AMP's grad_scale and found_inf, and a capturable lr / step
// (each None, a number, or a 1-element array on the host or on the params' device).
struct StepArgs {
  ScalarArg grad_scale, found_inf, lr, step;
};
StepArgs read_step_args(const char* fn, const MultiTensor& mt, py::handle grad_scale,
                        py::handle found_inf, py::handle lr, py::handle step, ExportHolder& keep);

}  // namespace ft::bind
