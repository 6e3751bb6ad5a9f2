// The two-loop recursion as a sequence of the full-batch table's Combine passes
// (Note [fused two-loop]).
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/fullbatch_kernels.h"
#include "cpu/kernels.h"

namespace ft::cpu {

FbResult two_loop(const FbTensors& t, const int* slots, int k, const double* ro, double h_diag,
                  double* al, const double* first_dot) {
  namespace fb = math::fb;
  const FbKernels& kern = active_fullbatch();
  std::vector<fb::TwoLoopStep> steps(size_t(2 * k + 1));
  const int n = fb::two_loop_schedule(slots, k, steps.data());
  const size_t elem = dtype_size(compute_dtype(t.dtype));
  // Slots of each pass: 0 d, 1 x, 2 w (Combine); history row r of tensor i starts r rows into
  // its block (Note [history arena]).
  FbTensors pass = t;
  pass.row_stride = 0;
  auto row = [&](size_t i, int r) -> void* {
    const int64_t stride = t.row_stride ? t.row_stride : t.numel[i];
    return r < 0 ? t.ptr[i][1] : static_cast<char*>(t.ptr[i][2]) + size_t(r) * size_t(stride) * elem;
  };
  FbResult res;
  const int j0 = fb::two_loop_start(steps.data(), first_dot);
  double prev_dot = j0 ? *first_dot : 0.0;
  for (int j = j0; j < n; ++j) {
    const fb::TwoLoopStep& st = steps[size_t(j)];
    const fb::TwoLoopCoef c = fb::two_loop_coef(st, prev_dot, ro, al, h_diag);
    if (c.record) al[st.entry] = c.al;
    for (size_t i = 0; i < t.size(); ++i) {
      pass.ptr[i] = {t.ptr[i][0], row(i, st.x), row(i, st.w), nullptr, nullptr};
    }
    res = kern.combine(pass, c, false);
    prev_dot = res.sum[0];
  }
  return res;
}

}  // namespace ft::cpu
