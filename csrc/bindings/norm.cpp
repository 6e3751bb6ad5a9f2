// Python bindings of batch norm (forward, backward, statistics, merge, running-stat update).
// Validation and dispatch only: the math is in csrc/math/batch_norm.h, the loops in csrc/cpu
// and csrc/cuda.
// Outputs are allocated by the Python layer (with the caller's array library) and passed in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings/aliasing.h"
#include "bindings/norm_args.h"
#include "cpu/bn_kernels.h"
#include "cuda/bn_kernels.h"

namespace ft::bind {
namespace {

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

// A per-channel vector of x's C channels (bindings/norm_args.h).
ChannelArray channel_array(py::handle obj, const ArgRef& at, Access access, int64_t C,
                           bool channels_last, std::initializer_list<DType> ok, bool optional,
                           ExportHolder& keep) {
  const char* word = channels_last ? " channels (last dimension)" : " channels (dimension 1)";
  return bind::channel_array(obj, at, access, {{C}, "x has " + std::to_string(C) + word}, ok,
                             optional, keep);
}

struct Input {
  TensorView view;
  BnShape shape;
};

Input input_of(py::handle x, const char* fn, const char* name, bool channels_last, Access access,
               ExportHolder& keep) {
  ArgRef at{fn, name, -1};
  Input in{input_view(x, at, access, keep), {}};
  in.shape = layout_of(in.view, channels_last, at);
  return in;
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
  BnForwardArgs a;
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
  a.y = same_as(y, {fn, "y", -1}, in.view, keep);
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
  run_kernel(a, in.view, stream, cpu::active_bn().forward, FT_CUDA_ENTRY(cuda::bn_forward));
}

// Note [given sums]: dx None takes the sums only; sum_dy / sum_dy_xhat / count given compute dx
// from them alone (dweight and dbias None).
void backward(py::handle dy, py::handle x, py::handle weight, py::handle save_mean,
              py::handle save_invstd, py::handle dx, py::handle dweight, py::handle dbias,
              bool channels_last, py::handle stream, py::handle sum_dy, py::handle sum_dy_xhat,
              double count) {
  const char* fn = "batch_norm_backward";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  Input in = input_of(x, fn, "x", channels_last, Access::read, keep);
  const DType d = in.view.dtype;
  const int64_t C = in.shape.channels;
  TensorView g = grad_like(dy, {fn, "dy", -1}, in.view, keep);
  BnBackwardArgs a;
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
  const auto sums = {DType::f32, DType::f64};
  a.given_sum_dy = channel_array(sum_dy, {fn, "sum_dy", -1}, Access::read, C, channels_last, sums, true, keep);
  a.given_sum_dy_xhat = channel_array(sum_dy_xhat, {fn, "sum_dy_xhat", -1}, Access::read, C, channels_last, sums, true, keep);
  if (a.given_sum_dy.present() != a.given_sum_dy_xhat.present())
    value_error({fn, a.given() ? "sum_dy_xhat" : "sum_dy", -1},
                "is None but the other sum is given; give both or neither");
  if (a.given()) {
    if (!std::isfinite(count) || count < double(in.shape.per_channel()))
      value_error({fn, "count", -1}, "must be a finite number of values, at least x's " +
                                         std::to_string(in.shape.per_channel()) + " per channel");
    if (!dweight.is_none() || !dbias.is_none())
      value_error({fn, dweight.is_none() ? "dbias" : "dweight", -1},
                  "must be None with given sums (dx is the only output)");
    a.given_count = count;
  } else if (dx.is_none() && (dweight.is_none() || dbias.is_none())) {
    value_error({fn, dweight.is_none() ? "dweight" : "dbias", -1},
                "is None and so is dx: nothing would be computed");
  }
  if (!dx.is_none() || a.given()) a.dx = same_as(dx, {fn, "dx", -1}, in.view, keep);
  if (!a.given() && (a.weight.present() || !a.dx)) {
    // Without a weight, the sums alone come back in a statistics dtype.
    auto output = [&](py::handle obj, const char* name) {
      const ArgRef at{fn, name, -1};
      return a.weight.present()
                 ? channel_array(obj, at, Access::write, C, channels_last, {a.weight.dtype}, false, keep)
                 : channel_array(obj, at, Access::write, C, channels_last, sums, false, keep);
    };
    a.dweight = output(dweight, "dweight");
    a.dbias = output(dbias, "dbias");
  }
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(g, "dy");
  alias.read(in.view, "x");
  alias.read(a.weight.data, C, a.weight.dtype, "weight");
  alias.read(a.save_mean.data, C, a.save_mean.dtype, "save_mean");
  alias.read(a.save_invstd.data, C, a.save_invstd.dtype, "save_invstd");
  alias.read(a.given_sum_dy.data, C, a.given_sum_dy.dtype, "sum_dy");
  alias.read(a.given_sum_dy_xhat.data, C, a.given_sum_dy_xhat.dtype, "sum_dy_xhat");
  alias.written(a.dx, in.view.numel, d, "dx");
  alias.written(a.dweight.data, C, a.dweight.dtype, "dweight");
  alias.written(a.dbias.data, C, a.dbias.dtype, "dbias");
  alias.check(false);
  run_kernel(a, in.view, stream, cpu::active_bn().backward, FT_CUDA_ENTRY(cuda::bn_backward));
}

int64_t stats(py::handle x, py::handle mean, py::handle var, bool channels_last,
              const char* fn, py::handle stream) {
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  Input in = input_of(x, fn, "x", channels_last, Access::read, keep);
  const int64_t C = in.shape.channels;
  const auto out = {DType::f32, DType::f64};
  BnStatsArgs a;
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
  run_kernel(a, in.view, stream, cpu::active_bn().stats, FT_CUDA_ENTRY(cuda::bn_stats));
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
  BnMergeArgs a;
  ArgRef first{fn, "means", -1};
  input_view(means, first, Access::read, keep);
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
  TensorView rm = input_view(running_mean, at, Access::write, keep);
  if (rm.ndim != 1) value_error(at, "must be 1-d (C,), got shape " + shape_str(rm));
  const int64_t C = rm.shape[0];
  BnRunningArgs a;
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
  run_kernel(a, rm, stream, cpu::active_bn().update_running, FT_CUDA_ENTRY(cuda::bn_update_running));
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
        py::arg("stream").none(true) = py::none(), py::arg("sum_dy").none(true) = py::none(),
        py::arg("sum_dy_xhat").none(true) = py::none(), py::arg("count") = 0.0);
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
