// Thread pool behind parallel_for: persistent workers, a generation counter, and a short spin
// before sleeping so back-to-back optimizer steps do not pay a futex wake each time.
#include "core/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace ft {
namespace {

constexpr int64_t kMinWorkPerThread = 1 << 15;

int default_threads() {
  if (const char* env = std::getenv("FUSEDTRAIN_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

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

  // Runs fn(part) for part in [0, parts) with part 0 on the calling thread.
  void run(int parts, const std::function<void(int)>& fn) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      parts_ = parts;
      pending_.store(parts - 1);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins > 2000) std::this_thread::yield();
  }

 private:
  void loop(int part) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t gen = generation_.load(std::memory_order_acquire);
      for (int spins = 0; gen == seen && spins < 20000; ++spins) {
        gen = generation_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load() != seen; });
        gen = generation_.load();
      }
      const std::function<void(int)>* job;
      int parts;
      {
        // Generation and job are read together: a worker that slept through a job it had no
        // part in must not run the next one twice.
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
        seen = generation_.load();
        job = job_;
        parts = parts_;
      }
      if (part < parts) {
        (*job)(part);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0;
  bool stop_ = false;
};

std::mutex g_config_mu;  // guards g_threads
int g_threads = 0;       // 0: not yet read from the environment
std::mutex g_region_mu;  // one parallel region at a time; guards g_pool
Pool* g_pool = nullptr;

// fork() waits for a running region to end, so the child never inherits a locked region mutex.
// A forked child has none of the parent's workers; it forgets the pool (its memory is leaked on
// purpose: destroying it would join threads that do not exist) and builds a new one on demand.
void before_fork() { g_region_mu.lock(); }
void after_fork_in_parent() { g_region_mu.unlock(); }
void after_fork_in_child() {
  g_pool = nullptr;
  g_region_mu.unlock();
}

std::once_flag g_atfork_once;

// Note [one thread count per region]: the pool is sized from the same snapshot of the thread
// count that cut the region into parts. Reading the count again here would let a concurrent
// set_num_threads shrink the pool below the parts already promised, and run() would wait forever
// for parts no worker takes.
Pool* pool_for(int threads) {
  std::call_once(g_atfork_once,
                 [] { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); });
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
  g_threads = std::max(1, n);
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
  int parts = int(want);
  std::lock_guard<std::mutex> lk(g_region_mu);
  Pool* pool = pool_for(threads);
  pool->run(parts, [&](int part) {
    int64_t b = n * part / parts, e = n * (part + 1) / parts;
    if (b < e) fn(b, e);
  });
}

}  // namespace ft
