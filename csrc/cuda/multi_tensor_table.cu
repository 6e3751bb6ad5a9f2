// The per-device state behind Note [one launch per step]: cached chunk lists, pinned staging for
// the per-step pointers, and the retirement of lists no kernel can still read.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda/device_state.h"
#include "cuda/kernels.h"
#include "cuda/multi_tensor_apply.cuh"

namespace ft::cuda {
namespace {

std::atomic<uint64_t> g_builds{0};

// Note [chunk list lifetime]: a list may be read by kernels queued on any stream, and by CUDA
// graphs that captured it.  Each eager launch records an event on its stream; a list evicted from
// the cache is retired and freed (stream-ordered, no sync) once no caller holds it and every
// stream that used it is past its last use.  A list used under capture is pinned: a graph can
// replay it at any time, so it is never freed.
struct ChunkList {
  std::vector<int64_t> key;  // numel of every tensor, in order
  size_t hash = 0;
  void* mem = nullptr;  // DeviceChunk[nchunks] followed by int64_t numel[ntensors]
  const DeviceChunk* chunks = nullptr;
  const int64_t* numel = nullptr;
  int64_t nchunks = 0;
  bool pinned = false;
  std::vector<std::pair<cudaStream_t, cudaEvent_t>> uses;  // the last use on each stream

  bool idle() const {
    for (const auto& u : uses)
      if (!event_done(u.second)) return false;
    return true;
  }
};

// Pinned host memory the pointers of one step are written into; reusable once its copy is done.
struct Staging {
  void* host = nullptr;
  size_t cap = 0;
  cudaEvent_t copied = nullptr;
  bool recorded = false;
};

struct TableCache {
  std::mutex mu;
  std::list<std::shared_ptr<ChunkList>> lists;  // most recently used first
  std::vector<std::shared_ptr<ChunkList>> retired;
  std::vector<Staging> ring;
  size_t next = 0;
};

constexpr size_t kMaxLists = 64;     // size lists cached per device
constexpr size_t kMaxStaging = 32;   // steps whose pointer copies may be in flight per device

TableCache& cache_of(int device) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<TableCache>> caches;
  std::lock_guard<std::mutex> lk(mu);
  if (size_t(device) >= caches.size()) caches.resize(size_t(device) + 1);
  if (!caches[size_t(device)]) caches[size_t(device)] = std::make_unique<TableCache>();
  return *caches[size_t(device)];
}

size_t hash_of(const std::vector<int64_t>& key) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t v : key) h = (h ^ uint64_t(v)) * 1099511628211ull;
  return size_t(h);
}

void sweep_retired(TableCache& c, const DeviceState& d) {
  auto& r = c.retired;
  for (size_t i = 0; i < r.size();) {
    if (r[i].use_count() == 1 && r[i]->idle()) {
      FT_CUDA_CHECK(cudaFreeAsync(r[i]->mem, d.upload));
      for (auto& u : r[i]->uses) cudaEventDestroy(u.second);
      r[i] = std::move(r.back());
      r.pop_back();
    } else {
      ++i;
    }
  }
}

std::shared_ptr<ChunkList> build_list(std::vector<int64_t> key, size_t hash, DeviceState& d) {
  auto list = std::make_shared<ChunkList>();
  std::vector<DeviceChunk> chunks;
  for (size_t t = 0; t < key.size(); ++t)
    for (int64_t b = 0, k = 0; b < key[t]; b += kCudaChunk, ++k) chunks.push_back({int32_t(t), uint32_t(k)});
  const size_t cbytes = chunks.size() * sizeof(DeviceChunk);
  const size_t nbytes = key.size() * sizeof(int64_t);
  std::vector<char> host(cbytes + nbytes);
  std::memcpy(host.data(), chunks.data(), cbytes);
  std::memcpy(host.data() + cbytes, key.data(), nbytes);
  list->mem = d.upload_now(host.data(), host.size());
  list->chunks = static_cast<const DeviceChunk*>(list->mem);
  list->numel = reinterpret_cast<const int64_t*>(static_cast<char*>(list->mem) + cbytes);
  list->nchunks = int64_t(chunks.size());
  list->key = std::move(key);
  list->hash = hash;
  g_builds.fetch_add(1);
  return list;
}

// The cached list for these sizes, built on a miss.  Called with c.mu held.
std::shared_ptr<ChunkList> find_list(TableCache& c, DeviceState& d, std::vector<int64_t> key) {
  const size_t h = hash_of(key);
  for (auto it = c.lists.begin(); it != c.lists.end(); ++it) {
    if ((*it)->hash == h && (*it)->key == key) {
      c.lists.splice(c.lists.begin(), c.lists, it);
      return c.lists.front();
    }
  }
  c.lists.push_front(build_list(std::move(key), h, d));
  if (c.lists.size() > kMaxLists) {
    // Evict the least recently used list that no graph holds.
    for (auto it = std::prev(c.lists.end());; --it) {
      if (!(*it)->pinned) {
        c.retired.push_back(std::move(*it));
        c.lists.erase(it);
        break;
      }
      if (it == c.lists.begin()) break;
    }
  }
  return c.lists.front();
}

// A staging slot whose previous copy is complete, at least `bytes` large.  Called with c.mu held.
Staging& acquire_staging(TableCache& c, size_t bytes) {
  const size_t n = c.ring.size();
  for (size_t k = 0; k < n; ++k) {
    Staging& s = c.ring[(c.next + k) % n];
    if (s.cap >= bytes && (!s.recorded || event_done(s.copied))) {
      c.next = (c.next + k + 1) % n;
      return s;
    }
  }
  const size_t cap = std::max<size_t>(size_t(1) << 16, size_t(1) << (64 - __builtin_clzll(bytes)));
  if (n < kMaxStaging) {
    Staging s;
    FT_CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    FT_CUDA_CHECK(cudaMallocHost(&s.host, cap));
    s.cap = cap;
    c.ring.push_back(s);
    return c.ring.back();
  }
  // Every slot is busy (the host is kMaxStaging steps ahead of the device) or too small: wait for
  // the oldest copy to land, which is back-pressure on the host, not a wait for the device to drain.
  Staging& s = c.ring[c.next];
  c.next = (c.next + 1) % n;
  if (s.recorded) FT_CUDA_CHECK(cudaEventSynchronize(s.copied));
  if (s.cap < bytes) {
    FT_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    s.cap = 0;
    FT_CUDA_CHECK(cudaMallocHost(&s.host, cap));
    s.cap = cap;
  }
  return s;
}

}  // namespace

uint64_t chunk_list_builds() { return g_builds.load(); }

struct TableLaunch::Impl {
  DeviceState* dev = nullptr;
  TableCache* cache = nullptr;
  std::shared_ptr<ChunkList> list;
  cudaStream_t stream = nullptr;
  void* ptrs = nullptr;    // this step's pointer buffer (stream-ordered; static under capture)
  bool capturing = false;
  bool done = false;
};

TableLaunch::TableLaunch(const MultiTensor& mt, cudaStream_t stream) : impl_(new Impl) {
  Impl& m = *impl_;
  m.stream = stream;
  m.dev = &device_state();
  m.cache = &cache_of(m.dev->device);
  m.capturing = is_capturing(stream);

  // Columns: the slots this call passes (Note [slot roles]).
  int ncols = 0;
  for (int s = 0; s < kNumSlots; ++s) {
    bool present = false;
    for (const auto& t : mt.tensors) present = present || t.ptr[s] != nullptr;
    if (present) table_.col[s] = int8_t(ncols++);
  }
  table_.ncols = ncols;
  std::vector<int64_t> key(mt.tensors.size());
  for (size_t i = 0; i < key.size(); ++i) key[i] = mt.tensors[i].numel;
  const size_t bytes = std::max<size_t>(size_t(ncols) * key.size() * sizeof(void*), 16);

  TableCache& c = *m.cache;
  std::lock_guard<std::mutex> lk(c.mu);
  sweep_retired(c, *m.dev);
  m.list = find_list(c, *m.dev, std::move(key));
  if (m.capturing) m.list->pinned = true;
  table_.chunks = m.list->chunks;
  table_.numel = m.list->numel;
  table_.nchunks = m.list->nchunks;
  if (table_.nchunks == 0) return;

  auto fill = [&](void** out) {
    for (size_t i = 0; i < mt.tensors.size(); ++i)
      for (int s = 0; s < kNumSlots; ++s)
        if (table_.col[s] >= 0) out[i * size_t(ncols) + size_t(table_.col[s])] = mt.tensors[i].ptr[s];
  };
  if (m.capturing) {
    // A graph replays this table later: upload it now, to memory that stays (never freed).
    std::vector<void*> host(bytes / sizeof(void*) + 1);
    fill(host.data());
    m.ptrs = m.dev->upload_now(host.data(), bytes);
  } else {
    Staging& s = acquire_staging(c, bytes);
    fill(static_cast<void**>(s.host));
    m.ptrs = m.dev->stream_alloc(bytes, stream);
    FT_CUDA_CHECK(cudaMemcpyAsync(m.ptrs, s.host, bytes, cudaMemcpyHostToDevice, stream));
    FT_CUDA_CHECK(cudaEventRecord(s.copied, stream));
    s.recorded = true;
  }
  table_.ptrs = static_cast<void* const*>(m.ptrs);
}

void TableLaunch::launched() {
  Impl& m = *impl_;
  if (m.capturing || !m.list || m.done) return;
  m.done = true;
  std::lock_guard<std::mutex> lk(m.cache->mu);
  auto& uses = m.list->uses;
  auto it = std::find_if(uses.begin(), uses.end(), [&](const auto& u) { return u.first == m.stream; });
  if (it == uses.end()) {
    cudaEvent_t ev;
    FT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    uses.emplace_back(m.stream, ev);
    it = std::prev(uses.end());
  }
  FT_CUDA_CHECK(cudaEventRecord(it->second, m.stream));
}

TableLaunch::~TableLaunch() {
  Impl& m = *impl_;
  // Stream order: the free lands after the kernel that reads the buffer (or at once if none).
  if (m.ptrs && !m.capturing) m.dev->stream_free(m.ptrs, m.stream);
  if (m.list) {
    std::lock_guard<std::mutex> lk(m.cache->mu);
    m.list.reset();  // retired lists need use_count() == 1 before they are freed
  }
}

}  // namespace ft::cuda
