// The table of batch-norm CPU kernels one ISA build provides (argument structs: core/norm_args.h).
#pragma once
#include "core/norm_args.h"
#include "cpu/isa_table.h"

namespace ft::cpu {

struct BnKernels {
  const char* isa;
  void (*forward)(const BnForwardArgs&);
  void (*backward)(const BnBackwardArgs&);
  void (*stats)(const BnStatsArgs&);
  void (*merge)(const BnMergeArgs&);
  void (*update_running)(const BnRunningArgs&);
};

// The batch-norm table of the ISA build in use (Note [isa tables]).
inline const BnKernels& active_bn() { return IsaTables<BnKernels>::active(); }

}  // namespace ft::cpu
