// parallel_for: a region's range is cut into pieces that threads claim one at a time, run by the
// process's OpenMP runtime when one is already loaded (PyTorch's) and by our own pool otherwise.
// The pool keeps persistent workers, a generation counter, and a short spin before sleeping so
// back-to-back optimizer steps do not pay a futex wake each time.
#include "core/parallel.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ft {
namespace {

constexpr int64_t kMinWorkPerThread = 1 << 15;
// Note [claimed pieces]: a region is cut into up to this many pieces per thread, and each thread
// takes the next unclaimed piece until none is left. A thread that loses its core for a while
// (another process, or another library's spinning worker) then delays the region by one piece,
// not by a fixed share. Callers' results never depend on the cut (Note [fixed chunking]).
constexpr int64_t kPiecesPerThread = 4;

int default_threads() {
  if (const char* env = std::getenv("FUSEDTRAIN_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// One parallel_for call: its pieces, the next unclaimed one, and the first exception a piece threw.
struct Region {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, pieces;
  std::atomic<int64_t> next{0};
  std::mutex error_mu;
  std::exception_ptr error;

  Region(const std::function<void(int64_t, int64_t)>& f, int64_t n_, int64_t pieces_)
      : fn(&f), n(n_), pieces(pieces_) {}

  // Every thread of the region runs this. Nothing may escape it: OpenMP threads and our workers
  // have no caller to pass an exception to, so the first one is kept for parallel_for to rethrow
  // on the calling thread once the region is over.
  void work() noexcept {
    for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < pieces;) {
      try {
        (*fn)(n * k / pieces, n * (k + 1) / pieces);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mu);
        if (!error) error = std::current_exception();
      }
    }
  }
};

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return int(threads_.size()); }

  // Runs r on the calling thread and `threads - 1` workers; returns when no worker holds r.
  void run(Region& r, int threads) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      region_ = &r;
      threads_wanted_ = threads;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    r.work();
    {
      // A worker that has not picked r up by now never will; those that did are counted.
      std::lock_guard<std::mutex> lk(mu_);
      region_ = nullptr;
    }
    for (int spins = 0; holding_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins > 2000) std::this_thread::yield();
  }

 private:
  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t gen = generation_.load(std::memory_order_acquire);
      for (int spins = 0; gen == seen && spins < 20000; ++spins) {
        gen = generation_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load() != seen; });
      }
      Region* r = nullptr;
      {
        // Generation and region are read together, and a worker holding a region is counted
        // before the lock is released, so run() cannot return while the region is in use.
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
        seen = generation_.load();
        if (region_ && index < threads_wanted_) {
          r = region_;
          holding_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (r) {
        r->work();
        holding_.fetch_sub(1, std::memory_order_release);
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> holding_{0};
  Region* region_ = nullptr;
  int threads_wanted_ = 0;
  bool stop_ = false;
};

// Note [sharing OpenMP]: PyTorch runs its CPU ops on OpenMP threads that keep spinning for
// milliseconds after each parallel region. A pool of our own started right after a torch op
// shares the cores with those spinners and takes up to twice as long. When an OpenMP runtime is
// loaded into the process's global scope (torch loads libgomp so), regions go through its
// GOMP_parallel entry point instead (libgomp, LLVM's libomp and Intel's libiomp5 all export
// it), on the very threads that are spinning. We never link an OpenMP runtime ourselves, and
// results do not change: the pieces are the same whoever runs them.
// FUSEDTRAIN_SHARE_OPENMP=0 keeps our own pool. A forked child never uses the runtime (libgomp's
// thread teams do not survive fork); it builds its own pool.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

bool g_forked = false;
unsigned long long g_loads_seen = ~0ull;
GompParallel g_gomp_parallel = nullptr;

int count_loads(dl_phdr_info* info, size_t, void* out) {
  *static_cast<unsigned long long*>(out) = info->dlpi_adds;
  return 1;  // every entry carries the process-wide count: the first is enough
}

bool sharing_disabled() {
  static const bool off = [] {
    const char* env = std::getenv("FUSEDTRAIN_SHARE_OPENMP");
    return env && std::strcmp(env, "0") == 0;
  }();
  return off;
}

// The loaded runtime's GOMP_parallel, or nullptr. Looked up again only after a library was loaded.
GompParallel shared_openmp() {
  if (g_forked || sharing_disabled()) return nullptr;
  if (!g_gomp_parallel) {
    unsigned long long loads = 0;
    dl_iterate_phdr(count_loads, &loads);
    if (loads != g_loads_seen) {
      g_loads_seen = loads;
      g_gomp_parallel = reinterpret_cast<GompParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    }
  }
  return g_gomp_parallel;
}

void run_region(void* r) { static_cast<Region*>(r)->work(); }

std::mutex g_config_mu;  // guards g_threads
int g_threads = 0;       // 0: not yet read from the environment
std::mutex g_region_mu;  // one parallel region at a time; guards g_pool and the OpenMP lookup
Pool* g_pool = nullptr;

// fork() waits for a running region to end, so the child never inherits a locked region mutex.
// A forked child has none of the parent's workers; it forgets the pool (its memory is leaked on
// purpose: destroying it would join threads that do not exist) and builds a new one on demand.
void before_fork() { g_region_mu.lock(); }
void after_fork_in_parent() { g_region_mu.unlock(); }
void after_fork_in_child() {
  g_pool = nullptr;
  g_forked = true;
  g_region_mu.unlock();
}

// Registered when the module loads, so a child forked before our first region knows it too.
const int g_atfork_registered =
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);

// Note [one thread count per region]: the pool is sized from the same snapshot of the thread
// count that decided how many threads the region wants. Reading the count again here would let
// a concurrent set_num_threads shrink the pool below the threads already counted on.
Pool* pool_for(int threads) {
  if (g_pool == nullptr || g_pool->workers() != threads - 1) {
    delete g_pool;
    g_pool = new Pool(threads - 1);
  }
  return g_pool;
}

}  // namespace

int get_num_threads() {
  std::lock_guard<std::mutex> lk(g_config_mu);
  if (g_threads == 0) g_threads = default_threads();
  return g_threads;
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_config_mu);
  g_threads = std::clamp(n, 1, kMaxThreads);
}

const char* threads_backend() {
  std::lock_guard<std::mutex> lk(g_region_mu);
  return shared_openmp() ? "openmp" : "pool";
}

void parallel_for(int64_t n, int64_t total_work, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int threads = get_num_threads();  // Note [one thread count per region]
  int64_t want = std::min<int64_t>(threads, n);
  want = std::min<int64_t>(want, std::max<int64_t>(1, total_work / kMinWorkPerThread));
  if (want <= 1) {
    fn(0, n);
    return;
  }
  // Note [claimed pieces]
  const int64_t pieces = std::min({n, want * kPiecesPerThread,
                                   std::max<int64_t>(want, total_work / kMinWorkPerThread)});
  Region region(fn, n, pieces);
  {
    std::lock_guard<std::mutex> lk(g_region_mu);
    if (GompParallel gomp = shared_openmp()) {  // Note [sharing OpenMP]
      gomp(run_region, &region, unsigned(want), 0);
    } else {
      pool_for(threads)->run(region, int(want));
    }
  }
  if (region.error) std::rethrow_exception(region.error);
}

}  // namespace ft
