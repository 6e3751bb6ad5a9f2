// Argument helpers every normalization binding shares (batch, layer, RMS, group, instance norm):
// one call's arrays taken, checked and registered for the aliasing check, and the run of a
// kernel on the arrays' device with the GIL released.
#pragma once
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "bindings/device_guard.h"
#include "bindings/gil.h"
#include "bindings/interop.h"
#include "core/norm_args.h"

namespace ft::bind {

// The shape an array must have and what it follows from, for errors ("x has 4 channels
// (dimension 1)").
struct Extent {
  std::vector<int64_t> shape;
  std::string why;
};

// FT_CUDA_ENTRY names a CUDA entry point in builds that have them and is null elsewhere (CUDA
// arrays are refused before: NormCall::same_device).
#if defined(FT_WITH_CUDA)
#define FT_CUDA_ENTRY(fn) &fn
#else
#define FT_CUDA_ENTRY(fn) nullptr
#endif
template <class Args>
struct CudaEntry {  // a parameter Args is not deduced from (it may be nullptr)
  using type = void (*)(const Args&, cuda::Stream);
};

// One call of a normalization binding. Each array is registered as read or written where it is
// taken (by its Access), so a binding names its arrays once; check() runs Note [aliasing] over
// them before any kernel. The first array taken by input() sets the call's device; every other
// must live there. Errors name the argument and `fn`.
class NormCall {
 public:
  NormCall(const char* fn, py::handle stream) : fn(fn), stream_(stream) {
    keep.cuda_call = !stream.is_none();
  }
  const char* const fn;
  ExportHolder keep;  // holds every array for the call's duration

  ArgRef at(const char* name) const { return {fn, name, -1}; }
  // The input: any supported array.
  TensorView input(py::handle x, const char* name, Access access);
  // A per-channel (per-group, per-row, ...) array: None (when optional), or an array of the
  // extent's shape whose dtype is one of `ok`.
  ChannelArray channels(py::handle obj, const char* name, Access access, const Extent& extent,
                        std::initializer_list<DType> ok, bool optional);
  // running_mean and running_var: both or neither; updated (written) when `update`, else read
  // and required (`why_required` says why). Note [aliasing]: a channel's weight is read after
  // its running statistics are written, so they may not share memory.
  void running_stats(py::handle mean, py::handle var, bool update, const Extent& extent,
                     std::initializer_list<DType> ok, const char* why_required,
                     ChannelArray& mean_out, ChannelArray& var_out);
  // An output the Python layer allocated: the shape and dtype of `like`.
  void* output(py::handle obj, const char* name, const TensorView& like);
  // The gradient of the output, `dy`: x's shape and dtype.
  TensorView grad(py::handle dy, const TensorView& x);
  // An array taken and shape-checked by the binding itself.
  TensorView view(py::handle obj, const char* name, Access access);
  void add(const void* data, int64_t numel, DType dtype, const char* name, Access access);

  // Note [aliasing] over every array registered.
  void check();
  // check(), then cpu(a), or cuda(a, stream) for CUDA arrays, with the GIL released.
  template <class Args>
  void run(const Args& a, const TensorView& on, void (*cpu)(const Args&),
           typename CudaEntry<Args>::type cuda) {
    check();
    const cuda::Stream st = stream_of(stream_);  // read before the GIL goes
    ReleaseGil nogil;
    if (on.device == DeviceKind::cpu) return cpu(a);
#if defined(FT_WITH_CUDA)
    DeviceGuard guard(on.device_index);
    cuda(a, st);
#else
    (void)cuda;
    (void)st;
#endif
  }

 private:
  void same_device(const TensorView& v, const char* name) const;

  struct Entry {
    const void* data;
    int64_t numel;
    DType dtype;
    const char* name;
    Access access;
  };
  static constexpr int kMaxArrays = 16;  // no normalization takes more than 10
  Entry arrays_[kMaxArrays];
  int n_ = 0;
  py::handle stream_;
};

}  // namespace ft::bind
