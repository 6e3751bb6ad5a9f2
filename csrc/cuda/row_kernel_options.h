// Switches for the two latency measures of the layer/RMS norm CUDA row kernels, so one benchmark
// run can time them on and off on the same GPU (plain C++: the bindings set them in any build).
#pragma once

namespace ft::cuda {

// Note [row kernel switches]: the next-row L2 prefetch (Note [next-row prefetch]) changes no bit;
// the backward's column sums in registers instead of shared memory (Note [column sums in shared
// memory]) launch their own grid, so dweight / dbias are summed in another order (the same to
// rounding, each way deterministic).  Both are on by default; `_C._cuda_row_kernel_options` turns
// either off for bench/bench_ln_cuda.py's A/B rows.  Read on the host at each launch.
struct RowKernelOptions {
  bool l2_prefetch = true;
  bool shared_column_sums = true;
};

inline RowKernelOptions& row_kernel_options() {
  static RowKernelOptions options;
  return options;
}

}  // namespace ft::cuda
