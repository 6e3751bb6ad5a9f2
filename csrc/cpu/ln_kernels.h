// The table of layer, RMS, group and instance norm CPU kernels one ISA build provides (argument
// structs: core/norm_args.h).
#pragma once
#include "core/norm_args.h"
#include "cpu/isa_table.h"

namespace ft::cpu {

struct LnKernels {
  const char* isa;
  void (*layer_forward)(const LnForwardArgs&);    // layer and RMS norm
  void (*layer_backward)(const LnBackwardArgs&);
  void (*group_forward)(const GnForwardArgs&);    // group and instance norm
  void (*group_backward)(const GnBackwardArgs&);
};

// The table of the ISA build in use (Note [isa tables]).
inline const LnKernels& active_ln() { return IsaTables<LnKernels>::active(); }

}  // namespace ft::cpu
