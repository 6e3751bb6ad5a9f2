// fusedtrain's own thread pool: all cores by default, no OpenMP runtime to fight PyTorch's.
#pragma once
#include <cstdint>
#include <functional>

namespace ft {

int get_num_threads();
void set_num_threads(int n);  // n >= 1

// Calls fn(begin, end) on contiguous sub-ranges of [0, n) across the pool and waits.  Ranges
// depend on the thread count, so callers keep results independent of them (Note [fixed chunking]).
// total_work (elements touched) decides how many threads are worth waking.
void parallel_for(int64_t n, int64_t total_work, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ft
