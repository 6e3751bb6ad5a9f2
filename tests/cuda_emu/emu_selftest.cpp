// Kernels that break a GPU rule on purpose, for tests/test_cuda_emulated.py to see the emulation
// refuse them as a GPU would (Note [launch limits]) or poison what a GPU leaves undefined
// (Note [shuffle sources]).
#include <cstdint>
#include <stdexcept>

#include "emu_guard.h"

namespace {

__global__ void noop_kernel() {}
__global__ void never_allowed_kernel() {}

// Lanes 16 and up exit before the others shuffle down by 8: lanes 8-15 read exited lanes.
__global__ void shuffle_from_exited_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 8);
}

// Every lane reads lane ^ 1 with a mask of the even lanes: the odd callers break the rule.
__global__ void mask_without_caller_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0x55555555u, float(threadIdx.x), 1);
}

// Thread 0 writes a static shared value, the others read it without a barrier between (a race
// on a GPU), after the rewrite of Note [static shared memory].  Every block of the launch: what
// a block reads is never what the block before it wrote.
__global__ void static_shared_kernel(float* out) {
  __shared__ float value;
  ::ft_emu::poison_shared_once(&value, sizeof(value));
  if (threadIdx.x == 0) value = float(blockIdx.x + 1);
  else out[blockIdx.x] = value;
}

// Half the block waits at one barrier, half at another (Note [divergent barriers]).
__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

// Case `which` of test_emulation_async_copy_and_prefetch: an asynchronous 16-byte copy into the
// block's 64 bytes of dynamic shared memory, or a bulk L2 prefetch, of src (32 aligned bytes).
__global__ void async_kernel(int which, const unsigned char* src) {
  auto* shared = static_cast<unsigned char*>(::ft_emu::dynamic_shared());
  static unsigned char outside[32];
  switch (which) {
    case 0: ::ft_emu::copy_async(shared + 16, src + 16, 16); break;
    case 1: ::ft_emu::copy_async(shared + 8, src, 16); break;
    case 2: ::ft_emu::copy_async(shared, src + 4, 16); break;
    case 3: ::ft_emu::copy_async(shared + 56, src, 16); break;
    case 4: ::ft_emu::copy_async(outside, src, 16); break;
    case 5: ::ft_emu::prefetch_l2(src, 32); break;
    case 6: ::ft_emu::prefetch_l2(src + 2, 16); break;
    case 7: ::ft_emu::prefetch_l2(src, 24); break;
  }
  ::ft_emu::copy_async_wait();
}

// What the test's rewrite makes of `__launch_bounds__(64) bounded_kernel() {}`.
__global__ void bounded_kernel() { ::ft_emu::check_launch_bounds(64); }

}  // namespace

extern "C" {

// A launch of noop_kernel, allowed `allowed` bytes of dynamic shared memory first (cudaSuccess
// or not: the return, 0 or -1), or never_allowed_kernel where allowed < 0.
int emu_selftest_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        int64_t shared, int64_t allowed) {
  return emu_guarded([&] {
    if (allowed >= 0) {
      if (cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(allowed)) != cudaSuccess)
        throw std::runtime_error("cudaFuncSetAttribute refused");
      ::ft_emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), size_t(shared), nullptr, [&] { noop_kernel(); },
                       ::ft_emu::kernel_id(noop_kernel));
    } else {
      ::ft_emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), size_t(shared), nullptr, [&] { never_allowed_kernel(); },
                       ::ft_emu::kernel_id(never_allowed_kernel));
    }
  });
}

// bounded_kernel on one block of `threads` threads.
int emu_selftest_bounds(int64_t threads) {
  return emu_guarded([&] {
    ::ft_emu::launch(dim3(1), dim3(unsigned(threads)), 0, nullptr, [&] { bounded_kernel(); },
                     ::ft_emu::kernel_id(bounded_kernel));
  });
}

// static_shared_kernel on 3 blocks of 2 threads, thread 1 first (schedule 1); out: 3 floats.
int emu_selftest_static_shared(float* out) {
  return emu_guarded([&] {
    ::ft_emu::launch(dim3(3), dim3(2), 0, nullptr, [&] { static_shared_kernel(out); },
                     ::ft_emu::kernel_id(static_shared_kernel));
  });
}

// divergent_barrier_kernel on one block of 32 threads.
int emu_selftest_divergent_barrier() {
  return emu_guarded([&] {
    ::ft_emu::launch(dim3(1), dim3(32), 0, nullptr, [&] { divergent_barrier_kernel(); },
                     ::ft_emu::kernel_id(divergent_barrier_kernel));
  });
}

// async_kernel(which) on one block of one thread.
int emu_selftest_async(int64_t which) {
  alignas(16) static unsigned char src[32] = {};
  return emu_guarded([&] {
    ::ft_emu::launch(dim3(1), dim3(1), 64, nullptr, [&] { async_kernel(int(which), src); },
                     ::ft_emu::kernel_id(async_kernel));
  });
}

// One warp of 32 threads; out: 32 floats.
int emu_selftest_shuffle(int64_t which, float* out) {
  return emu_guarded([&] {
    if (which == 0)
      ::ft_emu::launch(dim3(1), dim3(32), 0, nullptr, [&] { shuffle_from_exited_kernel(out); },
                       ::ft_emu::kernel_id(shuffle_from_exited_kernel));
    else
      ::ft_emu::launch(dim3(1), dim3(32), 0, nullptr, [&] { mask_without_caller_kernel(out); },
                       ::ft_emu::kernel_id(mask_without_caller_kernel));
  });
}

}  // extern "C"
