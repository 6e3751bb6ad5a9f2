// Zero-copy import of caller arrays (see interop.h, Note [import routes]).
#include "bindings/interop.h"

#include <pybind11/numpy.h>

#include <cstring>
#include <deque>

#include "bindings/dlpack_abi.h"
#include "core/half.h"

namespace ft::bind {
namespace {

// ---- layouts ------------------------------------------------------------------------------

enum class Fit { c_order, dense, gapped };

// How an array of shape `v` with these strides (in elements; nullptr: C order) lies in memory.
// Dense layouts copy their strides into `dense`.
Fit classify(const TensorView& v, const int64_t* st, int64_t* dense) {
  if (!st || v.numel <= 1) return Fit::c_order;
  int64_t expect = 1;
  bool c = true;
  for (int i = v.ndim - 1; i >= 0 && c; --i) {
    if (v.shape[i] == 1) continue;  // a unit dimension's stride is never used
    c = st[i] == expect;
    expect *= v.shape[i];
  }
  if (c) return Fit::c_order;
  // Dense iff the dimensions, ordered by stride, tile memory like a C array would.
  int dims[TensorView::kMaxDims];
  int k = 0;
  for (int i = 0; i < v.ndim; ++i) {
    if (v.shape[i] == 1) continue;
    int j = k++;
    for (; j > 0 && st[dims[j - 1]] > st[i]; --j) dims[j] = dims[j - 1];
    dims[j] = i;
  }
  expect = 1;
  for (int j = 0; j < k; ++j) {
    if (st[dims[j]] != expect) return Fit::gapped;
    expect *= v.shape[dims[j]];
  }
  std::memcpy(dense, st, sizeof(int64_t) * size_t(v.ndim));
  return Fit::dense;
}

std::string strides_of(const TensorView& v, const int64_t* st) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += std::to_string(st[i]) + (v.ndim == 1 || i + 1 < v.ndim ? "," : "");
  return s + ")";
}

// Applies the layout rule of the caller: C order always; dense layouts when `layout` is given.
void check_layout(const TensorView& v, const int64_t* st, const ArgRef& at, Layout* layout) {
  int64_t dense[TensorView::kMaxDims];
  const Fit fit = classify(v, st, dense);
  if (fit == Fit::c_order) {
    if (layout) layout->c_order = true;
    return;
  }
  if (!layout) value_error(at, "is not C-contiguous");
  if (fit == Fit::gapped)
    value_error(at, "is not contiguous: its strides " + strides_of(v, st) +
                        " (in elements) leave gaps or overlap; arrays must be dense (C order, "
                        "channels_last or any other order of dimensions)");
  layout->c_order = false;
  std::memcpy(layout->strides, dense, sizeof(int64_t) * size_t(v.ndim));
}

// ---- NumPy --------------------------------------------------------------------------------

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

void dtype_from_numpy(PyObject* descr, const ArgRef& at, TensorView& v) {
  if (!numpy_dtype(descr, &v.dtype))
    type_error(at, "has dtype " + py::str(descr).cast<std::string>() +
                       "; expected float32, float64, float16 or bfloat16");
  if (py::detail::array_descriptor_proxy(descr)->byteorder == '>')
    type_error(at, "is big-endian; expected native byte order");
}

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

// Byte strides -> element strides; a stride that is not a whole number of elements can never be
// dense, so it becomes 0 (which fails the layout check unless its dimension is a unit one).
void element_strides(const TensorView& v, const int64_t* bytes, int64_t* out) {
  const auto size = int64_t(dtype_size(v.dtype));
  for (int i = 0; i < v.ndim; ++i) out[i] = bytes[i] % size ? 0 : bytes[i] / size;
}

TensorView from_numpy(PyObject* obj, const ArgRef& at, Access access, Layout* layout) {
  // Direct struct reads: this runs for every array of every step, thousands per call.
  const auto* a = py::detail::array_proxy(obj);
  TensorView v;
  dtype_from_numpy(a->descr, at, v);
  if (access == Access::write && !(a->flags & kNpyWriteable)) value_error(at, "is read-only");
  if (a->nd > TensorView::kMaxDims) value_error(at, "has more than 16 dimensions");
  v.data = a->data;
  v.ndim = a->nd;
  v.numel = 1;
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = a->dimensions[i];
    v.numel *= v.shape[i];
  }
  if (a->flags & kNpyCContiguous) {
    if (layout) layout->c_order = true;
  } else {
    int64_t bytes[TensorView::kMaxDims], st[TensorView::kMaxDims];
    for (int i = 0; i < v.ndim; ++i) bytes[i] = a->strides[i];
    element_strides(v, bytes, st);
    check_layout(v, st, at, layout);
  }
  return v;
}

// ---- DLPack tensors (exchange API and capsules) ---------------------------------------------

TensorView from_dltensor(const dl::Tensor& t, const ArgRef& at, Layout* layout) {
  TensorView v;
  if (t.dtype.lanes != 1) type_error(at, "has a vector dtype");
  if (t.dtype.code == dl::kFloat && t.dtype.bits == 32) v.dtype = DType::f32;
  else if (t.dtype.code == dl::kFloat && t.dtype.bits == 64) v.dtype = DType::f64;
  else if (t.dtype.code == dl::kFloat && t.dtype.bits == 16) v.dtype = DType::f16;
  else if (t.dtype.code == dl::kBfloat && t.dtype.bits == 16) v.dtype = DType::bf16;
  else
    type_error(at, "has an unsupported dtype (DLPack code " + std::to_string(t.dtype.code) + ", " +
                       std::to_string(t.dtype.bits) + " bits); expected float32, float64, "
                       "float16 or bfloat16");
  if (t.device.type == dl::kCPU) {
    v.device = DeviceKind::cpu;
  } else if (t.device.type == dl::kCUDA || t.device.type == dl::kCUDAManaged) {
    v.device = DeviceKind::cuda;
    v.device_index = t.device.id;
  } else {
    value_error(at, "lives on an unsupported device (DLPack device type " +
                        std::to_string(t.device.type) + ")");
  }
  if (t.ndim > TensorView::kMaxDims) value_error(at, "has more than 16 dimensions");
  v.ndim = t.ndim;
  v.numel = 1;
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = t.shape[i];
    v.numel *= v.shape[i];
  }
  check_layout(v, t.strides, at, layout);
  // A view's storage offset: DLPack producers put it in data or byte_offset.
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  return v;
}

// The pending Python error's message, first line only (C++ producers append stack traces).
std::string take_error_message() {
  py::error_already_set e;
  std::string m = py::str(e.value()).cast<std::string>();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

// ---- routes -------------------------------------------------------------------------------

// subclass: a torch tensor subclass with a __torch_dispatch__ of its own (Note [dispatch subclasses]).
enum class Via : uint8_t { numpy, exchange, cupy, cai, dlpack, subclass, none };

// Note [dispatch subclasses]: a torch.Tensor subclass that overrides __torch_dispatch__ (DTensor,
// FakeTensor, wrapper subclasses) has no memory of its own: its exported data pointer is null, or
// null plus its storage offset (an FSDP2 grad shows 140).  The route is decided once per type,
// so refusing them costs nothing per array.
bool overrides_torch_dispatch(PyObject* type) {
  static PyObject* disabled = [] {
    PyObject* c = PyImport_ImportModule("torch._C");
    PyObject* f = c ? PyObject_GetAttrString(c, "_disabled_torch_dispatch_impl") : nullptr;
    Py_XDECREF(c);
    PyErr_Clear();
    return f;
  }();
  PyObject* own = PyObject_GetAttrString(type, "__torch_dispatch__");
  if (!own) {
    PyErr_Clear();
    return false;
  }
  const bool overrides = disabled && own != disabled;
  Py_DECREF(own);
  return overrides;
}

struct Route {
  PyTypeObject* type;
  Via via;
  bool torch;      // a torch.Tensor (sub)class
  bool check_neg;  // its arrays can carry a lazy negation bit (torch's is_neg()), checked per array
  PyObject* is_neg;  // the type's is_neg (an unbound method, kept alive with the type)
  PyCFunction is_neg_c;  // its C function when it is a no-argument C method (Note [neg check])
  int8_t versioned = -1;  // __dlpack__ takes max_version: -1 not yet known, 0 no, 1 yes
  const dl::ExchangeApi* api;
};

// One per type seen; the types are kept alive.  A deque: references stay valid as it grows.
std::deque<Route> g_routes;
bool g_use_exchange = true;        // _set_exchange_route(False): the __dlpack__ route instead

PyObject* interned(const char* s) { return PyUnicode_InternFromString(s); }

// The newest table of the ABI major we know among those the type exposes (spec name, then the
// name of its drafts), with the non-owning export we call.
const dl::ExchangeApi* exchange_api_of(PyObject* type) {
  for (const char* name : {"__dlpack_c_exchange_api__", "__c_dlpack_exchange_api__"}) {
    PyObject* cap = PyObject_GetAttrString(type, name);
    if (!cap) {
      PyErr_Clear();
      continue;
    }
    void* p = PyCapsule_IsValid(cap, "dlpack_exchange_api")
                  ? PyCapsule_GetPointer(cap, "dlpack_exchange_api") : nullptr;
    // The table outlives the capsule: producers keep it for the life of the process.
    Py_DECREF(cap);
    for (auto* h = static_cast<const dl::ExchangeHeader*>(p); h; h = h->prev_api) {
      if (h->version.major != dl::kMajorVersion) continue;
      auto* api = reinterpret_cast<const dl::ExchangeApi*>(h);
      if (api->dltensor_from_py_object_no_sync) return api;
    }
  }
  return nullptr;
}

// Note [neg check]: every torch tensor costs one is_neg() call (Note [negative views]), a third
// of its import. When the type's is_neg is a C method taking no arguments (torch's own), its C
// function is called directly, as CPython's method descriptor would after checking that the
// object is an instance of the descriptor's class and that no arguments came: the route is per
// type and that type is checked here once, so only the descriptor's per-call checks are saved.
// A subclass that overrides is_neg in Python keeps the general call.
PyCFunction no_argument_c_method(PyObject* method, PyTypeObject* type) {
  if (Py_TYPE(method) != &PyMethodDescr_Type) return nullptr;
  auto* d = reinterpret_cast<PyMethodDescrObject*>(method);
  if ((d->d_method->ml_flags & (METH_VARARGS | METH_FASTCALL | METH_NOARGS | METH_O |
                                METH_KEYWORDS | METH_METHOD)) != METH_NOARGS)
    return nullptr;
  if (!PyType_IsSubtype(type, PyDescr_TYPE(d))) return nullptr;
  return d->d_method->ml_meth;
}

// Whether a class was defined in package `pkg` or one of its modules.
bool module_is(PyObject* cls, const char* pkg) {
  PyObject* mod = PyObject_GetAttrString(cls, "__module__");
  const char* m = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : nullptr;
  const size_t n = std::strlen(pkg);
  const bool in = m && std::strncmp(m, pkg, n) == 0 && (m[n] == '\0' || m[n] == '.');
  Py_XDECREF(mod);
  PyErr_Clear();
  return in;
}

bool type_has(PyObject* type, const char* name) {
  const int r = PyObject_HasAttrString(type, name);
  return r == 1;
}

size_t route_index(PyTypeObject* t) {
  for (size_t i = 0; i < g_routes.size(); ++i)
    if (g_routes[i].type == t) return i;
  PyObject* type = reinterpret_cast<PyObject*>(t);
  Route r{t, Via::none, false, false, nullptr, nullptr, -1, nullptr};
  if (PyType_IsSubtype(t, py::detail::npy_api::get().PyArray_Type_)) {
    r.via = Via::numpy;
    Py_INCREF(type);
    g_routes.push_back(r);
    return g_routes.size() - 1;
  }
  // A torch tensor type is one with a torch class among its bases: a user's subclass of
  // torch.Tensor carries the neg bit as well (Note [negative views]).
  PyObject* mro = t->tp_mro;
  for (Py_ssize_t i = 0; mro && PyTuple_Check(mro) && i < PyTuple_GET_SIZE(mro) && !r.torch; ++i)
    r.torch = module_is(PyTuple_GET_ITEM(mro, i), "torch");
  if (module_is(type, "cupy") && type_has(type, "__cuda_array_interface__")) r.via = Via::cupy;
  if (type_has(type, "__torch_dispatch__") && overrides_torch_dispatch(type)) r.via = Via::subclass;
  else if (g_use_exchange && (r.api = exchange_api_of(type))) r.via = Via::exchange;
  // torch's __cuda_array_interface__ refuses bfloat16 and requires_grad tensors: DLPack for torch.
  else if (r.via == Via::none && !r.torch && type_has(type, "__cuda_array_interface__")) r.via = Via::cai;
  else if (r.via == Via::none && type_has(type, "__dlpack__")) r.via = Via::dlpack;
  // Called unbound on each array: no per-array method lookup.
  if (r.torch) r.is_neg = PyObject_GetAttrString(type, "is_neg");
  PyErr_Clear();
  r.check_neg = r.is_neg != nullptr;
  r.is_neg_c = r.check_neg ? no_argument_c_method(r.is_neg, t) : nullptr;
  Py_INCREF(type);
  g_routes.push_back(r);
  return g_routes.size() - 1;
}

// ---- per-route imports --------------------------------------------------------------------

TensorView from_exchange(PyObject* obj, const Route& r, const ArgRef& at, Layout* layout) {
  dl::Tensor t;
  if (r.api->dltensor_from_py_object_no_sync(obj, &t) != 0)
    type_error(at, "could not be viewed through DLPack: " + take_error_message());
  TensorView v = from_dltensor(t, at, layout);
  if (r.check_neg) {
    // Note [negative views]: torch can mark a tensor "negated" (a lazy neg view such as `.imag`
    // of a conjugated tensor) and a DLTensor has no field for it: writing through the view would
    // store the negation of what the caller reads.
    PyObject* res;
    if (r.is_neg_c) {
      res = r.is_neg_c(obj, nullptr);
    } else {
      PyObject* args[] = {obj};
      res = PyObject_Vectorcall(r.is_neg, args, 1, nullptr);
    }
    if (!res) type_error(at, "could not be checked: " + take_error_message());
    const bool neg = res == Py_True;
    Py_DECREF(res);
    if (neg)
      value_error(at, "is a negated view (torch's neg bit is set); pass a tensor with the bit "
                      "resolved (.resolve_neg())");
  }
  return v;
}

// Note [cached getters]: CuPy's array attributes are C getters of its extension types
// (getset descriptors).  Reading one through PyObject_GetAttr finds the descriptor in the type's
// MRO and calls its getter; a type whose attribute lookup is object's (no __getattribute__ or
// __getattr__ of its own) finds the same descriptor on every read until the type, or one of its
// bases, is modified, which CPython marks by changing the type's version tag. So the getter is
// looked up once per (type, version tag) and called directly: what the lookup would call, without
// the lookup.  Any other kind of attribute (a property a subclass defines, a plain member) takes
// PyObject_GetAttr.
class CachedGetter {
 public:
  explicit CachedGetter(const char* name) : name_(interned(name)) {}
  // A new reference, or nullptr with the error set.
  PyObject* operator()(PyObject* o) {
    PyTypeObject* t = Py_TYPE(o);
    if (t != type_ || t->tp_version_tag != tag_ || tag_ == 0) resolve(t);
    return get_ ? get_(o, closure_) : PyObject_GetAttr(o, name_);
  }

 private:
  void resolve(PyTypeObject* t) {
    Py_INCREF(t);  // kept alive while cached: its address then names no other type
    Py_XDECREF(type_);
    type_ = t;
    get_ = nullptr;
    closure_ = nullptr;
    PyObject* type = reinterpret_cast<PyObject*>(t);
    static PyObject *s_getattribute = interned("__getattribute__"), *s_getattr = interned("__getattr__");
    static PyObject* object_getattribute =
        PyObject_GetAttr(reinterpret_cast<PyObject*>(&PyBaseObject_Type), s_getattribute);
    PyObject* ga = PyObject_GetAttr(type, s_getattribute);
    const bool plain_lookup = ga && ga == object_getattribute && !PyObject_HasAttr(type, s_getattr);
    Py_XDECREF(ga);
    // Reading the attribute on the type gives the descriptor itself; it also (re)assigns the tag.
    PyObject* d = plain_lookup ? PyObject_GetAttr(type, name_) : nullptr;
    PyErr_Clear();
    tag_ = t->tp_version_tag;
    if (d && Py_TYPE(d) == &PyGetSetDescr_Type && PyType_IsSubtype(t, PyDescr_TYPE(d))) {
      PyGetSetDef* g = reinterpret_cast<PyGetSetDescrObject*>(d)->d_getset;
      get_ = g->get;
      closure_ = g->closure;
    }
    Py_XDECREF(d);
  }

  PyObject* name_;
  PyTypeObject* type_ = nullptr;
  unsigned int tag_ = 0;
  getter get_ = nullptr;
  void* closure_ = nullptr;
};

// CuPy arrays: their public attributes, read without building __cuda_array_interface__'s dict.
// False when the object lacks one of them (then the caller takes the interface route).
// Note [cupy contiguity]: CuPy keeps its C-contiguity flag beside the strides (`_c_contiguous`,
// updated with every view and reshape, true as NumPy's is for any layout of at most one
// element); where it is set, the strides are not read: `strides` builds a new tuple at each
// read, 67 of the 230 ns an import took on the 2-core VM.  An array without the flag, or with
// it false, has its strides read and classified as before.
bool from_cupy(PyObject* obj, const ArgRef& at, Layout* layout, TensorView* out) {
  // Note [cached getters]
  static CachedGetter s_data("data"), s_ptr("ptr"), s_device_id("device_id"), s_dtype("dtype"),
      s_shape("shape"), s_strides("strides"), s_c_contiguous("_c_contiguous");
  auto get = [](PyObject* o, CachedGetter& attr) { return py::reinterpret_steal<py::object>(attr(o)); };
  py::object data = get(obj, s_data), dtype = get(obj, s_dtype), shape = get(obj, s_shape);
  py::object c_order = get(obj, s_c_contiguous);
  if (!c_order) PyErr_Clear();
  const bool known_c_order = c_order.ptr() == Py_True;
  py::object strides = known_c_order ? py::object() : get(obj, s_strides);
  py::object ptr = data ? get(data.ptr(), s_ptr) : py::object();
  py::object device = data ? get(data.ptr(), s_device_id) : py::object();
  if (!ptr || !device || !dtype || !shape || !py::isinstance<py::dtype>(dtype) ||
      !PyTuple_Check(shape.ptr()) ||
      (!known_c_order && (!strides || !PyTuple_Check(strides.ptr()) ||
                          PyTuple_GET_SIZE(shape.ptr()) != PyTuple_GET_SIZE(strides.ptr())))) {
    PyErr_Clear();
    return false;
  }
  TensorView v;
  dtype_from_numpy(dtype.ptr(), at, v);
  const Py_ssize_t nd = PyTuple_GET_SIZE(shape.ptr());
  if (nd > TensorView::kMaxDims) value_error(at, "has more than 16 dimensions");
  v.ndim = int(nd);
  v.numel = 1;
  int64_t bytes[TensorView::kMaxDims], st[TensorView::kMaxDims];
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), i));
    if (!known_c_order) bytes[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides.ptr(), i));
    v.numel *= v.shape[i];
  }
  if (PyErr_Occurred()) type_error(at, "has a malformed shape or strides: " + take_error_message());
  if (known_c_order) {
    if (layout) layout->c_order = true;
  } else {
    element_strides(v, bytes, st);
    check_layout(v, st, at, layout);
  }
  v.data = PyLong_AsVoidPtr(ptr.ptr());
  v.device = DeviceKind::cuda;
  v.device_index = int(PyLong_AsLong(device.ptr()));
  if (PyErr_Occurred()) type_error(at, "has a malformed data pointer: " + take_error_message());
  *out = v;
  return true;
}

// __cuda_array_interface__ (v2/v3): shape, typestr, data = (ptr, read_only), strides in bytes.
TensorView from_cuda_array_interface(py::handle obj, const ArgRef& at, Access access, Layout* layout) {
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
  if (d.contains("strides") && !d["strides"].is_none()) {
    py::tuple strides = d["strides"];
    int64_t bytes[TensorView::kMaxDims], st[TensorView::kMaxDims];
    for (int i = 0; i < v.ndim; ++i) bytes[i] = strides[i].cast<int64_t>();
    element_strides(v, bytes, st);
    check_layout(v, st, at, layout);
  } else if (layout) {
    layout->c_order = true;
  }
  v.data = reinterpret_cast<void*>(ptr);
  v.device = DeviceKind::cuda;
  v.device_index = ptr ? cuda::pointer_device(v.data) : 0;
  if (v.device_index < 0) v.device_index = 0;
  return v;
}

// __dlpack__: the general route (and torch's before it had the exchange API).  Asks for a
// versioned capsule first, whose flags say whether the producer lets us write.
TensorView from_dlpack(py::handle obj, Route& r, const ArgRef& at, Access access,
                       ExportHolder& keep, Layout* layout) {
  py::object src = py::reinterpret_borrow<py::object>(obj);
  // A tensor that requires grad refuses to export; its detached alias shares the same memory.
  if (r.torch && src.attr("requires_grad").cast<bool>()) src = src.attr("detach")();
  if (r.check_neg && src.attr("is_neg")().cast<bool>())
    value_error(at, "is a negated view (torch's neg bit is set); pass a tensor with the bit "
                    "resolved (.resolve_neg())");
  py::object fn = src.attr("__dlpack__");
  py::object cap;
  py::dict kw;
  if (keep.cuda_call) kw["stream"] = -1;
  if (r.versioned != 0) {
    try {
      kw["max_version"] = py::make_tuple(dl::kMajorVersion, 0);
      cap = fn(**kw);
      r.versioned = 1;
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError) || r.versioned == 1)
        type_error(at, std::string("could not be exported through __dlpack__: ") + e.what());
      r.versioned = 0;  // a producer that predates DLPack 1.0
      PyDict_DelItemString(kw.ptr(), "max_version");
    }
  }
  if (!cap) {
    try {
      cap = fn(**kw);
    } catch (py::error_already_set& e) {
      type_error(at, std::string("could not be exported through __dlpack__: ") + e.what());
    }
  }
  if (PyCapsule_IsValid(cap.ptr(), "dltensor_versioned")) {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(
        PyCapsule_GetPointer(cap.ptr(), "dltensor_versioned"));
    // Consume it: from here on we own the export and call its deleter (ExportHolder).
    PyCapsule_SetName(cap.ptr(), "used_dltensor_versioned");
    keep.keep(m, true);
    if (m->version.major != dl::kMajorVersion)
      type_error(at, "was exported with DLPack " + std::to_string(m->version.major) +
                         ".x, which this build does not read");
    if (access == Access::write && (m->flags & dl::kFlagReadOnly)) value_error(at, "is read-only");
    return from_dltensor(m->dl_tensor, at, layout);
  }
  if (!PyCapsule_IsValid(cap.ptr(), "dltensor"))
    type_error(at, "__dlpack__ did not return a DLPack capsule");
  auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  PyCapsule_SetName(cap.ptr(), "used_dltensor");
  keep.keep(m);
  return from_dltensor(m->dl_tensor, at, layout);
}

TensorView import_array(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep,
                        Layout* layout) {
  PyObject* o = obj.ptr();
  if (o == Py_None) type_error(at, "is None; expected an array");
  Route& r = g_routes[route_index(Py_TYPE(o))];
  TensorView v;
  switch (r.via) {
    case Via::numpy: v = from_numpy(o, at, access, layout); break;
    case Via::exchange: v = from_exchange(o, r, at, layout); break;
    case Via::cupy:
      if (from_cupy(o, at, layout, &v)) break;
      v = from_cuda_array_interface(obj, at, access, layout);
      break;
    case Via::cai: v = from_cuda_array_interface(obj, at, access, layout); break;
    case Via::dlpack: v = from_dlpack(obj, r, at, access, keep, layout); break;
    case Via::subclass:
      type_error(at, "is a " + type_name(obj) + ", a tensor subclass with no memory of its own "
                     "(for a DTensor, pass its local shard, .to_local(), or a list of DTensors "
                     "only)");
    case Via::none:
      // An instance attribute rather than a type's: the general route.
      if (py::hasattr(obj, "__dlpack__")) {
        v = from_dlpack(obj, r, at, access, keep, layout);
        break;
      }
      type_error(at, "is a " + type_name(obj) +
                         "; expected a NumPy array or an array with __dlpack__ (torch, cupy, ...)");
  }
  // Whatever route: an array with elements at address 0 has no memory a kernel may touch.
  if (v.data == nullptr && v.numel > 0)
    type_error(at, "is a " + type_name(obj) + " with no memory of its own (null data pointer)");
  keep.hold(o);
  return v;
}

}  // namespace

bool same_layout(const Layout& a, const Layout& b, const TensorView& v) {
  if (a.c_order || b.c_order) return a.c_order == b.c_order;
  for (int i = 0; i < v.ndim; ++i)
    if (v.shape[i] != 1 && a.strides[i] != b.strides[i]) return false;
  return true;
}

std::string strides_str(const Layout& l, const TensorView& v) {
  return l.c_order ? std::string("C order") : "strides " + strides_of(v, l.strides);
}

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
  for (const Export& e : managed_) {
    if (e.versioned) {
      auto* m = static_cast<dl::ManagedTensorVersioned*>(e.managed);
      if (m->deleter) m->deleter(m);
    } else {
      auto* m = static_cast<dl::ManagedTensor*>(e.managed);
      if (m->deleter) m->deleter(m);
    }
  }
  for (PyObject* o : objects_) Py_DECREF(o);
}

std::string shape_str(const TensorView& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += std::to_string(v.shape[i]) + (v.ndim == 1 || i + 1 < v.ndim ? "," : "");
  return s + ")";
}

TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep) {
  return import_array(obj, at, access, keep, nullptr);
}

TensorView view_of(py::handle obj, const ArgRef& at, Access access, ExportHolder& keep,
                   Layout* layout) {
  return import_array(obj, at, access, keep, layout);
}

PyObject** list_items(py::handle seq, const char* fn, const char* name, Py_ssize_t* n) {
  if (!PyList_Check(seq.ptr()) && !PyTuple_Check(seq.ptr()))
    type_error(ArgRef{fn, name, -1}, "must be a list or tuple of arrays, got " + type_name(seq));
  *n = PySequence_Fast_GET_SIZE(seq.ptr());
  return PySequence_Fast_ITEMS(seq.ptr());
}

std::vector<TensorView> views_of(py::handle seq, const char* fn, const char* name, Access access,
                                 ExportHolder& keep) {
  Py_ssize_t n = 0;
  PyObject** items = list_items(seq, fn, name, &n);
  std::vector<TensorView> out(static_cast<size_t>(n));
  Layout layout;
  for (Py_ssize_t i = 0; i < n; ++i)
    out[size_t(i)] = import_array(items[i], ArgRef{fn, name, int64_t(i)}, access, keep, &layout);
  return out;
}

double scalar_of(py::handle obj, const ArgRef& at, ExportHolder& keep) {
  if (PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr())) return obj.cast<double>();
  TensorView v = view_of(obj, at, Access::read, keep);
  if (v.numel != 1) value_error(at, "must be a number or a 1-element array, got shape " + shape_str(v));
  if (v.device != DeviceKind::cpu) value_error(at, "is on a CUDA device; this call runs on the CPU");
  return scalar_value(v.data, v.dtype);
}

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
    out.host = scalar_value(v.data, v.dtype);
    return out;
  }
  out.on_device = true;
  out.device = cuda::DeviceScalar{v.data, v.dtype};
  out.device_index = v.device_index;
  return out;
}

py::object framework_stream(py::handle obj) {
  if (obj.is_none()) return py::none();
  const Route& r = g_routes[route_index(Py_TYPE(obj.ptr()))];
  if (r.via != Via::exchange || !r.api->current_work_stream) return py::none();
  dl::Tensor t;
  if (r.api->dltensor_from_py_object_no_sync(obj.ptr(), &t) != 0) {
    PyErr_Clear();
    return py::none();
  }
  if (t.device.type != dl::kCUDA) return py::none();
  void* stream = nullptr;
  if (r.api->current_work_stream(t.device.type, t.device.id, &stream) != 0) {
    PyErr_Clear();
    return py::none();
  }
  return py::int_(reinterpret_cast<intptr_t>(stream));
}

// Introspection for tests and the import benchmark: the views fusedtrain takes of a list.
void init_interop(py::module_& m) {
  m.def(
      "_import_views",
      [](py::handle arrays, bool write, bool describe) -> py::object {
        ExportHolder keep;
        Py_ssize_t n = 0;
        PyObject** items = list_items(arrays, "_import_views", "arrays", &n);
        py::list out;
        Layout layout;
        for (Py_ssize_t i = 0; i < n; ++i) {
          const TensorView v = import_array(items[i], ArgRef{"_import_views", "arrays", int64_t(i)},
                                            write ? Access::write : Access::read, keep, &layout);
          if (!describe) continue;
          py::tuple shape(v.ndim);
          for (int d = 0; d < v.ndim; ++d) shape[size_t(d)] = v.shape[d];
          py::object strides = py::none();
          if (!layout.c_order) {
            py::tuple s(v.ndim);
            for (int d = 0; d < v.ndim; ++d) s[size_t(d)] = layout.strides[d];
            strides = s;
          }
          out.append(py::make_tuple(reinterpret_cast<uintptr_t>(v.data), dtype_name(v.dtype),
                                    v.device == DeviceKind::cpu ? "cpu" : "cuda", v.device_index,
                                    shape, strides));
        }
        return describe ? py::object(out) : py::object(py::int_(n));
      },
      py::arg("arrays"), py::arg("write") = true, py::arg("describe") = true,
      "Imports every array of a list as a kernel would (validated, zero copy) and returns "
      "(data pointer, dtype, device, device index, shape, strides or None for C order) each, or "
      "their count when describe=False.");
  m.def(
      "_set_exchange_route",
      [](bool enabled) {
        g_use_exchange = enabled;
        for (const Route& r : g_routes) {
          Py_XDECREF(r.is_neg);
          Py_DECREF(reinterpret_cast<PyObject*>(r.type));
        }
        g_routes.clear();
      },
      py::arg("enabled"),
      "Whether types exposing DLPack's C exchange API are imported through it (default) or "
      "through __dlpack__; for tests and benchmarks.");
  m.def("_framework_stream", &framework_stream, py::arg("array"),
        "The current CUDA stream the array's framework reports through DLPack's exchange API, "
        "or None.");
}

}  // namespace ft::bind
