// Zero-copy import of caller arrays (see interop.h).
#include "bindings/interop.h"

#include <pybind11/numpy.h>

#include <cstring>

#include "core/half.h"

namespace ft::bind {
namespace {

// DLPack ABI (dlpack.h, v0.8 legacy capsule "dltensor").
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAManaged = 13;
constexpr uint8_t kDLFloat = 2, kDLBfloat = 4;

// NumPy type numbers of the built-in float types; bfloat16 (ml_dtypes) is a user type whose
// number is assigned at import, so it is found by name once and remembered.
constexpr int kNpyHalf = 23, kNpyFloat = 11, kNpyDouble = 12;
constexpr int kNpyCContiguous = 0x0001, kNpyWriteable = 0x0400;
int g_bf16_num = -1;

bool numpy_dtype(PyObject* descr, DType* out) {
  const int num = py::detail::array_descriptor_proxy(descr)->type_num;
  if (num == kNpyFloat) { *out = DType::f32; return true; }
  if (num == kNpyDouble) { *out = DType::f64; return true; }
  if (num == kNpyHalf) { *out = DType::f16; return true; }
  if (num == g_bf16_num) { *out = DType::bf16; return true; }
  auto dt = py::reinterpret_borrow<py::dtype>(descr);
  if (g_bf16_num < 0 && dt.itemsize() == 2 &&
      py::str(dt.attr("name")).cast<std::string>() == "bfloat16") {
    g_bf16_num = num;
    *out = DType::bf16;
    return true;
  }
  return false;
}

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

TensorView from_numpy(py::handle obj, const ArgRef& at, Access access) {
  // Direct struct reads: this runs for every array of every step, thousands per call.
  const auto* a = py::detail::array_proxy(obj.ptr());
  TensorView v;
  if (!numpy_dtype(a->descr, &v.dtype))
    type_error(at, "has dtype " + py::str(reinterpret_cast<PyObject*>(a->descr)).cast<std::string>() +
                       "; expected float32, float64, float16 or bfloat16");
  if (py::detail::array_descriptor_proxy(a->descr)->byteorder == '>')
    type_error(at, "is big-endian; expected native byte order");
  if (!(a->flags & kNpyCContiguous)) value_error(at, "is not C-contiguous");
  if (access == Access::write && !(a->flags & kNpyWriteable)) value_error(at, "is read-only");
  if (a->nd > TensorView::kMaxDims) value_error(at, "has more than 16 dimensions");
  v.data = a->data;
  v.ndim = a->nd;
  v.numel = 1;
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = a->dimensions[i];
    v.numel *= v.shape[i];
  }
  return v;
}

TensorView from_dlpack(py::handle obj, const ArgRef& at, ExportHolder& keep) {
  py::object src = py::reinterpret_borrow<py::object>(obj);
  // A tensor that requires grad refuses to export; its detached alias shares the same memory.
  if (py::hasattr(src, "requires_grad") && src.attr("requires_grad").cast<bool>())
    src = src.attr("detach")();
  py::object cap;
  try {
    cap = keep.cuda_call ? src.attr("__dlpack__")(py::arg("stream") = -1) : src.attr("__dlpack__")();
  } catch (py::error_already_set& e) {
    type_error(at, std::string("could not be exported through __dlpack__: ") + e.what());
  }
  if (!PyCapsule_IsValid(cap.ptr(), "dltensor"))
    type_error(at, "__dlpack__ did not return a DLPack capsule");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  // Consume it: from here on we own the export and call its deleter (ExportHolder).
  PyCapsule_SetName(cap.ptr(), "used_dltensor");
  keep.keep(m);
  const DLTensor& t = m->dl_tensor;
  TensorView v;
  if (t.dtype.lanes != 1) type_error(at, "has a vector dtype");
  if (t.dtype.code == kDLFloat && t.dtype.bits == 32) v.dtype = DType::f32;
  else if (t.dtype.code == kDLFloat && t.dtype.bits == 64) v.dtype = DType::f64;
  else if (t.dtype.code == kDLFloat && t.dtype.bits == 16) v.dtype = DType::f16;
  else if (t.dtype.code == kDLBfloat && t.dtype.bits == 16) v.dtype = DType::bf16;
  else
    type_error(at, "has an unsupported dtype (code " + std::to_string(t.dtype.code) + ", " +
                       std::to_string(t.dtype.bits) + " bits); expected float32, float64, "
                       "float16 or bfloat16");
  if (t.device.device_type == kDLCPU) {
    v.device = DeviceKind::cpu;
  } else if (t.device.device_type == kDLCUDA || t.device.device_type == kDLCUDAManaged) {
    v.device = DeviceKind::cuda;
    v.device_index = t.device.device_id;
  } else {
    value_error(at, "lives on an unsupported device (DLPack device type " +
                        std::to_string(t.device.device_type) + ")");
  }
  if (t.ndim > TensorView::kMaxDims) value_error(at, "has more than 16 dimensions");
  v.ndim = t.ndim;
  v.numel = 1;
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = t.shape[i];
    v.numel *= v.shape[i];
  }
  if (t.strides && v.numel > 1) {
    int64_t expect = 1;
    for (int i = v.ndim - 1; i >= 0; --i) {
      if (v.shape[i] != 1 && t.strides[i] != expect) value_error(at, "is not C-contiguous");
      expect *= v.shape[i];
    }
  }
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  return v;
}

// torch.Tensor and its subclasses (torch.nn.Parameter lives in torch.nn.parameter).
bool is_torch(py::handle obj) {
  py::object mod = py::type::handle_of(obj).attr("__module__");
  if (!PyUnicode_Check(mod.ptr())) return false;
  const std::string m = mod.cast<std::string>();
  return m == "torch" || m.rfind("torch.", 0) == 0;
}

// __cuda_array_interface__ (v2/v3): shape, typestr, data = (ptr, read_only), strides in bytes.
TensorView from_cuda_array_interface(py::handle obj, const ArgRef& at, Access access) {
  py::dict d = obj.attr("__cuda_array_interface__");
  TensorView v;
  const std::string typestr = py::str(d["typestr"]);
  if (typestr == "<f4") v.dtype = DType::f32;
  else if (typestr == "<f8") v.dtype = DType::f64;
  else if (typestr == "<f2") v.dtype = DType::f16;
  else type_error(at, "has typestr " + typestr + "; expected float32, float64 or float16");
  py::tuple data = d["data"];
  const uintptr_t ptr = data[0].cast<uintptr_t>();
  if (access == Access::write && data[1].cast<bool>()) value_error(at, "is read-only");
  py::tuple shape = d["shape"];
  if (shape.size() > size_t(TensorView::kMaxDims)) value_error(at, "has more than 16 dimensions");
  v.ndim = int(shape.size());
  v.numel = 1;
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = shape[i].cast<int64_t>();
    v.numel *= v.shape[i];
  }
  if (d.contains("strides") && !d["strides"].is_none() && v.numel > 1) {
    py::tuple strides = d["strides"];
    int64_t expect = int64_t(dtype_size(v.dtype));
    for (int i = v.ndim - 1; i >= 0; --i) {
      if (v.shape[i] != 1 && strides[i].cast<int64_t>() != expect) value_error(at, "is not C-contiguous");
      expect *= v.shape[i];
    }
  }
  v.data = reinterpret_cast<void*>(ptr);
  v.device = DeviceKind::cuda;
  v.device_index = ptr ? cuda::pointer_device(v.data) : 0;
  if (v.device_index < 0) v.device_index = 0;
  return v;
}

}  // namespace

std::string ArgRef::str() const {
  std::string s = std::string(fn) + ": " + name;
  if (index >= 0) s += "[" + std::to_string(index) + "]";
  return s;
}

void type_error(const ArgRef& at, const std::string& what) {
  throw py::type_error(at.str() + " " + what);
}
void value_error(const ArgRef& at, const std::string& what) {
  throw py::value_error(at.str() + " " + what);
}

ExportHolder::~ExportHolder() {
  for (void* p : managed_) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  }
}

std::string shape_str(const TensorView& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += std::to_string(v.shape[i]) + (v.ndim == 1 || i + 1 < v.ndim ? "," : "");
  return s + ")";
}

TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep) {
  if (obj.is_none()) type_error(at, "is None; expected an array");
  if (py::isinstance<py::array>(obj)) return from_numpy(obj, at, access);
  // torch's __cuda_array_interface__ refuses bfloat16 and requires_grad tensors: DLPack for torch.
  if (!is_torch(obj) && py::hasattr(obj, "__cuda_array_interface__"))
    return from_cuda_array_interface(obj, at, access);
  if (py::hasattr(obj, "__dlpack__")) return from_dlpack(obj, at, keep);
  type_error(at, "is a " + type_name(obj) +
                     "; expected a NumPy array or an array with __dlpack__ (torch, cupy, ...)");
}

std::vector<TensorView> views_of(py::handle seq, const char* fn, const char* name, Access access,
                                 ExportHolder& keep) {
  if (!py::isinstance<py::list>(seq) && !py::isinstance<py::tuple>(seq))
    type_error(ArgRef{fn, name, -1},
               "must be a list or tuple of arrays, got " + type_name(seq));
  // Borrowed items of the list or tuple: no reference traffic per array.
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  std::vector<TensorView> out(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i)
    out[size_t(i)] = view_of(items[i], ArgRef{fn, name, int64_t(i)}, access, keep);
  return out;
}

double scalar_of(py::handle obj, const ArgRef& at, ExportHolder& keep) {
  if (PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr())) return obj.cast<double>();
  TensorView v = view_of(obj, at, Access::read, keep);
  if (v.numel != 1) value_error(at, "must be a number or a 1-element array, got shape " + shape_str(v));
  if (v.device != DeviceKind::cpu) value_error(at, "is on a CUDA device; this call runs on the CPU");
  return scalar_value(v.data, v.dtype);
}

}  // namespace ft::bind

namespace ft::bind {

ScalarArg scalar_arg(py::handle obj, const ArgRef& at, ExportHolder& keep) {
  ScalarArg out;
  if (obj.is_none()) return out;
  out.present = true;
  if (PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr())) {
    out.host = obj.cast<double>();
    return out;
  }
  TensorView v = view_of(obj, at, Access::read, keep);
  if (v.numel != 1) value_error(at, "must be a number or a 1-element array, got shape " + shape_str(v));
  if (v.device == DeviceKind::cpu) {
    out.host = scalar_of(obj, at, keep);
    return out;
  }
  out.on_device = true;
  out.device = cuda::DeviceScalar{v.data, v.dtype};
  out.device_index = v.device_index;
  return out;
}

}  // namespace ft::bind
