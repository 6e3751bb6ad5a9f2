// Argument helpers of the normalization bindings (bindings/norm_args.h).
#include "bindings/norm_args.h"

#include "bindings/aliasing.h"

namespace ft::bind {

namespace {
std::string tuple_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}
}  // namespace

void NormCall::same_device(const TensorView& v, const char* name) const {
  if (v.device != keep.device || v.device_index != keep.device_index)
    value_error(at(name), "is on a different device than x");
#if !defined(FT_WITH_CUDA)
  if (v.device != DeviceKind::cpu)
    value_error(at(name), "is on a CUDA device, but this build of fusedtrain has no CUDA kernels");
#endif
}

void NormCall::add(const void* data, int64_t numel, DType dtype, const char* name, Access access) {
  if (n_ == kMaxArrays) throw std::logic_error("NormCall: more arrays than kMaxArrays");
  arrays_[n_++] = Entry{data, numel, dtype, name, access};
}

TensorView NormCall::input(py::handle x, const char* name, Access access) {
  TensorView v = view_of(x, at(name), access, keep);
  keep.device = v.device;
  keep.device_index = v.device_index;
  same_device(v, name);
  add(v.data, v.numel, v.dtype, name, access);
  return v;
}

TensorView NormCall::view(py::handle obj, const char* name, Access access) {
  TensorView v = view_of(obj, at(name), access, keep);
  same_device(v, name);
  add(v.data, v.numel, v.dtype, name, access);
  return v;
}

ChannelArray NormCall::channels(py::handle obj, const char* name, Access access,
                                const Extent& extent, std::initializer_list<DType> ok,
                                bool optional) {
  ChannelArray out;
  if (obj.is_none()) {
    if (optional) return out;
    type_error(at(name), "is None; expected an array");
  }
  TensorView v = view_of(obj, at(name), access, keep);
  same_device(v, name);
  bool dtype_ok = false;
  std::string names;
  for (DType d : ok) {
    dtype_ok |= v.dtype == d;
    if (names.find(dtype_name(d)) == std::string::npos)
      names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!dtype_ok) type_error(at(name), std::string("has dtype ") + dtype_name(v.dtype) + "; expected " + names);
  bool shape_ok = v.ndim == int(extent.shape.size());
  for (int i = 0; shape_ok && i < v.ndim; ++i) shape_ok = v.shape[i] == extent.shape[i];
  if (!shape_ok)
    value_error(at(name), "has shape " + shape_str(v) + " but " + extent.why + "; expected " +
                              tuple_str(extent.shape));
  add(v.data, v.numel, v.dtype, name, access);
  out.data = v.data;
  out.dtype = v.dtype;
  return out;
}

void NormCall::running_stats(py::handle mean, py::handle var, bool update, const Extent& extent,
                             std::initializer_list<DType> ok, const char* why_required,
                             ChannelArray& mean_out, ChannelArray& var_out) {
  const Access access = update ? Access::write : Access::read;
  mean_out = channels(mean, "running_mean", access, extent, ok, true);
  var_out = channels(var, "running_var", access, extent, ok, true);
  if (mean_out.present() != var_out.present())
    value_error(at(mean_out.present() ? "running_var" : "running_mean"),
                "is None but its partner is not; pass both running_mean and running_var or neither");
  if (!update && !mean_out.present())
    value_error(at("running_mean"), std::string("is None; ") + why_required);
}

void* NormCall::output(py::handle obj, const char* name, const TensorView& like) {
  TensorView v = view_of(obj, at(name), Access::write, keep);
  same_device(v, name);
  if (!v.same_shape(like) || v.dtype != like.dtype)
    value_error(at(name), "must have the input's shape " + shape_str(like) + " and dtype");
  add(v.data, v.numel, v.dtype, name, Access::write);
  return v.data;
}

TensorView NormCall::grad(py::handle dy, const TensorView& x) {
  const ArgRef where = at("dy");
  TensorView g = view_of(dy, where, Access::read, keep);
  same_device(g, "dy");
  if (g.dtype != x.dtype)
    type_error(where, std::string("has dtype ") + dtype_name(g.dtype) + " but x has " + dtype_name(x.dtype));
  if (!g.same_shape(x))
    value_error(where, "has shape " + shape_str(g) + " but x has shape " + shape_str(x));
  add(g.data, g.numel, g.dtype, "dy", Access::read);
  return g;
}

void NormCall::check() {
  Aliasing alias(fn);
  for (int i = 0; i < n_; ++i) {
    const Entry& e = arrays_[i];
    if (e.access == Access::write) alias.written(e.data, e.numel, e.dtype, e.name);
    else alias.read(e.data, e.numel, e.dtype, e.name);
  }
  alias.check(false);
}

}  // namespace ft::bind
