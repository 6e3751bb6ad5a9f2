// Switches for the latency measures of the CUDA row kernels (layer/RMS norm rows; batch and
// group norm channels-last passes), so one benchmark run can time each on and off on the same GPU
// (plain C++: the bindings set them in any build).
#pragma once

namespace ft::cuda {

// Note [row kernel switches]: the layer/RMS norm next-row L2 prefetch (Note [next-row prefetch])
// and backward's staged rows (Note [staged row]), the batch/group norm rows walk prefetch (Note
// [rows walk prefetch]) and the order of their elementwise passes' blocks (Note [second pass in
// reverse]) and the normalization kernels' dependent launch (Note [dependent launch]) change no
// bit; the layer/RMS backward's column sums in registers instead of shared
// memory (Note [column sums in shared memory]) launch their own grid, so dweight / dbias are
// summed in another order (the same to rounding, each way deterministic).  All are on by default;
// `_C._cuda_row_kernel_options` turns any off for the A/B rows of bench/bench_ln_cuda.py and
// bench/bench_bn_cuda.py, FUSEDTRAIN_CUDA_SWITCHES_OFF for a process
// (python/fusedtrain/runtime.py), which is how bench/gpu_switch_bisect.py reruns failing GPU
// tests.  Read on the host at each launch.
struct RowKernelOptions {
  bool l2_prefetch = true;
  bool shared_column_sums = true;
  bool rows_walk_prefetch = true;
  bool reverse_second_pass = true;  // Note [second pass in reverse]
  bool staged_rows = true;          // Note [staged row]
  bool dependent_launch = true;     // Note [dependent launch]
};

inline RowKernelOptions& row_kernel_options() {
  static RowKernelOptions options;
  return options;
}

// The rows kernels' prefetch argument (Note [rows walk prefetch]).
inline bool rows_prefetch() { return row_kernel_options().rows_walk_prefetch; }
// The elementwise passes' reverse argument (Note [second pass in reverse]).
inline bool reverse_second_pass() { return row_kernel_options().reverse_second_pass; }

}  // namespace ft::cuda
