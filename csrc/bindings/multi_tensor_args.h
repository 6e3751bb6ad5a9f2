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

// grad_scale (None, number or 1-element array) into mt; found_inf (same kinds): true to skip.
void read_amp_args(const char* fn, py::handle grad_scale, py::handle found_inf, MultiTensor& mt,
                   bool* skip, ExportHolder& keep);

}  // namespace ft::bind
