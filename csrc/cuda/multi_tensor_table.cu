// The device chunk-table cache behind Note [one launch per step].
#include <algorithm>

#include "cuda/multi_tensor_apply.cuh"

namespace ft::cuda {
namespace {

struct Entry {
  std::vector<uintptr_t> key;  // slot pointers and numel of every tensor, in order
  int device = -1;
  void* device_mem = nullptr;  // DeviceTensor[n] followed by DeviceChunk[m]
  DeviceTable table;
};

constexpr size_t kMaxEntries = 16;
std::mutex g_mu;
std::list<Entry> g_cache;  // most recently used first

std::vector<uintptr_t> key_of(const MultiTensor& mt) {
  std::vector<uintptr_t> key;
  key.reserve(mt.tensors.size() * (kNumSlots + 1));
  for (const auto& t : mt.tensors) {
    for (int s = 0; s < kNumSlots; ++s) key.push_back(reinterpret_cast<uintptr_t>(t.ptr[s]));
    key.push_back(uintptr_t(t.numel));
  }
  return key;
}

Entry build(const MultiTensor& mt, std::vector<uintptr_t> key, int device, cudaStream_t st) {
  std::vector<DeviceTensor> tensors(mt.tensors.size());
  std::vector<DeviceChunk> chunks;
  for (size_t i = 0; i < mt.tensors.size(); ++i) {
    const TensorSlots& t = mt.tensors[i];
    DeviceTensor& d = tensors[i];
    d.aligned = 1;
    for (int s = 0; s < kNumSlots; ++s) {
      d.ptr[s] = t.ptr[s];
      if (reinterpret_cast<uintptr_t>(t.ptr[s]) % 16 != 0) d.aligned = 0;
    }
    d.numel = t.numel;
    for (int64_t b = 0; b < t.numel; b += kCudaChunk) chunks.push_back({int32_t(i), b});
  }
  const size_t tbytes = tensors.size() * sizeof(DeviceTensor);
  const size_t cbytes = chunks.size() * sizeof(DeviceChunk);
  Entry e;
  e.key = std::move(key);
  e.device = device;
  FT_CUDA_CHECK(cudaMalloc(&e.device_mem, std::max<size_t>(tbytes + cbytes, 16)));
  // Pageable source: the copy is complete when cudaMemcpyAsync returns, so the host vectors may
  // go; the upload is still ordered on st before the kernel that reads it.
  std::vector<char> host(tbytes + cbytes);
  std::memcpy(host.data(), tensors.data(), tbytes);
  std::memcpy(host.data() + tbytes, chunks.data(), cbytes);
  // Note [capture]: a new table needs cudaMalloc and a pageable copy, which a CUDA graph capture
  // does not allow; run one step before capturing (the usual warm-up) so the table is cached.
  FT_CUDA_CHECK(cudaMemcpyAsync(e.device_mem, host.data(), host.size(), cudaMemcpyHostToDevice, st));
  e.table.tensors = static_cast<const DeviceTensor*>(e.device_mem);
  e.table.chunks = reinterpret_cast<const DeviceChunk*>(static_cast<char*>(e.device_mem) + tbytes);
  e.table.nchunks = int64_t(chunks.size());
  return e;
}

}  // namespace

DeviceTable table_for(const MultiTensor& mt, cudaStream_t st) {
  int device = 0;
  FT_CUDA_CHECK(cudaGetDevice(&device));
  std::vector<uintptr_t> key = key_of(mt);
  std::lock_guard<std::mutex> lk(g_mu);
  for (auto it = g_cache.begin(); it != g_cache.end(); ++it) {
    if (it->device == device && it->key == key) {
      g_cache.splice(g_cache.begin(), g_cache, it);
      return g_cache.front().table;
    }
  }
  g_cache.push_front(build(mt, std::move(key), device, st));
  if (g_cache.size() > kMaxEntries) {
    // The evicted table may still be read by queued kernels: free it only after the device is
    // done with everything queued so far.
    FT_CUDA_CHECK(cudaDeviceSynchronize());
    FT_CUDA_CHECK(cudaFree(g_cache.back().device_mem));
    g_cache.pop_back();
  }
  return g_cache.front().table;
}

}  // namespace ft::cuda
