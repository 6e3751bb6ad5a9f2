// Caller arrays -> TensorViews without copying.  Errors name the function, argument and index.
// Note [import routes]: NumPy through its array struct; types exposing DLPack's C exchange API
// (`__dlpack_c_exchange_api__`, which PyTorch 2.13 has) through its non-owning DLTensor export, no
// Python call; CuPy through its array attributes; other CUDA arrays (Numba) through
// __cuda_array_interface__; everything else (older PyTorch, JAX, ...) through __dlpack__.
// The route is picked once per Python type and cached.
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

// Keeps the imported arrays (a reference to each) and their DLPack exports alive while a kernel
// runs; releases them (references, the producer's deleters) after, with the GIL held.
class ExportHolder {
 public:
  ExportHolder() = default;
  ExportHolder(const ExportHolder&) = delete;
  ExportHolder& operator=(const ExportHolder&) = delete;
  ~ExportHolder();
  void keep(void* managed, bool versioned = false) { managed_.push_back({managed, versioned}); }
  void reserve(size_t n) { objects_.reserve(objects_.size() + n); }
  void hold(PyObject* obj) {
    Py_INCREF(obj);
    objects_.push_back(obj);
  }

  // Note [export streams]: CUDA exports are requested with stream -1 (no producer-side sync):
  // kernels run on the caller's current stream (or the explicit stream=), where the producer's
  // pending work is already ordered; work on other streams is the caller's to order.
  bool cuda_call = false;
  // The device of the call's first array; calls that take loose arrays (batch norm) check the
  // others against it.
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;

 private:
  struct Export {
    void* managed;
    bool versioned;
  };
  std::vector<Export> managed_;
  std::vector<PyObject*> objects_;
};

enum class Access { read, write };

// Where an array's elements lie.  Note [dense layouts]: an elementwise rule does not care in
// which order it visits elements, so an array whose elements fill one block of memory without
// gaps or overlaps (C order, channels_last, any permutation of dimensions) is stepped as flat
// memory, provided every array of the same index shares its strides.
struct Layout {
  bool c_order = true;                     // C-contiguous, or at most one element
  int64_t strides[TensorView::kMaxDims];   // in elements; only set when !c_order
};

// Whether two arrays of shape `v` map indices to memory offsets the same way.
bool same_layout(const Layout& a, const Layout& b, const TensorView& v);
std::string strides_str(const Layout& l, const TensorView& v);

// One array.  Checks that it is an array of a supported float dtype, C-contiguous, and writable
// when written to; the array is kept alive by `keep`.
TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep);
// The same, accepting any dense layout (Note [dense layouts]), reported in `layout`.
TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep,
                   Layout* layout);

// The items of a list or tuple argument (borrowed); TypeError for anything else.
PyObject** list_items(py::handle seq, const char* fn, const char* name, Py_ssize_t* n);

// A list or tuple of arrays, each in any dense layout (a list is reduced or scaled as a whole).
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

// The current CUDA stream its framework reports for a CUDA array (its type's DLPack exchange API),
// or None where no such API answers.
py::object framework_stream(py::handle obj);

// The stream= handle the Python layer resolved (None: the call is on the CPU).
inline cuda::Stream stream_of(py::handle stream) {
  return stream.is_none() ? nullptr : reinterpret_cast<cuda::Stream>(stream.cast<intptr_t>());
}

}  // namespace ft::bind
