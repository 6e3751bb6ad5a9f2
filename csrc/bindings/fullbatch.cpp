// Python bindings of the full-batch passes (L-BFGS, conjugate gradient): validation and dispatch
// only; the math is in csrc/math/fullbatch.h, the loops in csrc/cpu and csrc/cuda.  These are the
// private building blocks of fusedtrain.fullbatch (the optimizer classes), not a public API.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/device_guard.h"
#include "bindings/interop.h"
#include "core/fullbatch_args.h"
#include "cpu/fullbatch_kernels.h"
#include "cuda/fullbatch_kernels.h"  // declarations only; called only in CUDA builds

namespace ft::bind {
namespace {

namespace fb = math::fb;

// Which dtype a list holds: the params' (params, user grads) or the compute dtype (our state:
// float32, float64 for float64 params; Note [compute type]).
enum class Role { param, compute };

struct ListSpec {
  const char* name;
  py::handle list;  // None: the slot is absent
  Role role;
  Access access;
};

// Validates the lists of one call (every check before any array is touched) and fills slot s of
// every tensor from specs[s].  The first list is the reference for lengths, shapes and device.
FbTensors collect(const char* fn, const std::vector<ListSpec>& specs, ExportHolder& keep) {
  const size_t ns = specs.size();
  std::vector<PyObject**> items(ns, nullptr);
  std::vector<Py_ssize_t> sizes(ns, 0);
  for (size_t s = 0; s < ns; ++s) {
    if (specs[s].list.is_none()) continue;
    items[s] = list_items(specs[s].list, fn, specs[s].name, &sizes[s]);
    if (sizes[s] != sizes[0])
      throw py::value_error(std::string(fn) + ": " + specs[s].name + " has " + std::to_string(sizes[s]) +
                            " arrays but " + specs[0].name + " has " + std::to_string(sizes[0]));
  }
  const size_t n = size_t(sizes[0]);
  FbTensors out;
  out.numel.resize(n);
  out.ptr.resize(n);
  keep.reserve(n * ns);
  bool have_param = false;
  for (const auto& sp : specs) have_param = have_param || (sp.role == Role::param && !sp.list.is_none());
  DType param = DType::f32, compute = DType::f32;
  for (size_t i = 0; i < n; ++i) {
    TensorView ref;
    std::array<void*, fb::kMaxSlots> ptrs{};
    for (size_t s = 0; s < ns; ++s) {
      if (!items[s]) continue;
      const ArgRef at{fn, specs[s].name, int64_t(i)};
      const TensorView v = view_of(items[s][i], at, specs[s].access, keep);
      if (i == 0 && s == 0) {
        out.device = v.device;
        out.device_index = v.device_index;
        if (have_param) {
          // The first param-role list's [0] decides (it is specs[0] wherever a call has one).
          param = v.dtype;
          compute = compute_dtype(param);
        } else {
          if (v.dtype != DType::f32 && v.dtype != DType::f64)
            type_error(at, std::string("has dtype ") + dtype_name(v.dtype) +
                               "; expected float32 or float64");
          param = compute = v.dtype;
        }
      }
      if (v.device != out.device || v.device_index != out.device_index)
        value_error(at, std::string("is on a different device than ") + specs[0].name + "[0]");
#if !defined(FT_WITH_CUDA)
      if (v.device != DeviceKind::cpu)
        value_error(at, "is on a CUDA device, but this build of fusedtrain has no CUDA kernels "
                        "(rebuild with nvcc available, FUSEDTRAIN_CUDA=ON)");
#endif
      const DType want = specs[s].role == Role::param ? param : compute;
      if (v.dtype != want)
        type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + "; expected " +
                           dtype_name(want) + (specs[s].role == Role::param
                                                   ? std::string(" (the dtype of ") + specs[0].name + "[0])"
                                                   : std::string(" for ") + dtype_name(param) + " params"));
      if (s == 0) {
        ref = v;
        out.numel[i] = v.numel;
      } else if (!v.same_shape(ref)) {
        value_error(at, "has shape " + shape_str(v) + " but " + specs[0].name + "[" +
                            std::to_string(i) + "] has shape " + shape_str(ref));
      }
      ptrs[s] = v.data;
    }
    out.ptr[i] = ptrs;
  }
  out.dtype = param;
  return out;
}

// Note [history arena]: the L-BFGS history is one array of shape (rows, total numel) in the
// compute dtype; param i's history is its columns [offset_i, offset_i + numel_i), a (rows, numel_i)
// block per param.  Row r of every param lies in one contiguous run, so a pass over a history row
// streams memory in one long run instead of as many short ones as there are params (40% faster
// per pass at 200 params of 10K on a 2-core EPYC).  Sets slot `slot` of every tensor to its
// block and returns the number of rows.
int64_t attach_history(const char* fn, FbTensors& ts, py::handle history, Access access,
                       ExportHolder& keep, int slot) {
  const ArgRef at{fn, "history", -1};
  const TensorView v = view_of(history, at, access, keep);
  int64_t total = 0;
  for (int64_t n : ts.numel) total += n;
  const DType want = compute_dtype(ts.dtype);
  if (v.dtype != want)
    type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + "; expected " + dtype_name(want));
  if (v.ndim != 2 || v.shape[1] != total)
    value_error(at, "has shape " + shape_str(v) + "; expected (rows, " + std::to_string(total) +
                        "), a row per history vector over all params");
  if (!ts.numel.empty() && (v.device != ts.device || v.device_index != ts.device_index))
    value_error(at, "is on a different device than the other arrays");
  const size_t elem = dtype_size(want);
  int64_t offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    ts.ptr[i][size_t(slot)] = static_cast<char*>(v.data) + size_t(offset) * elem;
    offset += ts.numel[i];
  }
  ts.row_stride = total;
  return v.shape[0];
}

py::tuple result_tuple(const FbResult& r, int nsums, bool with_max) {
  py::tuple t(nsums + (with_max ? 1 : 0));
  for (int s = 0; s < nsums; ++s) t[size_t(s)] = py::float_(r.sum[s]);
  if (with_max) t[size_t(nsums)] = py::float_(r.max);
  return t;
}

// Runs cpu_fn() or cuda_fn(stream) for the call's device, without the GIL.  cuda_fn is a generic
// lambda: a CPU-only build never instantiates it, so it may name the CUDA entry points.
template <class CpuFn, class CudaFn>
auto dispatch(const FbTensors& t, py::handle stream, CpuFn&& cpu_fn, CudaFn&& cuda_fn) {
  if (t.device == DeviceKind::cpu) {
    py::gil_scoped_release nogil;
    return cpu_fn();
  }
#if defined(FT_WITH_CUDA)
  const cuda::Stream st = stream_of(stream);
  py::gil_scoped_release nogil;
  DeviceGuard guard(t.device_index);
  return cuda_fn(st);
#else
  (void)stream;
  (void)cuda_fn;
  return cpu_fn();  // unreachable: collect() rejects CUDA arrays in a CPU-only build
#endif
}

double finite_or_raise(const char* fn, const char* name, double v) {
  if (!(v == v)) throw py::value_error(std::string(fn) + ": " + name + " is NaN");
  return v;
}

}  // namespace

void init_fullbatch(py::module_& m) {
  m.def(
      "fullbatch_history_",
      [](py::handle grads, py::handle prev_grads, py::handle directions, py::handle history,
         int64_t slot, double t, py::handle stream) {
        const char* fn = "fullbatch_history_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        FbTensors ts = collect(fn,
                               {{"grads", grads, Role::compute, Access::read},
                                {"prev_grads", prev_grads, Role::compute, Access::write},
                                {"directions", directions, Role::compute, Access::read}},
                               keep);
        const int64_t rows = attach_history(fn, ts, history, Access::write, keep, 3);
        if (slot < 0 || 2 * slot + 1 >= rows)
          throw py::value_error(std::string(fn) + ": slot " + std::to_string(slot) +
                                " is outside the history's " + std::to_string(rows / 2) + " slots");
        const size_t row_bytes = size_t(ts.row_stride) * dtype_size(compute_dtype(ts.dtype));
        for (size_t i = 0; i < ts.size(); ++i) {
          char* base = static_cast<char*>(ts.ptr[i][3]);
          ts.ptr[i][3] = base + size_t(fb::s_row(int(slot))) * row_bytes;
          ts.ptr[i][4] = base + size_t(fb::y_row(int(slot))) * row_bytes;
        }
        ts.row_stride = 0;
        const FbResult r = dispatch(
            ts, stream, [&] { return cpu::active_fullbatch().history(ts, t); },
            [&](auto st) {
              return cuda::fb_history(ts, t, st);
            });
        return result_tuple(r, 3, false);
      },
      py::arg("grads"), py::arg("prev_grads"), py::arg("directions"), py::arg("history"),
      py::arg("slot"), py::arg("t"), py::arg("stream").none(true) = py::none());

  m.def(
      "fullbatch_direction_",
      [](py::handle grads, py::handle directions, py::handle history, std::vector<int> slots,
         std::vector<double> ro, double h_diag, py::handle stream, std::optional<double> first_dot) {
        const char* fn = "fullbatch_direction_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        FbTensors ts = collect(fn,
                                     {{"directions", directions, Role::compute, Access::write},
                                      {"grads", grads, Role::compute, Access::read}},
                                     keep);
        const int64_t rows = attach_history(fn, ts, history, Access::read, keep, 2);
        if (slots.size() != ro.size())
          throw py::value_error(std::string(fn) + ": " + std::to_string(slots.size()) +
                                " slots but " + std::to_string(ro.size()) + " ro values");
        std::vector<bool> seen(size_t(rows / 2), false);
        for (size_t j = 0; j < slots.size(); ++j) {
          const int s = slots[j];
          if (s < 0 || int64_t(2 * s + 1) >= rows || seen[size_t(s)])
            throw py::value_error(std::string(fn) + ": slots[" + std::to_string(j) + "] = " +
                                  std::to_string(s) + " is not a distinct slot of the history's " +
                                  std::to_string(rows / 2));
          seen[size_t(s)] = true;
        }
        const int k = int(slots.size());
        std::vector<double> al(size_t(k), 0.0);
        const double* first = first_dot ? &*first_dot : nullptr;  // Note [first pass folded]
        const FbResult r = dispatch(
            ts, stream,
            [&] { return cpu::two_loop(ts, slots.data(), k, ro.data(), h_diag, al.data(), first); },
            [&](auto st) {
              return cuda::fb_two_loop(ts, slots.data(), k, ro.data(), h_diag, al.data(), first, st);
            });
        return py::make_tuple(r.sum[0], r.max, al);
      },
      py::arg("grads"), py::arg("directions"), py::arg("history"), py::arg("slots"),
      py::arg("ro"), py::arg("h_diag"), py::arg("stream").none(true) = py::none(),
      py::arg("first_dot").none(true) = py::none());

  m.def(
      "fullbatch_combine_",
      [](py::handle out, py::handle x, py::handle w, py::handle copy_to, bool keep_out, double a,
         double c, double h, py::handle stream) {
        const char* fn = "fullbatch_combine_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        const FbTensors ts = collect(fn,
                                     {{"out", out, Role::compute, Access::write},
                                      {"x", x, Role::compute, Access::read},
                                      {"w", w, Role::compute, Access::read},
                                      {"copy_to", copy_to, Role::compute, Access::write}},
                                     keep);
        const fb::TwoLoopCoef k{a, c, h, keep_out, h != 1.0, false, 0.0};
        const bool copy = !copy_to.is_none();
        const FbResult r = dispatch(
            ts, stream, [&] { return cpu::active_fullbatch().combine(ts, k, copy); },
            [&](auto st) {
              return cuda::fb_combine(ts, k, copy, st);
            });
        return result_tuple(r, 1, true);
      },
      py::arg("out"), py::arg("x"), py::arg("w"), py::arg("copy_to").none(true),
      py::arg("keep"), py::arg("a"), py::arg("c"), py::arg("h"),
      py::arg("stream").none(true) = py::none());

  m.def(
      "fullbatch_dots",
      [](py::handle x, py::handle others, py::handle stream) {
        const char* fn = "fullbatch_dots";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        Py_ssize_t n_others = 0;
        PyObject** lists = list_items(others, fn, "others", &n_others);
        if (n_others < 1 || n_others > fb::kMaxSums)
          throw py::value_error(std::string(fn) + ": others must hold 1 to " +
                                std::to_string(fb::kMaxSums) + " lists, got " +
                                std::to_string(n_others));
        static const char* names[] = {"others[0]", "others[1]", "others[2]"};
        std::vector<ListSpec> specs{{"x", x, Role::compute, Access::read}};
        for (Py_ssize_t j = 0; j < n_others; ++j)
          specs.push_back({names[j], py::handle(lists[j]), Role::compute, Access::read});
        const FbTensors ts = collect(fn, specs, keep);
        const int nd = int(n_others);
        const FbResult r = dispatch(
            ts, stream, [&] { return cpu::active_fullbatch().dots(ts, nd); },
            [&](auto st) {
              return cuda::fb_dots(ts, nd, st);
            });
        return result_tuple(r, nd, false);
      },
      py::arg("x"), py::arg("others"), py::arg("stream").none(true) = py::none());

  m.def(
      "fullbatch_grad_copy_",
      [](py::handle grads, py::handle out, py::handle directions, py::handle stream) {
        const char* fn = "fullbatch_grad_copy_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        const FbTensors ts = collect(fn,
                                     {{"grads", grads, Role::param, Access::read},
                                      {"out", out, Role::compute, Access::write},
                                      {"directions", directions, Role::compute, Access::read}},
                                     keep);
        // Without directions: a plain widening copy (returns 0).
        const FbResult r = dispatch(
            ts, stream, [&] { return cpu::active_fullbatch().grad_copy(ts); },
            [&](auto st) {
              return cuda::fb_grad_copy(ts, st);
            });
        return r.sum[0];
      },
      py::arg("grads"), py::arg("out"), py::arg("directions").none(true),
      py::arg("stream").none(true) = py::none());

  m.def(
      "fullbatch_param_step_",
      [](py::handle params, py::handle directions, py::handle base, int mode, double t,
         py::handle stream) {
        const char* fn = "fullbatch_param_step_";
        if (mode < 0 || mode > 3) throw py::value_error(std::string(fn) + ": mode must be 0..3");
        const auto m = static_cast<fb::StepMode>(mode);
        const bool needs_base = m != fb::StepMode::Add;
        if (needs_base && base.is_none())
          type_error(ArgRef{fn, "base", -1}, "is None; this mode reads or writes the base params");
        finite_or_raise(fn, "t", t);
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        const py::handle none = py::none();
        const FbTensors ts = collect(
            fn,
            {{"params", params, Role::param, Access::write},
             {"directions", m == fb::StepMode::Restore ? none : directions, Role::compute, Access::read},
             {"base", needs_base ? base : none, Role::compute,
              m == fb::StepMode::SaveBase ? Access::write : Access::read}},
            keep);
        dispatch(
            ts, stream,
            [&] {
              cpu::active_fullbatch().param_step(ts, m, t);
              return 0;
            },
            [&](auto st) {
              cuda::fb_param_step(ts, m, t, st);
              return 0;
            });
      },
      py::arg("params"), py::arg("directions").none(true), py::arg("base").none(true),
      py::arg("mode"), py::arg("t"), py::arg("stream").none(true) = py::none());
}

}  // namespace ft::bind
