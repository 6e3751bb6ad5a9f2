// Per-device CUDA state shared by the kernel families: a private stream-ordered memory pool, a
// private stream for one-time uploads, and the capture and event queries around them.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>

namespace ft::cuda {

struct DeviceState {
  int device = 0;
  int sm_count = 0;
  size_t shared_per_sm = 0;        // bytes of shared memory an SM holds, for its blocks together
  // sm_90 or newer, and no launch with the attribute refused yet (Note [dependent launch]).
  std::atomic<bool> dependent_launch{false};
  cudaMemPool_t pool = nullptr;     // Note [memory pool]
  cudaStream_t upload = nullptr;    // non-blocking, private: uploads that must land before use

  // Stream-ordered scratch: from our pool, or (while `st` is capturing) a graph allocation.
  void* stream_alloc(size_t bytes, cudaStream_t st);
  // Stream-ordered free; never throws (called from destructors), a failure is reported later.
  void stream_free(void* p, cudaStream_t st) noexcept;
  // Copies `bytes` of host memory to new device memory and waits for it on the private stream,
  // so the data is in place for every stream, and legal while another stream is capturing.
  // Used for what is built once (chunk lists) or must outlive a capture; never per step.
  void* upload_now(const void* host, size_t bytes);
};

// The state of the current device (created on first use).
DeviceState& device_state();

// Whether work enqueued on `st` now would be recorded into a CUDA graph instead of run.
bool is_capturing(cudaStream_t st);

// Whether everything before the event's last record has run; never leaves an error behind.
bool event_done(cudaEvent_t ev);

}  // namespace ft::cuda
