// Argument helpers every normalization binding shares (batch, layer, RMS, group, instance norm):
// the input and its device, per-channel arrays, outputs the Python layer allocated, the grad of
// the output, and the run of a kernel on the arrays' device with the GIL released.
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

// Every array of a call lives where x does (keep.device, set by input_view).
void same_device(const TensorView& v, const ArgRef& at, const ExportHolder& keep);

// The input x: any supported array; sets the call's device in `keep`.
TensorView input_view(py::handle x, const ArgRef& at, Access access, ExportHolder& keep);

// The shape an array must have and what it follows from, for errors ("x has 4 channels
// (dimension 1)").
struct Extent {
  std::vector<int64_t> shape;
  std::string why;
};

// A per-channel (per-group, per-row, ...) array: None (when optional), or an array of the
// extent's shape whose dtype is one of `ok`.
ChannelArray channel_array(py::handle obj, const ArgRef& at, Access access, const Extent& extent,
                           std::initializer_list<DType> ok, bool optional, ExportHolder& keep);

// An output the Python layer allocated: the shape and dtype of `like`.
void* same_as(py::handle obj, const ArgRef& at, const TensorView& like, ExportHolder& keep);

// The gradient of the output: x's shape and dtype.
TensorView grad_like(py::handle dy, const ArgRef& at, const TensorView& x, ExportHolder& keep);

// Runs cpu(a), or cuda(a, stream) for CUDA arrays, with the GIL released. FT_CUDA_ENTRY names a
// CUDA entry point in builds that have them and is null elsewhere (CUDA arrays are refused
// before: same_device).
#if defined(FT_WITH_CUDA)
#define FT_CUDA_ENTRY(fn) &fn
#else
#define FT_CUDA_ENTRY(fn) nullptr
#endif
template <class Args>
struct CudaEntry {  // a parameter Args is not deduced from (it may be nullptr)
  using type = void (*)(const Args&, cuda::Stream);
};
template <class Args>
void run_kernel(const Args& a, const TensorView& on, py::handle stream, void (*cpu)(const Args&),
                typename CudaEntry<Args>::type cuda) {
  const cuda::Stream st = stream_of(stream);  // read before the GIL goes
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

}  // namespace ft::bind
