// The table of full-batch CPU kernels (L-BFGS, conjugate gradient) one ISA build provides, the
// choice among ISA builds, and the two-loop recursion built from them.
#pragma once
#include "core/fullbatch_args.h"
#include "cpu/isa_table.h"
#include "math/fullbatch.h"

namespace ft::cpu {

struct FbKernels {
  const char* isa;
  FbResult (*history)(const FbTensors&, double t);
  FbResult (*combine)(const FbTensors&, const math::fb::TwoLoopCoef&, bool copy);
  FbResult (*dots)(const FbTensors&, int n);
  FbResult (*grad_copy)(const FbTensors&);
  void (*param_step)(const FbTensors&, math::fb::StepMode mode, double t);
};

// The full-batch table of the ISA build in use (Note [isa tables]).
inline const FbKernels& active_fullbatch() { return IsaTables<FbKernels>::active(); }

// The L-BFGS direction d = -H g by the fused two-loop recursion (Note [fused two-loop]).
// t holds, per tensor, slot 0 d (written), slot 1 g, slot 2 its history block (rows t.row_stride
// apart, Note [history arena]);
// `slots` the k history slots in use, oldest first, ro their 1/(y's).  first_dot: null, or the
// dot the history pass took for the newest slot, with d already -g (Note [first pass folded]).
// Fills al[0..k) and returns g'd in sum[0] and max |d|.
FbResult two_loop(const FbTensors& t, const int* slots, int k, const double* ro, double h_diag,
                  double* al, const double* first_dot);

}  // namespace ft::cpu
