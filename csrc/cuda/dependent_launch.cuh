// The normalization kernels' launch: as programmatic dependents on sm_90 (Note [dependent launch]).
#pragma once
#include <cuda_runtime.h>

#include "cuda/check.h"
#include "cuda/device_state.h"
#include "cuda/row_kernel_options.h"

namespace ft::cuda {
namespace {

// Note [dependent launch]: a normalization is a chain of two to six short kernels (statistics,
// their merge, the elementwise pass; the backward's likewise), and at the shapes torch handles
// worst (BatchNorm1d 8192 x 1024, 7x7 maps) a kernel runs some 10-40 us, so the gap between one
// kernel's last block and the next kernel's first (launch, block distribution, ramp-up) is a
// real share of the chain.  On sm_90 a kernel launched with programmatic stream serialization
// starts once every block of the kernel before it has run griddepcontrol.launch_dependents (or
// exited), and its blocks wait in griddepcontrol.wait until that kernel has finished and its
// writes are visible.  Every kernel of the normalization families opens with grid_dependency():
// the wait, then the go-ahead for the kernel after it.  Waiting before anything else keeps the
// stream's order for every access: the kernel before may be ours (its output is this one's
// input) or a caller's, which never lets ours start early (it has no launch_dependents: ours
// starts as it exits, as without the attribute).  The go-ahead comes after the wait, so at most
// the next kernel's blocks are resident early, never one further down the chain; it comes
// before the block's work, so they are resident by the time this kernel drains; and it takes
// effect once every block of this kernel has given it, when none of them still waits for a slot
// the early blocks could take.
// tests/test_dependent_launch.py checks that every kernel of those sources opens with it and is
// launched through launch_kernel.  Before sm_90, once a launch with the attribute is refused
// (the device then launches as usual for good), and with
// `_C._cuda_row_kernel_options(dependent_launch=False)`, kernels launch as usual; the wait is a
// no-op in a kernel launched so.  Which block runs when changes, not what any block computes:
// the same bits either way.
__device__ __forceinline__ void grid_dependency() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches kernel(args...) on grid x block threads with `shared` bytes of dynamic shared memory on
// st, as a dependent launch where the device and the switch allow (Note [dependent launch]).
template <class... P, class... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, cudaStream_t st, const A&... args) {
  DeviceState& d = device_state();
  if (row_kernel_options().dependent_launch && d.dependent_launch.load(std::memory_order_relaxed)) {
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared;
    config.stream = st;
    config.attrs = attr;
    config.numAttrs = 1;
    if (cudaLaunchKernelEx(&config, kernel, args...) == cudaSuccess) return;
    // Refused before anything ran (a refused configuration is not a sticky error): launch as
    // usual from now on, and report what the plain launch reports.
    cudaGetLastError();
    d.dependent_launch = false;
  }
  kernel<<<grid, block, shared, st>>>(args...);
}

}  // namespace
}  // namespace ft::cuda
