// Argument helpers of the normalization bindings (bindings/norm_args.h).
#include "bindings/norm_args.h"

namespace ft::bind {

void same_device(const TensorView& v, const ArgRef& at, const ExportHolder& keep) {
  if (v.device != keep.device || v.device_index != keep.device_index)
    value_error(at, "is on a different device than x");
#if !defined(FT_WITH_CUDA)
  if (v.device != DeviceKind::cpu)
    value_error(at, "is on a CUDA device, but this build of fusedtrain has no CUDA kernels");
#endif
}

TensorView input_view(py::handle x, const ArgRef& at, Access access, ExportHolder& keep) {
  TensorView v = view_of(x, at, access, keep);
  keep.device = v.device;
  keep.device_index = v.device_index;
  same_device(v, at, keep);
  return v;
}

namespace {
std::string tuple_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}
}  // namespace

ChannelArray channel_array(py::handle obj, const ArgRef& at, Access access, const Extent& extent,
                           std::initializer_list<DType> ok, bool optional, ExportHolder& keep) {
  ChannelArray out;
  if (obj.is_none()) {
    if (optional) return out;
    type_error(at, "is None; expected an array");
  }
  TensorView v = view_of(obj, at, access, keep);
  same_device(v, at, keep);
  bool dtype_ok = false;
  std::string names;
  for (DType d : ok) {
    dtype_ok |= v.dtype == d;
    if (names.find(dtype_name(d)) == std::string::npos)
      names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!dtype_ok) type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + "; expected " + names);
  bool shape_ok = v.ndim == int(extent.shape.size());
  for (int i = 0; shape_ok && i < v.ndim; ++i) shape_ok = v.shape[i] == extent.shape[i];
  if (!shape_ok)
    value_error(at, "has shape " + shape_str(v) + " but " + extent.why + "; expected " +
                        tuple_str(extent.shape));
  out.data = v.data;
  out.dtype = v.dtype;
  return out;
}

void* same_as(py::handle obj, const ArgRef& at, const TensorView& like, ExportHolder& keep) {
  TensorView v = view_of(obj, at, Access::write, keep);
  same_device(v, at, keep);
  if (!v.same_shape(like) || v.dtype != like.dtype)
    value_error(at, "must have the input's shape " + shape_str(like) + " and dtype");
  return v.data;
}

TensorView grad_like(py::handle dy, const ArgRef& at, const TensorView& x, ExportHolder& keep) {
  TensorView g = view_of(dy, at, Access::read, keep);
  same_device(g, at, keep);
  if (g.dtype != x.dtype)
    type_error(at, std::string("has dtype ") + dtype_name(g.dtype) + " but x has " + dtype_name(x.dtype));
  if (!g.same_shape(x))
    value_error(at, "has shape " + shape_str(g) + " but x has shape " + shape_str(x));
  return g;
}

}  // namespace ft::bind
