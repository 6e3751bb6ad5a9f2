// parallel_for: all cores by default, on our own workers or on the OpenMP runtime PyTorch already
// loaded (never a second OpenMP runtime of our own).
#pragma once
#include <cstdint>
#include <functional>

namespace ft {

// More threads than this are never started (set_num_threads and FUSEDTRAIN_NUM_THREADS clamp).
constexpr int kMaxThreads = 1024;

int get_num_threads();
void set_num_threads(int n);  // clamped to [1, kMaxThreads]

// Who runs the threads of the next region: "openmp" (the process's OpenMP runtime, Note
// [sharing OpenMP]) or "pool" (our own workers).
const char* threads_backend();

// Calls fn(begin, end) on contiguous sub-ranges of [0, n) across the threads and waits.  Ranges
// depend on the thread count, so callers keep results independent of them (Note [fixed chunking]).
// total_work (elements touched) decides how many threads are worth waking.
void parallel_for(int64_t n, int64_t total_work, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ft
