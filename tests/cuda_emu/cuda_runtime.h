// Stand-in for <cuda_runtime.h> that runs fusedtrain's CUDA kernels on the host, for tests on
// machines without a GPU (tests/test_cuda_emulated.py). Note [host emulation]: each block's
// threads are fibers on one OS thread, switched at __syncthreads and warp shuffles, so barriers,
// shared memory and shuffles keep their meaning; blocks run one after another, threads and blocks
// in the order Note [emulated schedules] (emu_runtime.cpp) sets; device memory is host memory;
// streams, events and pools are no-ops. It checks index arithmetic, barriers and reduction logic,
// not timing or memory coalescing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct alignas(8) uint2 { unsigned x, y; };  // aligned as on a GPU: UBSan sees a misaligned vector
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorNotReady = 600,
  cudaErrorStreamCaptureImplicit = 906
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
using cudaStream_t = struct CUstream_emu*;
using cudaEvent_t = struct CUevent_emu*;
using cudaMemPool_t = struct CUmemPool_emu*;

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated"; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
// Events and pinned memory of the multi-tensor table: everything has completed on the host.
constexpr unsigned cudaEventDisableTiming = 2;
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(new char);
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<char*>(e);
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
// Every allocation of the emulation is malloc's, whichever call frees it.
inline cudaError_t cudaMallocHost(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t = nullptr) {
  std::free(p);
  return cudaSuccess;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

namespace ft_emu {
// Note [divergent barriers]: the threads of a block that meet in one round of the block's barrier
// must all wait at the same __syncthreads of the source (a GPU leaves barriers in divergent code
// undefined); a round that gathers two sites fails the launch, naming both.
void syncthreads(const char* file, int line);
// Shuffle exchange of the calling lane's warp: deposit, wait for the warp, read the value of
// lane + delta (butterfly: lane ^ delta; its own past the warp's end) into out, wait again.
// Note [shuffle sources]: a source lane that mask leaves out, that has exited or that the block
// does not have gives an undefined value on a GPU; here 0xFF bytes (NaN as floats), which the
// comparisons catch where the value is used.  A calling lane that mask leaves out is an error.
void shuffle_exchange(const void* value, void* out, size_t bytes, int delta, bool butterfly, unsigned mask);
// Runs body for every thread of every block (of a launch check_launch has passed); each block
// starts with `shared` bytes of dynamic shared memory filled with 0xFF bytes (NaN as floats), as
// unset as a GPU leaves it.
void run_grid(dim3 grid, dim3 block, size_t shared, const std::function<void()>& body);
// Note [static shared memory]: `__shared__` is `static` here, so a block would find what the
// block before it (or the launch before it) left in a static shared array, where a GPU's block
// finds undefined bytes.  The test's rewrite follows every static shared declaration with this
// call; the first thread of a block to reach it fills the array with 0xFF bytes (NaN as floats).
void poison_shared_once(void* p, size_t bytes);
// The running block's dynamic shared memory (FT_EMU_DYNAMIC_SHARED, for csrc/cuda's
// dynamic_shared).
void* dynamic_shared();
// Note [async row copy]: the calling thread's copies, held until its wait performs them.  Like
// sm_80's cp.async, a copy goes from global memory to the block's dynamic shared memory, both
// addresses aligned to its size; one that is not fails the launch.
void copy_async(void* dst, const void* src, size_t bytes);
void copy_async_wait();
// sm_90's bulk L2 prefetch: an address and a byte count that are multiples of 16, the count
// below 4 GB; others fail the launch.  Prefetches nothing.
void prefetch_l2(const void* p, int64_t bytes);
// Note [launch limits]: a GPU refuses a launch that the fibers would run anyway: a grid or block
// dimension of 0 or past its limit, more than 48 KB of dynamic shared memory for a kernel that
// was not allowed more (cudaFuncSetAttribute), more than an sm_90 block may have at all.  The
// emulation refuses the same launches, with the reason, so a test fails where the GPU would.
void check_launch(dim3 grid, dim3 block, size_t shared, const void* kernel);
// In every thread of a kernel with __launch_bounds__(max_threads, ...) (the test's rewrite puts
// the call first in its body): a block past max_threads fails the launch.
void check_launch_bounds(int max_threads);
// Records cudaFuncAttributeMaxDynamicSharedMemorySize; false where a GPU refuses the value.
bool allow_dynamic_shared(const void* kernel, long bytes);
template <class... P>
const void* kernel_id(void (*kernel)(P...)) { return reinterpret_cast<const void*>(kernel); }
template <class F>
void launch(dim3 grid, dim3 block, size_t shared, cudaStream_t, F f, const void* kernel) {
  check_launch(grid, block, shared, kernel);
  run_grid(grid, block, shared, std::function<void()>(f));
}
template <class T>
T shuffle(T v, int delta, bool butterfly, unsigned mask) {
  static_assert(sizeof(T) <= 16, "shuffle of a value wider than 16 bytes");
  T out;
  shuffle_exchange(&v, &out, sizeof(T), delta, butterfly, mask);
  return out;
}
}  // namespace ft_emu

#define FT_EMU_DYNAMIC_SHARED ::ft_emu::dynamic_shared
#define FT_EMU_COPY_ASYNC ::ft_emu::copy_async
#define FT_EMU_COPY_WAIT ::ft_emu::copy_async_wait
#define FT_EMU_PREFETCH_L2 ::ft_emu::prefetch_l2
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
// Dependent launch (Note [dependent launch]): blocks run one after another here, so a kernel
// launched as a dependent runs as any other.
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 6 };
union cudaLaunchAttributeValue { int programmaticStreamSerializationAllowed; };
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};
extern int ft_emu_dependent_launches;  // launches through cudaLaunchKernelEx, for the tests
template <class... P, class... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*kernel)(P...), const A&... args) {
  ++ft_emu_dependent_launches;
  ft_emu::launch(c->gridDim, c->blockDim, c->dynamicSmemBytes, c->stream, [&] { kernel(args...); },
                 ft_emu::kernel_id(kernel));
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F kernel, cudaFuncAttribute, int bytes) {
  return ft_emu::allow_dynamic_shared(ft_emu::kernel_id(kernel), bytes) ? cudaSuccess : cudaErrorInvalidValue;
}

#define __syncthreads() ::ft_emu::syncthreads(__FILE__, __LINE__)
template <class T>
T __shfl_down_sync(unsigned mask, T v, int delta) { return ft_emu::shuffle(v, delta, false, mask); }
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) { return ft_emu::shuffle(v, lane_mask, true, mask); }
