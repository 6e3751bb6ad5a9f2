// Host entry points of the full-batch CUDA kernels (L-BFGS, conjugate gradient): the passes of
// csrc/math/fullbatch.h over many tensors, one launch each, results read back to the host.
#pragma once
#include "core/fullbatch_args.h"
#include "cuda/kernels.h"
#include "math/fullbatch.h"

namespace ft::cuda {

// Each runs one pass on `st` and, where it returns an FbResult, waits for it (the optimizers
// branch on these scalars).  Slots as in csrc/math/fullbatch.h.
FbResult fb_history(const FbTensors& t, double step, Stream st);
FbResult fb_combine(const FbTensors& t, const math::fb::TwoLoopCoef& c, bool copy, Stream st);
FbResult fb_dots(const FbTensors& t, int n, Stream st);
FbResult fb_grad_copy(const FbTensors& t, Stream st);
void fb_param_step(const FbTensors& t, math::fb::StepMode mode, double step, Stream st);

// The fused two-loop recursion (as cpu::two_loop, first_dot included): 2k+1 launches (2k with
// first_dot) whose coefficients are computed on the device from the previous launch's partials
// (Note [device chain]), then one read-back.
FbResult fb_two_loop(const FbTensors& t, const int* slots, int k, const double* ro, double h_diag,
                     double* al, const double* first_dot, Stream st);

}  // namespace ft::cuda
