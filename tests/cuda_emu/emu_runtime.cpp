// The fiber scheduler behind tests/cuda_emu/cuda_runtime.h (Note [host emulation]) and host
// stand-ins for the device state the kernels use (scratch, SM count, uploads, events).
//
// A fiber starts on its own stack through setcontext and switches with _setjmp/_longjmp after
// that: no signal-mask system call per switch (a block passes every barrier with 2 x 256
// switches). _FORTIFY_SOURCE's longjmp check refuses jumps between stacks, hence the #undef.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device_state.h"
#include "cuda/kernels.h"
#include "cuda/row_kernel_options.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace ft_emu {
namespace {

constexpr size_t kStack = 256 << 10;

struct Fiber {
  ucontext_t start;  // entry on the fiber's stack, made for every block
  jmp_buf env;       // where the fiber last yielded
  std::vector<char> stack = std::vector<char>(kStack);
  uint3 idx{};
  bool started = false, done = false;
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  std::vector<Copy> copies;  // issued, not yet waited for (Note [async row copy])
};

struct Barrier {  // arrivals of the live threads of a block or a warp
  int live = 0, arrived = 0;
  uint64_t gen = 0;
};

struct Warp {
  Barrier barrier;
  alignas(16) unsigned char slot[32][16];
  uint64_t round[32] = {};  // barrier generation + 1 at the lane's last deposit; 0: none
};

jmp_buf g_main;
std::vector<Fiber> g_fibers;
int g_cur = 0, g_threads = 0;
const std::function<void()>* g_body = nullptr;
Barrier g_block;
std::vector<Warp> g_warps;
uint64_t g_events = 0;  // barrier releases and thread exits: progress
std::vector<std::max_align_t> g_dynamic;  // the running block's dynamic shared memory
int g_schedule = -1;  // Note [emulated schedules]; -1: not read from the environment yet
std::string g_fault;  // the first rule a thread broke, thrown once the grid has run
std::vector<void*> g_poisoned;  // static shared arrays the running block has reached

// A rule a thread broke.  An exception cannot leave a fiber: the launch throws the first once
// the grid has run.
void fault(const std::string& why) {
  if (g_fault.empty()) g_fault = "emulated launch: " + why;
}

int current_schedule() {
  if (g_schedule < 0) {
    const char* env = std::getenv("FT_EMU_SCHEDULE");
    g_schedule = env ? std::atoi(env) : 0;
  }
  return g_schedule;
}

// Note [emulated schedules]: a thread of the emulation runs until its next barrier or shuffle
// before the next thread starts, and blocks run one after another, so a kernel that reads shared
// memory another thread writes between the same two barriers (a race on a GPU), or global memory
// another block of the same launch writes, gets a result that depends on that order. Schedule 0
// runs threads and blocks in index order; 1 in reverse; any other value in an order shuffled by
// it (per block for threads). A race-free, deterministic kernel gives the same bits under every
// schedule, which tests/test_cuda_emulated.py checks.
std::vector<int> order(int n, int schedule, uint64_t salt) {
  std::vector<int> o(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) o[size_t(i)] = schedule == 1 ? n - 1 - i : i;
  if (schedule > 1) {
    uint64_t state = uint64_t(schedule) * 0x9E3779B97F4A7C15ull + salt;
    for (int i = n - 1; i > 0; --i) {  // Fisher-Yates with a 64-bit LCG
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      std::swap(o[size_t(i)], o[size_t((state >> 33) % uint64_t(i + 1))]);
    }
  }
  return o;
}

void yield() {
  if (_setjmp(g_fibers[g_cur].env) == 0) _longjmp(g_main, 1);
}

void release_if_complete(Barrier& b) {
  if (b.arrived > 0 && b.arrived == b.live) {
    b.arrived = 0;
    ++b.gen;
    ++g_events;
  }
}

void wait(Barrier& b) {
  const uint64_t gen = b.gen;
  ++b.arrived;
  release_if_complete(b);
  while (b.gen == gen) yield();
}

void entry() {
  (*g_body)();
  Fiber& f = g_fibers[g_cur];
  f.done = true;
  --g_block.live;
  Barrier& w = g_warps[g_cur / 32].barrier;
  --w.live;
  ++g_events;
  release_if_complete(g_block);
  release_if_complete(w);
  _longjmp(g_main, 1);
}

}  // namespace

// Note [divergent barriers]
void syncthreads(const char* file, int line) {
  static const char* site_file = nullptr;
  static int site_line = 0;
  if (g_block.arrived == 0) {
    site_file = file;
    site_line = line;
  } else if (line != site_line || std::strcmp(file, site_file) != 0) {
    fault(std::string("threads of a block wait at different barriers in one round, ") + site_file + ":" +
          std::to_string(site_line) + " and " + file + ":" + std::to_string(line) + "; a GPU leaves that undefined");
  }
  wait(g_block);
}

void shuffle_exchange(const void* value, void* out, size_t bytes, int delta, bool butterfly, unsigned mask) {
  const int lane = g_cur % 32;
  Warp& w = g_warps[g_cur / 32];
  if (!(mask >> lane & 1u)) fault("a lane shuffles with a mask without itself; a GPU leaves that undefined");
  const uint64_t round = w.barrier.gen + 1;
  std::memcpy(w.slot[lane], value, bytes);
  w.round[lane] = round;
  wait(w.barrier);
  int src = butterfly ? lane ^ delta : lane + delta;
  if (src >= 32) src = lane;  // past the warp's end: the caller's own value, as on a GPU
  // Note [shuffle sources]
  if ((mask >> src & 1u) && w.round[src] == round)
    std::memcpy(out, w.slot[src], bytes);
  else
    std::memset(out, 0xFF, bytes);
  wait(w.barrier);
}

namespace {
std::vector<std::pair<const void*, long>> g_allowed_shared;  // Note [launch limits]
}  // namespace

void check_launch_bounds(int max_threads) {
  if (g_threads > max_threads)
    fault("a block of " + std::to_string(g_threads) + " threads, past the kernel's __launch_bounds__ of " +
          std::to_string(max_threads) + "; a GPU refuses it");
}

bool allow_dynamic_shared(const void* kernel, long bytes) {
  constexpr long kOptIn = 227 << 10;  // sm_90's most for one block (sharedMemPerBlockOptin)
  if (bytes < 0 || bytes > kOptIn) return false;
  for (auto& [k, b] : g_allowed_shared)
    if (k == kernel) {
      b = bytes;
      return true;
    }
  g_allowed_shared.emplace_back(kernel, bytes);
  return true;
}

// Note [launch limits]
void check_launch(dim3 grid, dim3 block, size_t shared, const void* kernel) {
  auto refuse = [&](const std::string& why) {
    throw std::runtime_error("emulated launch of grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
                             ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) + ", " +
                             std::to_string(block.y) + ", " + std::to_string(block.z) + "), " +
                             std::to_string(shared) + " B shared: " + why + "; a GPU refuses it");
  };
  if (grid.x < 1 || grid.y < 1 || grid.z < 1) refuse("a grid dimension is 0");
  if (grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535) refuse("a grid dimension is past its limit");
  if (block.x < 1 || block.y < 1 || block.z < 1) refuse("a block dimension is 0");
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || uint64_t(block.x) * block.y * block.z > 1024)
    refuse("the block is past 1024 threads or a dimension past its limit");
  if (shared > 48u << 10) {
    long allowed = -1;
    for (const auto& [k, b] : g_allowed_shared)
      if (k == kernel) allowed = b;
    if (allowed < 0) refuse("more than 48 KB of dynamic shared memory, and the kernel was not allowed more");
    if (long(shared) > allowed)
      refuse("more dynamic shared memory than the kernel was allowed (" + std::to_string(allowed) + " B)");
  }
}

void* dynamic_shared() { return g_dynamic.data(); }

// Note [static shared memory]
void poison_shared_once(void* p, size_t bytes) {
  for (void* q : g_poisoned)
    if (q == p) return;
  g_poisoned.push_back(p);
  std::memset(p, 0xFF, bytes);
}

void copy_async(void* dst, const void* src, size_t bytes) {
  const auto* shared = reinterpret_cast<const char*>(g_dynamic.data());
  const auto* d = static_cast<const char*>(dst);
  if (d < shared || d + bytes > shared + g_dynamic.size() * sizeof(std::max_align_t))
    return fault("an asynchronous copy to outside the block's dynamic shared memory; a GPU faults");
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    return fault("an asynchronous copy of " + std::to_string(bytes) +
                 " bytes from or to an address not aligned to them; a GPU faults");
  g_fibers[size_t(g_cur)].copies.push_back({dst, src, bytes});
}

void prefetch_l2(const void* p, int64_t bytes) {
  if (reinterpret_cast<uintptr_t>(p) % 16 || bytes % 16 || bytes <= 0 || bytes >= (int64_t(1) << 32))
    fault("a bulk L2 prefetch of " + std::to_string(bytes) + " bytes at an address " +
          std::to_string(reinterpret_cast<uintptr_t>(p) % 16) + " past 16-byte alignment; a GPU faults");
}

void copy_async_wait() {
  auto& copies = g_fibers[size_t(g_cur)].copies;
  for (const auto& c : copies) std::memcpy(c.dst, c.src, c.bytes);
  copies.clear();
}

void run_grid(dim3 grid, dim3 block, size_t shared, const std::function<void()>& body) {
  g_dynamic.assign((shared + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t), std::max_align_t{});
  gridDim = grid;
  blockDim = block;
  g_threads = int(block.x * block.y * block.z);
  if (int(g_fibers.size()) < g_threads) g_fibers.resize(size_t(g_threads));
  ucontext_t blank;  // copied, then given a stack and the entry, for every thread of every block
  getcontext(&blank);
  g_warps.assign(size_t((g_threads + 31) / 32), Warp{});
  g_body = &body;
  const int blocks = int(grid.x * grid.y * grid.z);
  for (int b : order(blocks, current_schedule(), 0)) {
    blockIdx = {unsigned(b) % grid.x, unsigned(b) / grid.x % grid.y, unsigned(b) / (grid.x * grid.y)};
    if (!g_dynamic.empty())  // data() may be null, which memset may not take even for 0 bytes
      std::memset(static_cast<void*>(g_dynamic.data()), 0xFF, g_dynamic.size() * sizeof(std::max_align_t));
    g_block = Barrier{g_threads, 0, 0};
    g_poisoned.clear();
    for (int w = 0; w < int(g_warps.size()); ++w) {
      g_warps[size_t(w)].barrier = Barrier{std::min(32, g_threads - 32 * w), 0, 0};
      std::fill(std::begin(g_warps[size_t(w)].round), std::end(g_warps[size_t(w)].round), 0);
    }
    for (int t = 0; t < g_threads; ++t) {
      Fiber& f = g_fibers[size_t(t)];
      f.started = f.done = false;
      f.copies.clear();
      f.idx = {unsigned(t) % block.x, unsigned(t) / block.x % block.y, unsigned(t) / (block.x * block.y)};
      f.start = blank;
      f.start.uc_stack.ss_sp = f.stack.data();
      f.start.uc_stack.ss_size = f.stack.size();
      f.start.uc_link = nullptr;
      makecontext(&f.start, entry, 0);
    }
    const std::vector<int> threads = order(g_threads, current_schedule(), uint64_t(b) + 1);
    for (int left = g_threads; left > 0;) {
      const uint64_t before = g_events;
      left = 0;
      for (int t : threads) {
        Fiber& f = g_fibers[size_t(t)];
        if (f.done) continue;
        g_cur = t;
        threadIdx = f.idx;
        if (_setjmp(g_main) == 0) {
          if (f.started) _longjmp(f.env, 1);
          f.started = true;
          setcontext(&f.start);
        }
        left += !f.done;
      }
      if (left > 0 && g_events == before)
        throw std::runtime_error("emulated launch: threads wait at a barrier that never completes");
    }
  }
  if (!g_fault.empty()) throw std::runtime_error(std::exchange(g_fault, std::string()));
}

}  // namespace ft_emu

// ---- device state: host memory, a settable SM count, no pools, streams or graphs (the launch
// counter is optim_kernels.cu's own)

namespace ft::cuda {

DeviceState& device_state() {
  static DeviceState s;
  if (s.sm_count == 0) {
    const char* env = std::getenv("FT_EMU_SM_COUNT");
    s.sm_count = env ? std::atoi(env) : 2;
    s.shared_per_sm = 228 << 10;  // an H100's
    s.dependent_launch = true;    // sm_90 (Note [dependent launch])
  }
  return s;
}

// Scratch is filled with 0xff bytes (NaN for floats and doubles): a kernel that reads scratch
// it never wrote gets NaN, which the comparisons catch.
void* stream_alloc(size_t bytes, Stream) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0xff, bytes);
  return p;
}
void stream_free(void* p, Stream) { std::free(p); }
double read_back(const double* device_value, Stream) { return *device_value; }
bool is_capturing(cudaStream_t) { return false; }
bool event_done(cudaEvent_t) { return true; }
void* DeviceState::upload_now(const void* host, size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  std::memcpy(p, host, bytes);
  return p;
}
void* DeviceState::stream_alloc(size_t bytes, cudaStream_t st) { return cuda::stream_alloc(bytes, st); }
void DeviceState::stream_free(void* p, cudaStream_t st) noexcept { cuda::stream_free(p, st); }

}  // namespace ft::cuda

int ft_emu_dependent_launches = 0;

extern "C" void emu_set_sm_count(int n) { ft::cuda::device_state().sm_count = n; }
extern "C" void emu_set_row_kernel_options(int l2_prefetch, int shared_column_sums, int rows_walk_prefetch,
                                           int reverse_second_pass, int staged_rows, int dependent_launch) {
  ft::cuda::row_kernel_options() = {l2_prefetch != 0, shared_column_sums != 0, rows_walk_prefetch != 0,
                                    reverse_second_pass != 0, staged_rows != 0, dependent_launch != 0};
}
extern "C" void emu_set_schedule(int s) { ft_emu::g_schedule = s; }
extern "C" int emu_dependent_launches() { return ft_emu_dependent_launches; }
