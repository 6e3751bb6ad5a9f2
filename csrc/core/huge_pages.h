// Asks the kernel to back a fresh output buffer with transparent huge pages.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ft {

// Note [huge pages]: an output of many MB is new memory, and our kernels' first writes fault it
// in.  With Linux's transparent huge pages in "madvise" mode (a common default) NumPy asks for
// huge pages on arrays of 4 MB and more, while torch's CPU allocator does not: a (8192, 1024)
// float32 torch output took some 8 ms of 4 KB page faults and zeroing against NumPy's 2.6 ms on
// the 2-core VM, more than layer norm's whole kernel.  So outputs we allocate through torch get
// the same hint: the 2 MB-aligned interior of the buffer, before anything touches it.  A hint
// only (a kernel with huge pages off, or in "always" mode, ignores or needs nothing), and
// harmless on memory already faulted in.  Returns whether the kernel took it.
inline bool advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t(2) << 20;
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end <= begin) return false;
  return madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) == 0;
#else
  (void)data;
  (void)bytes;
  return false;
#endif
}

}  // namespace ft
