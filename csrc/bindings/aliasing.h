// Rejecting calls whose arrays share memory in a way that gives wrong results.
#pragma once
#include <cstdint>
#include <vector>

#include "bindings/interop.h"

namespace ft::bind {

// Note [aliasing]: an array a call writes may not share a byte with any other array of the call
// (the same array twice in a written list included: it would be updated twice, in an order that
// depends on the threads). The one exception is `same_ok`: an array read by an elementwise rule
// may be the very memory of an array it writes (same start, size and dtype), since the rule
// reads every input of an element before writing it; `ft.sgd_([p], [p])` steps p along its own
// values. Arrays that are only read may overlap freely. Empty arrays hold no bytes.
//
// check() raises ValueError naming both arrays of the first overlap it finds. The arrays of a
// list usually lie in address order, so sorting them is a merge of a few runs, and the reads are
// swept against the writes in one pass: a step over 10,000 tensors pays no 40,000-element sort.
class Aliasing {
 public:
  explicit Aliasing(const char* fn) : fn_(fn), b_(buffers()) {}
  void written(const void* data, int64_t numel, DType dtype, const char* name, int64_t index = -1) {
    add(b_.written, data, numel, dtype, name, index);
  }
  void read(const void* data, int64_t numel, DType dtype, const char* name, int64_t index = -1) {
    add(b_.read, data, numel, dtype, name, index);
  }
  void written(const TensorView& v, const char* name, int64_t index = -1) {
    written(v.data, v.numel, v.dtype, name, index);
  }
  void read(const TensorView& v, const char* name, int64_t index = -1) {
    read(v.data, v.numel, v.dtype, name, index);
  }
  void check(bool same_ok);

  struct Range {
    uintptr_t begin, end;
    const char* name;
    int32_t index;
    DType dtype;
  };

 private:
  // Kept per thread across calls, so a step neither allocates nor faults in fresh pages.
  struct Buffers {
    std::vector<Range> written, read, scratch;
    std::vector<size_t> runs;
  };
  static Buffers& buffers();
  static void add(std::vector<Range>& to, const void* data, int64_t numel, DType dtype,
                  const char* name, int64_t index);
  [[noreturn]] void overlap(const Range& a, const Range& b, const char* why) const;

  const char* fn_;
  Buffers& b_;
};

}  // namespace ft::bind
