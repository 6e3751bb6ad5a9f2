// Python bindings of batch norm (forward, backward, statistics, merge, running-stat update).
// Validation and dispatch only: the math is in csrc/math/batch_norm.h, the loops in csrc/cpu
// and csrc/cuda.
// Outputs are allocated by the Python layer (with the caller's array library) and passed in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/aliasing.h"
#include "bindings/device_guard.h"
#include "bindings/gil.h"
#include "bindings/interop.h"
#include "cpu/bn_kernels.h"
#include "cuda/bn_kernels.h"

namespace ft::bind {
namespace {

using cpu::BnShape;
using cpu::ChannelArray;


// Every array of a call lives where x does (keep.device, set by input_of).
void same_device(const TensorView& v, const ArgRef& at, const ExportHolder& keep) {
  if (v.device != keep.device || v.device_index != keep.device_index)
    value_error(at, "is on a different device than x");
#if !defined(FT_WITH_CUDA)
  if (v.device != DeviceKind::cpu)
    value_error(at, "is on a CUDA device, but this build of fusedtrain has no CUDA kernels");
#endif
}

// x as (outer, C, inner); `x` names the argument in errors.
BnShape layout_of(const TensorView& x, bool channels_last, const ArgRef& at) {
  if (x.ndim < 2)
    value_error(at, "must have at least 2 dimensions (N, C, ...), got shape " + shape_str(x));
  BnShape s;
  if (channels_last) {
    s.channels = x.shape[x.ndim - 1];
    s.outer = 1;
    for (int i = 0; i < x.ndim - 1; ++i) s.outer *= x.shape[i];
    s.inner = 1;
  } else {
    s.channels = x.shape[1];
    s.outer = x.shape[0];
    s.inner = 1;
    for (int i = 2; i < x.ndim; ++i) s.inner *= x.shape[i];
  }
  if (s.channels < 1) value_error(at, "has no channels, shape " + shape_str(x));
  // Note [empty batch norm] (csrc/cpu/bn_kernels.cpp): every backend sees an input without
  // values per channel as (0, C, 1), never as N rows of inner == 0.
  if (s.per_channel() == 0) {
    s.outer = 0;
    s.inner = 1;
  }
  return s;
}

const char* channel_word(bool channels_last) {
  return channels_last ? " channels (last dimension)" : " channels (dimension 1)";
}

// A per-channel vector: None (when allowed), or a 1-d array of C values whose dtype is one of
// `ok` (the input's dtype or float32 for parameters; exact dtypes for outputs).
ChannelArray channel_array(py::handle obj, const ArgRef& at, Access access, int64_t C,
                           bool channels_last, std::initializer_list<DType> ok, bool optional,
                           ExportHolder& keep) {
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
  if (v.ndim != 1 || v.shape[0] != C)
    value_error(at, "has shape " + shape_str(v) + " but x has " + std::to_string(C) +
                        channel_word(channels_last) + "; expected (" + std::to_string(C) + ",)");
  out.data = v.data;
  out.dtype = v.dtype;
  return out;
}

struct Input {
  TensorView view;
  BnShape shape;
};

Input input_of(py::handle x, const char* fn, const char* name, bool channels_last, Access access,
               ExportHolder& keep) {
  ArgRef at{fn, name, -1};
  Input in{view_of(x, at, access, keep), {}};
  keep.device = in.view.device;
  keep.device_index = in.view.device_index;
  same_device(in.view, at, keep);
  in.shape = layout_of(in.view, channels_last, at);
  return in;
}

// An output the Python layer allocated: same shape and dtype as `like`.
void* same_as(py::handle obj, const char* fn, const char* name, const Input& like,
              ExportHolder& keep) {
  ArgRef at{fn, name, -1};
  TensorView v = view_of(obj, at, Access::write, keep);
  same_device(v, at, keep);
  if (!v.same_shape(like.view) || v.dtype != like.view.dtype)
    value_error(at, "must have the input's shape " + shape_str(like.view) + " and dtype");
  return v.data;
}

DType stats_dtype(DType d) { return compute_dtype(d); }

void forward(py::handle x, py::handle weight, py::handle bias, py::handle running_mean,
             py::handle running_var, py::handle y, py::handle save_mean, py::handle save_invstd,
             bool training, double momentum, double eps, bool channels_last, py::handle stream) {
  const char* fn = "batch_norm_forward";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  Input in = input_of(x, fn, "x", channels_last, Access::read, keep);
  const DType d = in.view.dtype;
  const int64_t C = in.shape.channels;
  cpu::BnForwardArgs a;
  a.x = in.view.data;
  a.dtype = d;
  a.shape = in.shape;
  a.training = training;
  a.momentum = momentum;
  a.eps = eps;
  const auto param = {d, DType::f32};
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, C, channels_last, param, true, keep);
  a.bias = channel_array(bias, {fn, "bias", -1}, Access::read, C, channels_last, param, true, keep);
  a.running_mean = channel_array(running_mean, {fn, "running_mean", -1},
                                 training ? Access::write : Access::read, C, channels_last, param, true, keep);
  a.running_var = channel_array(running_var, {fn, "running_var", -1},
                                training ? Access::write : Access::read, C, channels_last, param, true, keep);
  if (a.running_mean.present() != a.running_var.present())
    value_error({fn, a.running_mean.present() ? "running_var" : "running_mean", -1},
                "is None but its partner is not; pass both running_mean and running_var or neither");
  if (!training && !a.running_mean.present())
    value_error({fn, "running_mean", -1},
                "is None; evaluation mode (training=False) normalizes with the running statistics");
  const int64_t M = in.shape.per_channel();
  if (training && M <= 1)
    value_error({fn, "x", -1}, "has " + std::to_string(M) + " value(s) per channel (shape " +
                                   shape_str(in.view) + "); training needs more than 1");
  a.y = same_as(y, fn, "y", in, keep);
  a.save_mean = channel_array(save_mean, {fn, "save_mean", -1}, Access::write, C, channels_last,
                              {stats_dtype(d)}, false, keep);
  a.save_invstd = channel_array(save_invstd, {fn, "save_invstd", -1}, Access::write, C,
                                channels_last, {stats_dtype(d)}, false, keep);
  Aliasing alias(fn);  // Note [aliasing]; a channel's weight is read after its running stats are written
  alias.read(in.view, "x");
  alias.read(a.weight.data, C, a.weight.dtype, "weight");
  alias.read(a.bias.data, C, a.bias.dtype, "bias");
  for (auto [arr, name] : {std::pair{a.running_mean, "running_mean"}, {a.running_var, "running_var"}}) {
    if (training) alias.written(arr.data, C, arr.dtype, name);
    else alias.read(arr.data, C, arr.dtype, name);
  }
  alias.written(a.y, in.view.numel, d, "y");
  alias.written(a.save_mean.data, C, a.save_mean.dtype, "save_mean");
  alias.written(a.save_invstd.data, C, a.save_invstd.dtype, "save_invstd");
  alias.check(false);
  const cuda::Stream st = stream_of(stream);  // read before the GIL goes
  ReleaseGil nogil;
  if (in.view.device == DeviceKind::cpu) return cpu::active_bn().forward(a);
#if defined(FT_WITH_CUDA)
  DeviceGuard guard(in.view.device_index);
  cuda::bn_forward(a, st);
#endif
}

void backward(py::handle dy, py::handle x, py::handle weight, py::handle save_mean,
              py::handle save_invstd, py::handle dx, py::handle dweight, py::handle dbias,
              bool channels_last, py::handle stream) {
  const char* fn = "batch_norm_backward";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  Input in = input_of(x, fn, "x", channels_last, Access::read, keep);
  const DType d = in.view.dtype;
  const int64_t C = in.shape.channels;
  ArgRef dy_at{fn, "dy", -1};
  TensorView g = view_of(dy, dy_at, Access::read, keep);
  same_device(g, dy_at, keep);
  if (g.dtype != d)
    type_error(dy_at, std::string("has dtype ") + dtype_name(g.dtype) + " but x has " + dtype_name(d));
  if (!g.same_shape(in.view))
    value_error(dy_at, "has shape " + shape_str(g) + " but x has shape " + shape_str(in.view));
  cpu::BnBackwardArgs a;
  a.dy = g.data;
  a.x = in.view.data;
  a.dtype = d;
  a.shape = in.shape;
  const auto param = {d, DType::f32};
  const auto any = {DType::f32, DType::f64, DType::f16, DType::bf16};
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, C, channels_last, param, true, keep);
  a.save_mean = channel_array(save_mean, {fn, "save_mean", -1}, Access::read, C, channels_last, any, false, keep);
  a.save_invstd = channel_array(save_invstd, {fn, "save_invstd", -1}, Access::read, C, channels_last, any, false, keep);
  if (in.shape.per_channel() == 0) value_error({fn, "x", -1}, "has no values per channel");
  a.dx = same_as(dx, fn, "dx", in, keep);
  if (a.weight.present()) {
    a.dweight = channel_array(dweight, {fn, "dweight", -1}, Access::write, C, channels_last, {a.weight.dtype}, false, keep);
    a.dbias = channel_array(dbias, {fn, "dbias", -1}, Access::write, C, channels_last, {a.weight.dtype}, false, keep);
  }
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(g, "dy");
  alias.read(in.view, "x");
  alias.read(a.weight.data, C, a.weight.dtype, "weight");
  alias.read(a.save_mean.data, C, a.save_mean.dtype, "save_mean");
  alias.read(a.save_invstd.data, C, a.save_invstd.dtype, "save_invstd");
  alias.written(a.dx, in.view.numel, d, "dx");
  alias.written(a.dweight.data, C, a.dweight.dtype, "dweight");
  alias.written(a.dbias.data, C, a.dbias.dtype, "dbias");
  alias.check(false);
  const cuda::Stream st = stream_of(stream);  // read before the GIL goes
  ReleaseGil nogil;
  if (in.view.device == DeviceKind::cpu) return cpu::active_bn().backward(a);
#if defined(FT_WITH_CUDA)
  DeviceGuard guard(in.view.device_index);
  cuda::bn_backward(a, st);
#endif
}

int64_t stats(py::handle x, py::handle mean, py::handle var, bool channels_last,
              const char* fn, py::handle stream) {
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  Input in = input_of(x, fn, "x", channels_last, Access::read, keep);
  const int64_t C = in.shape.channels;
  const auto out = {DType::f32, DType::f64};
  cpu::BnStatsArgs a;
  a.x = in.view.data;
  a.dtype = in.view.dtype;
  a.shape = in.shape;
  a.mean = channel_array(mean, {fn, "mean", -1}, Access::write, C, channels_last, out, false, keep);
  a.var = channel_array(var, {fn, "var", -1}, Access::write, C, channels_last, out, false, keep);
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(in.view, "x");
  alias.written(a.mean.data, C, a.mean.dtype, "mean");
  alias.written(a.var.data, C, a.var.dtype, "var");
  alias.check(false);
  {
    const cuda::Stream st = stream_of(stream);  // read before the GIL goes
    ReleaseGil nogil;
    if (in.view.device == DeviceKind::cpu) {
      cpu::active_bn().stats(a);
    } else {
#if defined(FT_WITH_CUDA)
      DeviceGuard guard(in.view.device_index);
      cuda::bn_stats(a, st);
#endif
    }
  }
  return in.shape.per_channel();
}

// (K, C) arrays of per-row statistics.
ChannelArray rows_of(py::handle obj, const char* fn, const char* name, int64_t* K, int64_t* C,
                     ExportHolder& keep) {
  ArgRef at{fn, name, -1};
  TensorView v = view_of(obj, at, Access::read, keep);
  same_device(v, at, keep);
  if (v.ndim != 2) value_error(at, "must be 2-d (K, C), got shape " + shape_str(v));
  if (*K >= 0 && (v.shape[0] != *K || v.shape[1] != *C))
    value_error(at, "has shape " + shape_str(v) + " but means has shape (" + std::to_string(*K) +
                        ", " + std::to_string(*C) + ")");
  *K = v.shape[0];
  *C = v.shape[1];
  return ChannelArray{v.data, v.dtype};
}

void merge_stats(py::handle means, py::handle vars, const std::vector<double>& counts,
                 py::handle mean, py::handle var) {
  const char* fn = "merge_stats";
  ExportHolder keep;
  int64_t K = -1, C = -1;
  cpu::BnMergeArgs a;
  ArgRef first{fn, "means", -1};
  TensorView mv = view_of(means, first, Access::read, keep);
  keep.device = mv.device;
  keep.device_index = mv.device_index;
  a.means = rows_of(means, fn, "means", &K, &C, keep);
  a.vars = rows_of(vars, fn, "vars", &K, &C, keep);
  if (int64_t(counts.size()) != K)
    value_error({fn, "counts", -1}, "has " + std::to_string(counts.size()) +
                                        " entries but means has " + std::to_string(K) + " rows");
  a.counts = counts;
  a.channels = C;
  const auto out = {DType::f32, DType::f64};
  a.mean = channel_array(mean, {fn, "mean", -1}, Access::write, C, false, out, false, keep);
  a.var = channel_array(var, {fn, "var", -1}, Access::write, C, false, out, false, keep);
  if (keep.device != DeviceKind::cpu)
    value_error({fn, "means", -1}, "is on a CUDA device; merge_stats runs on the host (the "
                                  "inputs are K x C statistics: move them with .cpu())");
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(a.means.data, K * C, a.means.dtype, "means");
  alias.read(a.vars.data, K * C, a.vars.dtype, "vars");
  alias.written(a.mean.data, C, a.mean.dtype, "mean");
  alias.written(a.var.data, C, a.var.dtype, "var");
  alias.check(false);
  ReleaseGil nogil;
  cpu::active_bn().merge(a);
}

void update_running_stats(py::handle running_mean, py::handle running_var, py::handle mean,
                          py::handle var, double count, double momentum, py::handle stream) {
  const char* fn = "update_running_stats_";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  ArgRef at{fn, "running_mean", -1};
  TensorView rm = view_of(running_mean, at, Access::write, keep);
  keep.device = rm.device;
  keep.device_index = rm.device_index;
  same_device(rm, at, keep);
  if (rm.ndim != 1) value_error(at, "must be 1-d (C,), got shape " + shape_str(rm));
  const int64_t C = rm.shape[0];
  cpu::BnRunningArgs a;
  a.channels = C;
  a.count = count;
  a.momentum = momentum;
  a.running_mean = ChannelArray{rm.data, rm.dtype};
  auto vec = [&](py::handle h, const char* name, Access acc) {
    ArgRef ref{fn, name, -1};
    TensorView v = view_of(h, ref, acc, keep);
    same_device(v, ref, keep);
    if (v.ndim != 1 || v.shape[0] != C)
      value_error(ref, "has shape " + shape_str(v) + " but running_mean has shape " + shape_str(rm));
    return ChannelArray{v.data, v.dtype};
  };
  a.running_var = vec(running_var, "running_var", Access::write);
  a.mean = vec(mean, "mean", Access::read);
  a.var = vec(var, "var", Access::read);
  Aliasing alias(fn);  // Note [aliasing]
  alias.written(rm, "running_mean");
  alias.written(a.running_var.data, C, a.running_var.dtype, "running_var");
  alias.read(a.mean.data, C, a.mean.dtype, "mean");
  alias.read(a.var.data, C, a.var.dtype, "var");
  alias.check(false);
  const cuda::Stream st = stream_of(stream);  // read before the GIL goes
  ReleaseGil nogil;
  if (rm.device == DeviceKind::cpu) return cpu::active_bn().update_running(a);
#if defined(FT_WITH_CUDA)
  DeviceGuard guard(rm.device_index);
  cuda::bn_update_running(a, st);
#endif
}

}  // namespace

void init_norm(py::module_& m) {
  m.def("bn_forward", &forward, py::arg("x"), py::arg("weight").none(true),
        py::arg("bias").none(true), py::arg("running_mean").none(true),
        py::arg("running_var").none(true), py::arg("y"), py::arg("save_mean"),
        py::arg("save_invstd"), py::arg("training"), py::arg("momentum"), py::arg("eps"),
        py::arg("channels_last"), py::arg("stream").none(true) = py::none());
  m.def("bn_backward", &backward, py::arg("dy"), py::arg("x"), py::arg("weight").none(true),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("dx"),
        py::arg("dweight").none(true), py::arg("dbias").none(true), py::arg("channels_last"),
        py::arg("stream").none(true) = py::none());
  m.def(
      "bn_stats",
      [](py::handle x, py::handle mean, py::handle var, bool channels_last, const std::string& fn,
         py::handle stream) { return stats(x, mean, var, channels_last, fn.c_str(), stream); },
      py::arg("x"), py::arg("mean"), py::arg("var"), py::arg("channels_last"),
      py::arg("fn") = std::string("batch_norm_stats"), py::arg("stream").none(true) = py::none());
  m.def("bn_merge_stats", &merge_stats, py::arg("means"), py::arg("vars"), py::arg("counts"),
        py::arg("mean"), py::arg("var"));
  m.def("bn_update_running_stats", &update_running_stats, py::arg("running_mean"),
        py::arg("running_var"), py::arg("mean"), py::arg("var"), py::arg("count"),
        py::arg("momentum"), py::arg("stream").none(true) = py::none());
}

}  // namespace ft::bind
