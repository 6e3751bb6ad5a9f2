// Caller arrays -> TensorViews without copying: NumPy through its array struct, CUDA arrays of
// CuPy/Numba through __cuda_array_interface__, everything else (PyTorch, JAX, ...) through
// __dlpack__.  Errors name the function, argument and index.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/tensor_view.h"
#include "cuda/kernels.h"

namespace ft::bind {

namespace py = pybind11;

// Where an array came from, for error messages: "adam_: exp_avgs[3]".
struct ArgRef {
  const char* fn;
  const char* name;
  int64_t index;  // -1: a single array, not a list element
  std::string str() const;
};

[[noreturn]] void type_error(const ArgRef& at, const std::string& what);
[[noreturn]] void value_error(const ArgRef& at, const std::string& what);

// Keeps DLPack exports alive while a kernel runs; releases them (the producer's deleter) after.
class ExportHolder {
 public:
  ExportHolder() = default;
  ExportHolder(const ExportHolder&) = delete;
  ExportHolder& operator=(const ExportHolder&) = delete;
  ~ExportHolder();
  void keep(void* managed) { managed_.push_back(managed); }

  // Note [export streams]: CUDA exports are requested with stream -1 (no producer-side sync):
  // kernels run on the caller's current stream (or the explicit stream=), where the producer's
  // pending work is already ordered; work on other streams is the caller's to order.
  bool cuda_call = false;
  // The device of the call's first array; calls that take loose arrays (batch norm) check the
  // others against it.
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;

 private:
  std::vector<void*> managed_;
};

enum class Access { read, write };

// One array.  Checks that it is an array of a supported float dtype, C-contiguous, on the CPU,
// and writable when written to.
TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep);

// A list or tuple of arrays.
std::vector<TensorView> views_of(py::handle seq, const char* fn, const char* name, Access access,
                                 ExportHolder& keep);

// A Python number or a one-element array read on the host (CPU arrays only).
double scalar_of(py::handle obj, const ArgRef& at, ExportHolder& keep);

// A Python number, a one-element CPU array (read now) or a one-element CUDA array (read later by
// the kernel, no host sync).
struct ScalarArg {
  bool present = false;
  bool on_device = false;
  double host = 0.0;
  cuda::DeviceScalar device;
  int device_index = 0;
};
ScalarArg scalar_arg(py::handle obj, const ArgRef& at, ExportHolder& keep);

std::string shape_str(const TensorView& v);

// The stream= handle the Python layer resolved (None: the call is on the CPU).
inline cuda::Stream stream_of(py::handle stream) {
  return stream.is_none() ? nullptr : reinterpret_cast<cuda::Stream>(stream.cast<intptr_t>());
}

}  // namespace ft::bind
