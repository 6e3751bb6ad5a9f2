// Python bindings of layer, RMS, group and instance norm (forward, backward). Validation and
// dispatch only: the math is in csrc/math/layer_norm.h, the loops in csrc/cpu and csrc/cuda.
// Outputs are allocated by the Python layer (with the caller's array library) and passed in.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/norm_args.h"
#include "cpu/ln_kernels.h"
#include "cuda/normalization_kernels.h"

namespace ft::bind {
namespace {

const std::initializer_list<DType> kAnyFloat = {DType::f32, DType::f64, DType::f16, DType::bf16};

std::string num(int64_t v) { return std::to_string(v); }

// The arrays of a layer- or group-norm backward: dy, the saved statistics (no mean for RMS
// norm: `centred` false), the weight, dx, and with a weight its grads (no bias for RMS norm;
// dweight, or dbias, None: not asked for).
struct BackwardHandles {
  py::handle dy, mean, rstd, weight, dx, dweight, dbias;
};
template <class Args>
void backward_arrays(NormCall& call, Args& a, const TensorView& x, const BackwardHandles& h,
                     const Extent& stats, const Extent& params, bool centred) {
  a.dy = call.grad(h.dy, x).data;
  a.x = x.data;
  a.dtype = x.dtype;
  if (centred) a.mean = call.channels(h.mean, "mean", Access::read, stats, kAnyFloat, false);
  a.rstd = call.channels(h.rstd, "rstd", Access::read, stats, kAnyFloat, false);
  a.weight = call.channels(h.weight, "weight", Access::read, params, {x.dtype, DType::f32}, true);
  a.dx = call.output(h.dx, "dx", x);
  // Without dweight (the Python layer's weight_grads=False) the kernels skip the column sums;
  // without dbias (bias_grads=False) they skip its sums where they can.
  if (!a.weight.present()) return;
  a.dweight = call.channels(h.dweight, "dweight", Access::write, params, {a.weight.dtype}, true);
  if (centred && a.dweight.present())
    a.dbias = call.channels(h.dbias, "dbias", Access::write, params, {a.weight.dtype}, true);
}

// ---------------------------------------------------------------- layer and RMS norm

// x as (rows, cols): the last `dims` dimensions are normalized together.
struct RowsView {
  TensorView x;
  int64_t rows = 1, cols = 1;
  Extent params, stats;  // normalized_shape; batch dims + (1,) * dims
};

RowsView rows_view(NormCall& call, py::handle x, int dims) {
  RowsView v;
  v.x = call.input(x, "x", Access::read);
  if (dims < 1 || dims > v.x.ndim)
    value_error(call.at("normalized_shape"), "has " + num(dims) + " dimensions but x has shape " +
                                                 shape_str(v.x) + "; expected 1 to " + num(v.x.ndim));
  const int lead = v.x.ndim - dims;
  for (int i = 0; i < v.x.ndim; ++i) {
    if (i < lead) {
      v.rows *= v.x.shape[i];
      v.stats.shape.push_back(v.x.shape[i]);
    } else {
      v.cols *= v.x.shape[i];
      v.params.shape.push_back(v.x.shape[i]);
      v.stats.shape.push_back(1);
    }
  }
  if (v.cols == 0) value_error(call.at("normalized_shape"), "covers no elements of x, shape " + shape_str(v.x));
  v.params.why = "normalized_shape covers the last " + num(dims) + " dimension(s) of x, shape " + shape_str(v.x);
  v.stats.why = "x has shape " + shape_str(v.x) + " and normalized_shape " + num(dims) + " dimension(s)";
  return v;
}

void ln_forward(py::handle x, int dims, py::handle weight, py::handle bias, py::handle y,
                py::handle mean, py::handle rstd, double eps, bool rms, const std::string& fn_name,
                py::handle stream) {
  NormCall call(fn_name.c_str(), stream);
  RowsView v = rows_view(call, x, dims);
  const DType d = v.x.dtype;
  LnForwardArgs a;
  a.x = v.x.data;
  a.dtype = d;
  a.rows = v.rows;
  a.cols = v.cols;
  a.rms = rms;
  a.eps = eps;
  const auto param = {d, DType::f32};
  a.weight = call.channels(weight, "weight", Access::read, v.params, param, true);
  if (!rms) a.bias = call.channels(bias, "bias", Access::read, v.params, param, true);
  a.y = call.output(y, "y", v.x);
  if (!rms) a.mean = call.channels(mean, "mean", Access::write, v.stats, {compute_dtype(d)}, false);
  a.rstd = call.channels(rstd, "rstd", Access::write, v.stats, {compute_dtype(d)}, false);
  call.run(a, v.x, cpu::active_ln().layer_forward, FT_CUDA_ENTRY(cuda::ln_forward));
}

void ln_backward(py::handle dy, py::handle x, int dims, py::handle mean, py::handle rstd,
                 py::handle weight, py::handle dx, py::handle dweight, py::handle dbias, bool rms,
                 const std::string& fn_name, py::handle stream) {
  NormCall call(fn_name.c_str(), stream);
  RowsView v = rows_view(call, x, dims);
  LnBackwardArgs a;
  a.rows = v.rows;
  a.cols = v.cols;
  a.rms = rms;
  backward_arrays(call, a, v.x, {dy, mean, rstd, weight, dx, dweight, dbias}, v.stats, v.params, !rms);
  call.run(a, v.x, cpu::active_ln().layer_backward, FT_CUDA_ENTRY(cuda::ln_backward));
}

// ---------------------------------------------------------------- group and instance norm

struct GroupView {
  TensorView x;
  GnShape shape;
  Extent channels, stats;  // (C,); (N, G)
};

GroupView group_view(NormCall& call, py::handle x, int64_t groups, bool channels_last) {
  const ArgRef at = call.at("x");
  GroupView v;
  v.x = call.input(x, "x", Access::read);
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
    value_error(call.at("num_groups"), "is " + num(groups) + " but x has " + num(s.c) +
                                           " channels; they must divide into num_groups groups");
  s.groups = groups;
  if (s.n > 0 && s.hw == 0) value_error(at, "has no values per group, shape " + shape_str(v.x));
  v.channels = {{s.c}, "x has " + num(s.c) + (channels_last ? " channels (last dimension)" : " channels (dimension 1)")};
  v.stats = {{s.n, s.groups}, "x has " + num(s.n) + " samples in " + num(groups) + " groups"};
  return v;
}

void gn_forward(py::handle x, int64_t groups, py::handle weight, py::handle bias,
                py::handle running_mean, py::handle running_var, py::handle y, py::handle mean,
                py::handle rstd, bool use_input_stats, double momentum, double eps,
                bool channels_last, bool instance, py::handle stream) {
  NormCall call(instance ? "instance_norm" : "group_norm_forward", stream);
  GroupView v = group_view(call, x, groups, channels_last);
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
  a.weight = call.channels(weight, "weight", Access::read, v.channels, param, true);
  a.bias = call.channels(bias, "bias", Access::read, v.channels, param, true);
  call.running_stats(running_mean, running_var, use_input_stats, v.channels, param,
                     "use_input_stats=False normalizes with the running statistics",
                     a.running_mean, a.running_var);
  if (a.running_mean.present() && s.groups != s.c)
    value_error(call.at("running_mean"), "is given but running statistics are instance norm's (num_groups == C)");
  if (instance && use_input_stats && s.n > 0 && s.hw <= 1)
    value_error(call.at("x"), "has " + num(s.hw) + " value(s) per instance (shape " + shape_str(v.x) +
                                  "); normalizing with input statistics needs more than 1");
  a.y = call.output(y, "y", v.x);
  a.mean = call.channels(mean, "mean", Access::write, v.stats, {compute_dtype(d)}, false);
  a.rstd = call.channels(rstd, "rstd", Access::write, v.stats, {compute_dtype(d)}, false);
  call.run(a, v.x, cpu::active_ln().group_forward, FT_CUDA_ENTRY(cuda::gn_forward));
}

void gn_backward(py::handle dy, py::handle x, int64_t groups, py::handle mean, py::handle rstd,
                 py::handle weight, py::handle dx, py::handle dweight, py::handle dbias,
                 bool channels_last, py::handle stream) {
  NormCall call("group_norm_backward", stream);
  GroupView v = group_view(call, x, groups, channels_last);
  GnBackwardArgs a;
  a.shape = v.shape;
  backward_arrays(call, a, v.x, {dy, mean, rstd, weight, dx, dweight, dbias}, v.stats, v.channels, true);
  call.run(a, v.x, cpu::active_ln().group_backward, FT_CUDA_ENTRY(cuda::gn_backward));
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
