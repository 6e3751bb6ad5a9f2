// The table one launch over many tensors reads (a size-only chunk list cached on the device, and
// this step's pointers uploaded without a host sync) and its preparation, in
// multi_tensor_table.cu; each kernel family writes its own loop over the chunks.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "core/multi_tensor.h"
#include "cuda/check.h"

namespace ft::cuda {

// Note [one launch per step]: a step is one kernel over a list of (tensor, chunk) pairs for every
// tensor of the call.  The chunk list depends only on the tensors' sizes, so it is built and
// uploaded once and found again by every later step with the same sizes, whatever the pointers
// (a new .grad each step, `p.data = ...`).  The pointers travel each step: written into pinned
// staging memory and copied on the launch stream ahead of the kernel, so a step is one copy and
// one launch and never waits for the device.
constexpr int64_t kCudaChunk = 65536;
constexpr int kThreads = 512;

struct DeviceChunk {
  int32_t tensor;
  uint32_t index;  // elements [index * kCudaChunk, min(numel, (index + 1) * kCudaChunk))
};

struct DeviceTable {
  const DeviceChunk* chunks = nullptr;
  const int64_t* numel = nullptr;  // per tensor
  void* const* ptrs = nullptr;     // per tensor, `ncols` pointers: the present slots in order
  int64_t nchunks = 0;
  int32_t ncols = 0;
  int8_t col[kNumSlots] = {-1, -1, -1, -1, -1, -1};  // slot -> column of ptrs, -1: absent
};

// The pointer of slot s of tensor t (nullptr when the call has no such list).
__device__ __forceinline__ void* slot_ptr(const DeviceTable& tb, int32_t t, int s) {
  return tb.col[s] < 0 ? nullptr : tb.ptrs[int64_t(t) * tb.ncols + tb.col[s]];
}

// The start and end of chunk ch.
__device__ __forceinline__ void chunk_range(const DeviceTable& tb, const DeviceChunk& ch,
                                            int64_t& begin, int64_t& end) {
  const int64_t n = tb.numel[ch.tensor];
  begin = int64_t(ch.index) * kCudaChunk;
  end = begin + kCudaChunk < n ? begin + kCudaChunk : n;
}

// One launch's table and the memory behind it.  Construct, launch on `stream`, then call
// launched(): the step's pointer buffer is freed in stream order after the kernel, and the chunk
// list is marked in use on that stream (it is freed only once every stream that used it is past
// its last use).  If the launch never happens, the destructor still releases everything.
class TableLaunch {
 public:
  TableLaunch(const MultiTensor& mt, cudaStream_t stream);
  ~TableLaunch();
  TableLaunch(const TableLaunch&) = delete;
  TableLaunch& operator=(const TableLaunch&) = delete;

  const DeviceTable& table() const { return table_; }
  void launched();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DeviceTable table_;
};

}  // namespace ft::cuda
