// The overlap check of a call's arrays (see aliasing.h, Note [aliasing]).
#include "bindings/aliasing.h"

#include <algorithm>
#include <string>

namespace ft::bind {
namespace {

bool by_begin(const Aliasing::Range& a, const Aliasing::Range& b) { return a.begin < b.begin; }

// Sorts by start with a merge sort of the natural runs (a descending run is reversed first), so
// ranges mostly in address order, as a list's arrays usually are, cost a few linear passes.
// `scratch` and `runs` are buffers kept between calls.
void sort_by_begin(std::vector<Aliasing::Range>& v, std::vector<Aliasing::Range>& scratch,
                   std::vector<size_t>& runs) {
  const size_t n = v.size();
  runs.clear();
  for (size_t i = 0, j; i < n; i = j) {
    j = i + 1;
    if (j < n && v[j].begin < v[i].begin) {
      while (j < n && v[j].begin < v[j - 1].begin) ++j;
      std::reverse(v.begin() + std::ptrdiff_t(i), v.begin() + std::ptrdiff_t(j));
    } else {
      while (j < n && v[j].begin >= v[j - 1].begin) ++j;
    }
    runs.push_back(i);
  }
  runs.push_back(n);
  scratch.resize(n);
  while (runs.size() > 2) {
    size_t kept = 0;
    for (size_t k = 0; k + 1 < runs.size(); k += 2) {
      const auto at = [&](size_t r) { return v.begin() + std::ptrdiff_t(runs[r]); };
      const auto out = scratch.begin() + std::ptrdiff_t(runs[k]);
      if (k + 2 < runs.size()) std::merge(at(k), at(k + 1), at(k + 1), at(k + 2), out, by_begin);
      else std::copy(at(k), at(k + 1), out);
      runs[kept++] = runs[k];
    }
    runs[kept++] = n;
    runs.resize(kept);
    v.swap(scratch);
  }
}

}  // namespace

// Per-thread buffers, reused by every call (see Aliasing::Buffers).
Aliasing::Buffers& Aliasing::buffers() {
  thread_local Buffers b;
  b.written.clear();
  b.read.clear();
  return b;
}

void Aliasing::add(std::vector<Range>& to, const void* data, int64_t numel, DType dtype,
                   const char* name, int64_t index) {
  if (numel <= 0 || data == nullptr) return;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  to.push_back(Range{begin, begin + uintptr_t(numel) * dtype_size(dtype), name, int32_t(index),
                     dtype});
}

void Aliasing::overlap(const Range& a, const Range& b, const char* why) const {
  std::string other = b.name;
  if (b.index >= 0) other += "[" + std::to_string(b.index) + "]";
  value_error(ArgRef{fn_, a.name, a.index}, "shares memory with " + other + "; " + why);
}

void Aliasing::check(bool same_ok) {
  const auto& w = b_.written;
  sort_by_begin(b_.written, b_.scratch, b_.runs);
  for (size_t i = 1; i < w.size(); ++i)
    if (w[i].begin < w[i - 1].end)
      overlap(w[i], w[i - 1], "both are written, so the result would depend on the order of "
                              "the writes");
  // The written ranges are disjoint and sorted, so their ends are sorted too; with the reads
  // sorted, one sweep finds, for each read, the first written range ending after it begins.
  sort_by_begin(b_.read, b_.scratch, b_.runs);
  size_t j = 0;
  for (const Range& r : b_.read) {
    while (j < w.size() && w[j].end <= r.begin) ++j;
    if (j == w.size()) break;
    if (w[j].begin >= r.end) continue;
    const bool same = w[j].begin == r.begin && w[j].end == r.end && w[j].dtype == r.dtype;
    if (!(same_ok && same))
      overlap(r, w[j], same_ok ? "a read array may only be exactly an array that is written"
                               : "it is written while being read");
  }
}

}  // namespace ft::bind
