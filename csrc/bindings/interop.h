// Caller arrays -> TensorViews without copying: NumPy through its array struct, everything else
// (PyTorch, CuPy, JAX, ...) through __dlpack__.  Errors name the function, argument and index.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/tensor_view.h"

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

std::string shape_str(const TensorView& v);

}  // namespace ft::bind
