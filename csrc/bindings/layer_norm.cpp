// Python bindings of layer, RMS, group and instance norm (forward, backward). Validation and
// dispatch only: the math is in csrc/math/layer_norm.h, the loops in csrc/cpu and csrc/cuda.
// Outputs are allocated by the Python layer (with the caller's array library) and passed in.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/aliasing.h"
#include "bindings/norm_args.h"
#include "cpu/ln_kernels.h"
#include "cuda/ln_kernels.h"

namespace ft::bind {
namespace {

const std::initializer_list<DType> kAnyFloat = {DType::f32, DType::f64, DType::f16, DType::bf16};

std::string num(int64_t v) { return std::to_string(v); }

// ---------------------------------------------------------------- layer and RMS norm

// x as (rows, cols): the last `dims` dimensions are normalized together.
struct RowsView {
  TensorView x;
  int64_t rows = 1, cols = 1;
  std::vector<int64_t> param_shape, stat_shape;  // normalized_shape; batch dims + (1,) * dims
  std::string param_why, stat_why;
};

RowsView rows_view(py::handle x, int dims, const char* fn, ExportHolder& keep) {
  ArgRef at{fn, "x", -1};
  RowsView v;
  v.x = input_view(x, at, Access::read, keep);
  if (dims < 1 || dims > v.x.ndim)
    value_error({fn, "normalized_shape", -1}, "has " + num(dims) + " dimensions but x has shape " +
                                                  shape_str(v.x) + "; expected 1 to " + num(v.x.ndim));
  const int lead = v.x.ndim - dims;
  for (int i = 0; i < v.x.ndim; ++i) {
    if (i < lead) {
      v.rows *= v.x.shape[i];
      v.stat_shape.push_back(v.x.shape[i]);
    } else {
      v.cols *= v.x.shape[i];
      v.param_shape.push_back(v.x.shape[i]);
      v.stat_shape.push_back(1);
    }
  }
  if (v.cols == 0) value_error({fn, "normalized_shape", -1}, "covers no elements of x, shape " + shape_str(v.x));
  v.param_why = "normalized_shape covers the last " + num(dims) + " dimension(s) of x, shape " + shape_str(v.x);
  v.stat_why = "x has shape " + shape_str(v.x) + " and normalized_shape " + num(dims) + " dimension(s)";
  return v;
}

void ln_forward(py::handle x, int dims, py::handle weight, py::handle bias, py::handle y,
                py::handle mean, py::handle rstd, double eps, bool rms, const std::string& fn_name,
                py::handle stream) {
  const char* fn = fn_name.c_str();
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  RowsView v = rows_view(x, dims, fn, keep);
  const DType d = v.x.dtype;
  LnForwardArgs a;
  a.x = v.x.data;
  a.dtype = d;
  a.rows = v.rows;
  a.cols = v.cols;
  a.rms = rms;
  a.eps = eps;
  const auto param = {d, DType::f32};
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, {v.param_shape, v.param_why}, param, true, keep);
  if (!rms)
    a.bias = channel_array(bias, {fn, "bias", -1}, Access::read, {v.param_shape, v.param_why}, param, true, keep);
  a.y = same_as(y, {fn, "y", -1}, v.x, keep);
  const Extent stats{v.stat_shape, v.stat_why};
  if (!rms)
    a.mean = channel_array(mean, {fn, "mean", -1}, Access::write, stats, {compute_dtype(d)}, false, keep);
  a.rstd = channel_array(rstd, {fn, "rstd", -1}, Access::write, stats, {compute_dtype(d)}, false, keep);
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(v.x, "x");
  alias.read(a.weight.data, v.cols, a.weight.dtype, "weight");
  alias.read(a.bias.data, v.cols, a.bias.dtype, "bias");
  alias.written(a.y, v.x.numel, d, "y");
  alias.written(a.mean.data, v.rows, a.mean.dtype, "mean");
  alias.written(a.rstd.data, v.rows, a.rstd.dtype, "rstd");
  alias.check(false);
  run_kernel(a, v.x, stream, cpu::active_ln().layer_forward, FT_CUDA_ENTRY(cuda::ln_forward));
}

void ln_backward(py::handle dy, py::handle x, int dims, py::handle mean, py::handle rstd,
                 py::handle weight, py::handle dx, py::handle dweight, py::handle dbias, bool rms,
                 const std::string& fn_name, py::handle stream) {
  const char* fn = fn_name.c_str();
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  RowsView v = rows_view(x, dims, fn, keep);
  const DType d = v.x.dtype;
  TensorView g = grad_like(dy, {fn, "dy", -1}, v.x, keep);
  LnBackwardArgs a;
  a.dy = g.data;
  a.x = v.x.data;
  a.dtype = d;
  a.rows = v.rows;
  a.cols = v.cols;
  a.rms = rms;
  const Extent stats{v.stat_shape, v.stat_why}, params{v.param_shape, v.param_why};
  if (!rms) a.mean = channel_array(mean, {fn, "mean", -1}, Access::read, stats, kAnyFloat, false, keep);
  a.rstd = channel_array(rstd, {fn, "rstd", -1}, Access::read, stats, kAnyFloat, false, keep);
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, params, {d, DType::f32}, true, keep);
  a.dx = same_as(dx, {fn, "dx", -1}, v.x, keep);
  if (a.weight.present()) {
    a.dweight = channel_array(dweight, {fn, "dweight", -1}, Access::write, params, {a.weight.dtype}, false, keep);
    if (!rms)
      a.dbias = channel_array(dbias, {fn, "dbias", -1}, Access::write, params, {a.weight.dtype}, false, keep);
  }
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(g, "dy");
  alias.read(v.x, "x");
  alias.read(a.mean.data, v.rows, a.mean.dtype, "mean");
  alias.read(a.rstd.data, v.rows, a.rstd.dtype, "rstd");
  alias.read(a.weight.data, v.cols, a.weight.dtype, "weight");
  alias.written(a.dx, v.x.numel, d, "dx");
  alias.written(a.dweight.data, v.cols, a.dweight.dtype, "dweight");
  alias.written(a.dbias.data, v.cols, a.dbias.dtype, "dbias");
  alias.check(false);
  run_kernel(a, v.x, stream, cpu::active_ln().layer_backward, FT_CUDA_ENTRY(cuda::ln_backward));
}

// ---------------------------------------------------------------- group and instance norm

struct GroupView {
  TensorView x;
  GnShape shape;
  std::string channel_why, stat_why;
};

GroupView group_view(py::handle x, int64_t groups, bool channels_last, const char* fn,
                     ExportHolder& keep) {
  ArgRef at{fn, "x", -1};
  GroupView v;
  v.x = input_view(x, at, Access::read, keep);
  if (v.x.ndim < 2)
    value_error(at, "must have at least 2 dimensions (N, C, ...), got shape " + shape_str(v.x));
  GnShape& s = v.shape;
  s.channels_last = channels_last;
  s.n = v.x.shape[0];
  s.c = channels_last ? v.x.shape[v.x.ndim - 1] : v.x.shape[1];
  for (int i = 1; i < v.x.ndim; ++i)
    if (i != (channels_last ? v.x.ndim - 1 : 1)) s.hw *= v.x.shape[i];
  if (s.c < 1) value_error(at, "has no channels, shape " + shape_str(v.x));
  if (groups < 1 || s.c % groups != 0)
    value_error({fn, "num_groups", -1}, "is " + num(groups) + " but x has " + num(s.c) +
                                            " channels; they must divide into num_groups groups");
  s.groups = groups;
  if (s.n > 0 && s.hw == 0) value_error(at, "has no values per group, shape " + shape_str(v.x));
  v.channel_why = "x has " + num(s.c) + (channels_last ? " channels (last dimension)" : " channels (dimension 1)");
  v.stat_why = "x has " + num(s.n) + " samples in " + num(groups) + " groups";
  return v;
}

void gn_forward(py::handle x, int64_t groups, py::handle weight, py::handle bias,
                py::handle running_mean, py::handle running_var, py::handle y, py::handle mean,
                py::handle rstd, bool use_input_stats, double momentum, double eps,
                bool channels_last, bool instance, py::handle stream) {
  const char* fn = instance ? "instance_norm" : "group_norm_forward";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  GroupView v = group_view(x, groups, channels_last, fn, keep);
  const GnShape& s = v.shape;
  const DType d = v.x.dtype;
  GnForwardArgs a;
  a.x = v.x.data;
  a.dtype = d;
  a.shape = s;
  a.use_input_stats = use_input_stats;
  a.momentum = momentum;
  a.eps = eps;
  const auto param = {d, DType::f32};
  const Extent channels{{s.c}, v.channel_why};
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, channels, param, true, keep);
  a.bias = channel_array(bias, {fn, "bias", -1}, Access::read, channels, param, true, keep);
  const Access running = use_input_stats ? Access::write : Access::read;
  a.running_mean = channel_array(running_mean, {fn, "running_mean", -1}, running, channels, param, true, keep);
  a.running_var = channel_array(running_var, {fn, "running_var", -1}, running, channels, param, true, keep);
  if (a.running_mean.present() != a.running_var.present())
    value_error({fn, a.running_mean.present() ? "running_var" : "running_mean", -1},
                "is None but its partner is not; pass both running_mean and running_var or neither");
  if (!use_input_stats && !a.running_mean.present())
    value_error({fn, "running_mean", -1},
                "is None; use_input_stats=False normalizes with the running statistics");
  if (a.running_mean.present() && s.groups != s.c)
    value_error({fn, "running_mean", -1}, "is given but running statistics are instance norm's (num_groups == C)");
  if (instance && use_input_stats && s.n > 0 && s.hw <= 1)
    value_error({fn, "x", -1}, "has " + num(s.hw) + " value(s) per instance (shape " + shape_str(v.x) +
                                   "); normalizing with input statistics needs more than 1");
  a.y = same_as(y, {fn, "y", -1}, v.x, keep);
  const Extent stats{{s.n, s.groups}, v.stat_why};
  a.mean = channel_array(mean, {fn, "mean", -1}, Access::write, stats, {compute_dtype(d)}, false, keep);
  a.rstd = channel_array(rstd, {fn, "rstd", -1}, Access::write, stats, {compute_dtype(d)}, false, keep);
  Aliasing alias(fn);  // Note [aliasing]; a channel's weight is read after the running stats are written
  alias.read(v.x, "x");
  alias.read(a.weight.data, s.c, a.weight.dtype, "weight");
  alias.read(a.bias.data, s.c, a.bias.dtype, "bias");
  for (auto [arr, name] : {std::pair{a.running_mean, "running_mean"}, {a.running_var, "running_var"}}) {
    if (use_input_stats) alias.written(arr.data, s.c, arr.dtype, name);
    else alias.read(arr.data, s.c, arr.dtype, name);
  }
  alias.written(a.y, v.x.numel, d, "y");
  alias.written(a.mean.data, s.n * s.groups, a.mean.dtype, "mean");
  alias.written(a.rstd.data, s.n * s.groups, a.rstd.dtype, "rstd");
  alias.check(false);
  run_kernel(a, v.x, stream, cpu::active_ln().group_forward, FT_CUDA_ENTRY(cuda::gn_forward));
}

void gn_backward(py::handle dy, py::handle x, int64_t groups, py::handle mean, py::handle rstd,
                 py::handle weight, py::handle dx, py::handle dweight, py::handle dbias,
                 bool channels_last, py::handle stream) {
  const char* fn = "group_norm_backward";
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  GroupView v = group_view(x, groups, channels_last, fn, keep);
  const GnShape& s = v.shape;
  const DType d = v.x.dtype;
  TensorView g = grad_like(dy, {fn, "dy", -1}, v.x, keep);
  GnBackwardArgs a;
  a.dy = g.data;
  a.x = v.x.data;
  a.dtype = d;
  a.shape = s;
  const Extent channels{{s.c}, v.channel_why}, stats{{s.n, s.groups}, v.stat_why};
  a.mean = channel_array(mean, {fn, "mean", -1}, Access::read, stats, kAnyFloat, false, keep);
  a.rstd = channel_array(rstd, {fn, "rstd", -1}, Access::read, stats, kAnyFloat, false, keep);
  a.weight = channel_array(weight, {fn, "weight", -1}, Access::read, channels, {d, DType::f32}, true, keep);
  a.dx = same_as(dx, {fn, "dx", -1}, v.x, keep);
  if (a.weight.present()) {
    a.dweight = channel_array(dweight, {fn, "dweight", -1}, Access::write, channels, {a.weight.dtype}, false, keep);
    a.dbias = channel_array(dbias, {fn, "dbias", -1}, Access::write, channels, {a.weight.dtype}, false, keep);
  }
  Aliasing alias(fn);  // Note [aliasing]
  alias.read(g, "dy");
  alias.read(v.x, "x");
  alias.read(a.mean.data, s.n * s.groups, a.mean.dtype, "mean");
  alias.read(a.rstd.data, s.n * s.groups, a.rstd.dtype, "rstd");
  alias.read(a.weight.data, s.c, a.weight.dtype, "weight");
  alias.written(a.dx, v.x.numel, d, "dx");
  alias.written(a.dweight.data, s.c, a.dweight.dtype, "dweight");
  alias.written(a.dbias.data, s.c, a.dbias.dtype, "dbias");
  alias.check(false);
  run_kernel(a, v.x, stream, cpu::active_ln().group_backward, FT_CUDA_ENTRY(cuda::gn_backward));
}

}  // namespace

void init_layer_norm(py::module_& m) {
  using py::arg;
  m.def("ln_forward", &ln_forward, arg("x"), arg("dims"), arg("weight").none(true),
        arg("bias").none(true), arg("y"), arg("mean").none(true), arg("rstd"), arg("eps"),
        arg("rms"), arg("fn"), arg("stream").none(true) = py::none());
  m.def("ln_backward", &ln_backward, arg("dy"), arg("x"), arg("dims"), arg("mean").none(true),
        arg("rstd"), arg("weight").none(true), arg("dx"), arg("dweight").none(true),
        arg("dbias").none(true), arg("rms"), arg("fn"), arg("stream").none(true) = py::none());
  m.def("gn_forward", &gn_forward, arg("x"), arg("num_groups"), arg("weight").none(true),
        arg("bias").none(true), arg("running_mean").none(true), arg("running_var").none(true),
        arg("y"), arg("mean"), arg("rstd"), arg("use_input_stats"), arg("momentum"), arg("eps"),
        arg("channels_last"), arg("instance"), arg("stream").none(true) = py::none());
  m.def("gn_backward", &gn_backward, arg("dy"), arg("x"), arg("num_groups"), arg("mean"),
        arg("rstd"), arg("weight").none(true), arg("dx"), arg("dweight").none(true),
        arg("dbias").none(true), arg("channels_last"), arg("stream").none(true) = py::none());
}

}  // namespace ft::bind
