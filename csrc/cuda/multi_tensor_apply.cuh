// Multi-tensor apply: the chunk table of a list of tensors, cached on the device across steps,
// and the vectorized per-thread element loop shared by the optimizer kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

#include "core/multi_tensor.h"
#include "cuda/check.h"

namespace ft::cuda {

// Note [one launch per step]: a step is one kernel over a table of (tensor, chunk) pairs for
// every tensor of the call.  The table depends only on the pointers and sizes, so it is built
// once, uploaded once, and found again by the next step with the same tensors; a step with a
// cached table costs one launch and no host-to-device copy.
constexpr int64_t kCudaChunk = 65536;
constexpr int kThreads = 512;

struct DeviceTensor {
  void* ptr[kNumSlots];
  int64_t numel;
  int32_t aligned;  // every slot pointer 16-byte aligned: vector loads allowed
};

struct DeviceChunk {
  int32_t tensor;
  int64_t begin;
};

struct DeviceTable {
  const DeviceTensor* tensors = nullptr;
  const DeviceChunk* chunks = nullptr;
  int64_t nchunks = 0;
};

// Returns the cached device table of mt, building and uploading it (on st) when new.
DeviceTable table_for(const MultiTensor& mt, cudaStream_t st);

}  // namespace ft::cuda
