// Python bindings of batch norm (forward, backward, statistics, merge, running-stat update).
// Validation and dispatch only: the math is in csrc/math/batch_norm.h, the loops in csrc/cpu
// and csrc/cuda.
// Outputs are allocated by the Python layer (with the caller's array library) and passed in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings/norm_args.h"
#include "cpu/bn_kernels.h"
#include "cuda/normalization_kernels.h"

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

// A per-channel vector of x's C channels.
Extent channels_of(int64_t C, bool channels_last) {
  const char* word = channels_last ? " channels (last dimension)" : " channels (dimension 1)";
  return {{C}, "x has " + std::to_string(C) + word};
}

struct Input {
  TensorView view;
  BnShape shape;
};

Input input_of(NormCall& call, py::handle x, bool channels_last) {
  Input in{call.input(x, "x", Access::read), {}};
  in.shape = layout_of(in.view, channels_last, call.at("x"));
  return in;
}

DType stats_dtype(DType d) { return compute_dtype(d); }

void forward(py::handle x, py::handle weight, py::handle bias, py::handle running_mean,
             py::handle running_var, py::handle y, py::handle save_mean, py::handle save_invstd,
             bool training, double momentum, double eps, bool channels_last, py::handle stream) {
  NormCall call("batch_norm_forward", stream);
  Input in = input_of(call, x, channels_last);
  const DType d = in.view.dtype;
  const Extent C = channels_of(in.shape.channels, channels_last);
  BnForwardArgs a;
  a.x = in.view.data;
  a.dtype = d;
  a.shape = in.shape;
  a.training = training;
  a.momentum = momentum;
  a.eps = eps;
  const auto param = {d, DType::f32};
  a.weight = call.channels(weight, "weight", Access::read, C, param, true);
  a.bias = call.channels(bias, "bias", Access::read, C, param, true);
  call.running_stats(running_mean, running_var, training, C, param,
                     "evaluation mode (training=False) normalizes with the running statistics",
                     a.running_mean, a.running_var);
  const int64_t M = in.shape.per_channel();
  if (training && M == 1)
    value_error(call.at("x"), "has 1 value per channel (shape " + shape_str(in.view) +
                                  "); training needs more than 1, or none");
  // Note [empty training batch]: a batch without values normalizes nothing and, as torch's batch
  // norm, leaves the running statistics as they are (the kernels never see them); its saved
  // statistics are those of no values, mean 0 and variance 0 (batch_norm_stats'), so save_invstd
  // is 1 / sqrt(eps), and its backward gives zero dweight / dbias (sums over nothing).
  if (training && M == 0) a.running_mean = a.running_var = ChannelArray{};
  a.y = call.output(y, "y", in.view);
  a.save_mean = call.channels(save_mean, "save_mean", Access::write, C, {stats_dtype(d)}, false);
  a.save_invstd = call.channels(save_invstd, "save_invstd", Access::write, C, {stats_dtype(d)}, false);
  call.run(a, in.view, cpu::active_bn().forward, FT_CUDA_ENTRY(cuda::bn_forward));
}

// Note [given sums]: dx None takes the sums only; sum_dy / sum_dy_xhat / count given compute dx
// from them alone (dweight and dbias None).
void backward(py::handle dy, py::handle x, py::handle weight, py::handle save_mean,
              py::handle save_invstd, py::handle dx, py::handle dweight, py::handle dbias,
              bool channels_last, py::handle stream, py::handle sum_dy, py::handle sum_dy_xhat,
              double count) {
  NormCall call("batch_norm_backward", stream);
  Input in = input_of(call, x, channels_last);
  const DType d = in.view.dtype;
  const Extent C = channels_of(in.shape.channels, channels_last);
  BnBackwardArgs a;
  a.dy = call.grad(dy, in.view).data;
  a.x = in.view.data;
  a.dtype = d;
  a.shape = in.shape;
  const auto param = {d, DType::f32};
  const auto any = {DType::f32, DType::f64, DType::f16, DType::bf16};
  a.weight = call.channels(weight, "weight", Access::read, C, param, true);
  a.save_mean = call.channels(save_mean, "save_mean", Access::read, C, any, false);
  a.save_invstd = call.channels(save_invstd, "save_invstd", Access::read, C, any, false);
  const auto sums = {DType::f32, DType::f64};
  a.given_sum_dy = call.channels(sum_dy, "sum_dy", Access::read, C, sums, true);
  a.given_sum_dy_xhat = call.channels(sum_dy_xhat, "sum_dy_xhat", Access::read, C, sums, true);
  if (a.given_sum_dy.present() != a.given_sum_dy_xhat.present())
    value_error(call.at(a.given() ? "sum_dy_xhat" : "sum_dy"),
                "is None but the other sum is given; give both or neither");
  if (a.given()) {
    if (!std::isfinite(count) || count < double(in.shape.per_channel()))
      value_error(call.at("count"), "must be a finite number of values, at least x's " +
                                        std::to_string(in.shape.per_channel()) + " per channel");
    if (!dweight.is_none() || !dbias.is_none())
      value_error(call.at(dweight.is_none() ? "dbias" : "dweight"),
                  "must be None with given sums (dx is the only output)");
    a.given_count = count;
  } else if (dx.is_none() && (dweight.is_none() || dbias.is_none())) {
    value_error(call.at(dweight.is_none() ? "dweight" : "dbias"),
                "is None and so is dx: nothing would be computed");
  }
  if (!dx.is_none() || a.given()) a.dx = call.output(dx, "dx", in.view);
  if (!a.given() && (a.weight.present() || !a.dx)) {
    // Without a weight, the sums alone come back in a statistics dtype.
    const std::initializer_list<DType> out_dtype = {a.weight.present() ? a.weight.dtype : DType::f32};
    const auto& ok = a.weight.present() ? out_dtype : sums;
    a.dweight = call.channels(dweight, "dweight", Access::write, C, ok, false);
    a.dbias = call.channels(dbias, "dbias", Access::write, C, ok, false);
  }
  call.run(a, in.view, cpu::active_bn().backward, FT_CUDA_ENTRY(cuda::bn_backward));
}

int64_t stats(py::handle x, py::handle mean, py::handle var, bool channels_last,
              const char* fn, py::handle stream) {
  NormCall call(fn, stream);
  Input in = input_of(call, x, channels_last);
  const Extent C = channels_of(in.shape.channels, channels_last);
  const auto out = {DType::f32, DType::f64};
  BnStatsArgs a;
  a.x = in.view.data;
  a.dtype = in.view.dtype;
  a.shape = in.shape;
  a.mean = call.channels(mean, "mean", Access::write, C, out, false);
  a.var = call.channels(var, "var", Access::write, C, out, false);
  call.run(a, in.view, cpu::active_bn().stats, FT_CUDA_ENTRY(cuda::bn_stats));
  return in.shape.per_channel();
}

// (K, C) arrays of per-row statistics; K and C from the first.
ChannelArray rows_of(const TensorView& v, const ArgRef& at, int64_t* K, int64_t* C) {
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
  NormCall call("merge_stats", py::none());
  int64_t K = -1, C = -1;
  BnMergeArgs a;
  a.means = rows_of(call.input(means, "means", Access::read), call.at("means"), &K, &C);
  a.vars = rows_of(call.view(vars, "vars", Access::read), call.at("vars"), &K, &C);
  if (int64_t(counts.size()) != K)
    value_error(call.at("counts"), "has " + std::to_string(counts.size()) +
                                       " entries but means has " + std::to_string(K) + " rows");
  a.counts = counts;
  a.channels = C;
  const auto out = {DType::f32, DType::f64};
  const Extent channels = channels_of(C, false);
  a.mean = call.channels(mean, "mean", Access::write, channels, out, false);
  a.var = call.channels(var, "var", Access::write, channels, out, false);
  if (call.keep.device != DeviceKind::cpu)
    value_error(call.at("means"), "is on a CUDA device; merge_stats runs on the host (the "
                                  "inputs are K x C statistics: move them with .cpu())");
  call.check();
  ReleaseGil nogil;
  cpu::active_bn().merge(a);
}

void update_running_stats(py::handle running_mean, py::handle running_var, py::handle mean,
                          py::handle var, py::handle count, double momentum, py::handle stream) {
  NormCall call("update_running_stats_", stream);
  TensorView rm = call.input(running_mean, "running_mean", Access::write);
  if (rm.ndim != 1) value_error(call.at("running_mean"), "must be 1-d (C,), got shape " + shape_str(rm));
  const int64_t C = rm.shape[0];
  BnRunningArgs a;
  a.channels = C;
  a.momentum = momentum;
  if (PyFloat_Check(count.ptr()) || PyLong_Check(count.ptr())) {
    a.count = count.cast<double>();  // checked > 1 by the Python layer
  } else {  // Note [device count]
    const TensorView n = call.view(count, "count", Access::read);
    if (n.numel != 1 || (n.dtype != DType::f64 && n.dtype != DType::f32))
      value_error(call.at("count"), "must be a number or a 1-element float64 or float32 array, got "
                                    "shape " + shape_str(n) + " of " + dtype_name(n.dtype));
    a.count_at = ChannelArray{n.data, n.dtype};
  }
  a.running_mean = ChannelArray{rm.data, rm.dtype};
  auto vec = [&](py::handle h, const char* name, Access acc) {
    TensorView v = call.view(h, name, acc);
    if (v.ndim != 1 || v.shape[0] != C)
      value_error(call.at(name), "has shape " + shape_str(v) + " but running_mean has shape " + shape_str(rm));
    return ChannelArray{v.data, v.dtype};
  };
  a.running_var = vec(running_var, "running_var", Access::write);
  a.mean = vec(mean, "mean", Access::read);
  a.var = vec(var, "var", Access::read);
  call.run(a, rm, cpu::active_bn().update_running, FT_CUDA_ENTRY(cuda::bn_update_running));
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
