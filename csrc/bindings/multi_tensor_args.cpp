// Validation of multi-tensor arguments (see multi_tensor_args.h).
#include "bindings/multi_tensor_args.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bindings/aliasing.h"
#include "core/option_overrides.h"

namespace ft::bind {
namespace {

// Each param's shape, and its strides when not in C order, for the checks of the other lists'
// arrays against it (Note [import order]): a few words a param where whole views took 300 bytes.
class ParamShapes {
 public:
  explicit ParamShapes(size_t n) { rows_.reserve(n); }
  void add(const TensorView& p, const Layout& l) {
    rows_.push_back({values_.size(), p.ndim, l.c_order});
    values_.insert(values_.end(), p.shape, p.shape + p.ndim);
    if (!l.c_order) values_.insert(values_.end(), l.strides, l.strides + p.ndim);
  }
  // Param i's shape into p (ndim and shape; nothing else is set) and its layout into l.
  void get(size_t i, TensorView* p, Layout* l) const {
    const Row& r = rows_[i];
    p->ndim = r.ndim;
    std::copy_n(values_.data() + r.at, r.ndim, p->shape);
    l->c_order = r.c_order;
    if (!r.c_order) std::copy_n(values_.data() + r.at + r.ndim, r.ndim, l->strides);
  }

 private:
  struct Row {
    size_t at;
    int ndim;
    bool c_order;
  };
  std::vector<Row> rows_;
  std::vector<int64_t> values_;
};

// Note [dtype pairs]: the (param, grad) storage pairs the kernels are instantiated for.
bool grad_dtype_ok(DType param, DType grad) { return is_dtype_pair(param, grad); }

}  // namespace

MultiTensor gather(const SlotNames& names, const SlotArgs& args, int required, ExportHolder& keep) {
  const char* fn = names.fn;
  std::array<PyObject**, kNumSlots> items{};
  std::array<Py_ssize_t, kNumSlots> sizes{};
  std::array<bool, kNumSlots> present{};
  int n_present = 0;
  for (int s = 0; s < kNumSlots; ++s) {
    if (!names.names[s]) continue;
    py::handle list = args.lists[s];
    if (list.is_none()) {
      if (required & (1 << s))
        type_error(ArgRef{fn, names.names[s], -1},
                   "is None; expected a list or tuple of arrays (required with these options)");
      continue;
    }
    present[s] = true;
    ++n_present;
    items[s] = list_items(list, fn, names.names[s], &sizes[s]);
  }
  const size_t n = size_t(sizes[kParam]);
  for (int s = 1; s < kNumSlots; ++s) {
    if (present[s] && size_t(sizes[s]) != n)
      throw py::value_error(std::string(fn) + ": " + names.names[s] + " has " +
                            std::to_string(sizes[s]) + " arrays but " + names.names[kParam] +
                            " has " + std::to_string(n));
  }

  // Note [import order]: list by list (params first, then each other list, each array checked
  // against its param's shape and layout, kept compactly in `shapes`), not row by row. Importing
  // a torch tensor reads torch's objects behind it (the Python object, the TensorImpl, its
  // storage), which lie in memory in the order each list's tensors were made: row by row, the
  // import of an AdamW step's 4 x 10,000 tensors jumped between four such streams and took 2-2.5x
  // as long as list by list (a call of ft.adamw_ 15.0-16.3 ms against 6.3-8.1 on a 2-core AMD
  // EPYC VM; blocks of 64 rows list by list: 9.1-9.2). NumPy arrays are imported from their own
  // object alone, as fast in any order. Errors name the first bad array of the first list that
  // has one.
  MultiTensor mt;
  mt.tensors.resize(n);
  keep.reserve(n * size_t(n_present));
  DType state_dtype = DType::f32;
  ParamShapes shapes(n);
  TensorView p;
  Layout param_layout, layout;
  for (int s = 0; s < kNumSlots; ++s) {
    if (!present[s]) continue;
    for (size_t i = 0; i < n; ++i) {
      const ArgRef at{fn, names.names[s], int64_t(i)};
      TensorView v;
      if (s == kParam) {
        v = view_of(items[kParam][i], at, Access::write, keep, &param_layout);
        if (i == 0) {
          mt.param_dtype = mt.grad_dtype = v.dtype;
          mt.device = v.device;
          mt.device_index = v.device_index;
          state_dtype = compute_dtype(v.dtype);
          if (present[kMaster] && !is_half(v.dtype))
            throw py::value_error(std::string(fn) + ": master_params is only for float16/bfloat16 " +
                                  names.names[kParam] + ", got " + dtype_name(v.dtype));
        }
        mt.tensors[i].numel = v.numel;
        shapes.add(v, param_layout);
      } else {
        v = view_of(items[s][i], at, s == kGrad ? Access::read : Access::write, keep, &layout);
        shapes.get(i, &p, &param_layout);
      }
      if (s == kGrad && i == 0) mt.grad_dtype = v.dtype;
      if (v.device != mt.device || v.device_index != mt.device_index)
        value_error(at, "is on a different device than " + std::string(names.names[kParam]) + "[0]");
#if !defined(FT_WITH_CUDA)
      if (v.device != DeviceKind::cpu)
        value_error(at, "is on a CUDA device, but this build of fusedtrain has no CUDA kernels "
                        "(rebuild with nvcc available, FUSEDTRAIN_CUDA=ON)");
#endif
      if (s == kParam && v.dtype != mt.param_dtype)
        type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + " but " +
                           names.names[kParam] + "[0] has " + dtype_name(mt.param_dtype) +
                           "; all arrays of one list share a dtype");
      if (s == kGrad && (v.dtype != mt.grad_dtype || !grad_dtype_ok(mt.param_dtype, v.dtype)))
        type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + ", which does not go with " +
                           dtype_name(mt.param_dtype) + " " + names.names[kParam] +
                           (i > 0 ? std::string(" (or differs from ") + names.names[kGrad] + "[0])" : ""));
      if ((s == kState0 || s == kState1 || s == kState2 || s == kMaster) &&
          v.dtype != (s == kMaster ? DType::f32 : state_dtype))
        type_error(at, std::string("has dtype ") + dtype_name(v.dtype) + "; expected " +
                           dtype_name(s == kMaster ? DType::f32 : state_dtype) + " for " +
                           dtype_name(mt.param_dtype) + " " + names.names[kParam]);
      if (s != kParam && !v.same_shape(p))
        value_error(at, "has shape " + shape_str(v) + " but " + names.names[kParam] + "[" +
                            std::to_string(i) + "] has shape " + shape_str(p));
      // Note [dense layouts]: flat stepping is right only if index k is element k everywhere.
      if (s != kParam && !same_layout(layout, param_layout, p))
        value_error(at, "has " + strides_str(layout, v) + " but " + names.names[kParam] + "[" +
                            std::to_string(i) + "] has " + strides_str(param_layout, p) +
                            "; a param's arrays must share its memory layout to be stepped as "
                            "flat memory");
      mt.tensors[i].ptr[s] = v.data;
    }
  }
  // Note [aliasing]: grads are read; params, the states these options use and master weights
  // are written.
  // Slot by slot, so each list's arrays arrive in their (usually ascending) address order.
  Aliasing alias(fn);
  for (int s = 0; s < kNumSlots; ++s) {
    if (!present[s] || !(s == kMaster || (required & (1 << s)))) continue;
    const DType d = s == kParam ? mt.param_dtype : s == kGrad ? mt.grad_dtype
                    : s == kMaster ? DType::f32 : state_dtype;
    for (size_t i = 0; i < n; ++i) {
      const TensorSlots& t = mt.tensors[i];
      if (s == kGrad) alias.read(t.ptr[s], t.numel, d, names.names[s], int64_t(i));
      else alias.written(t.ptr[s], t.numel, d, names.names[s], int64_t(i));
    }
  }
  alias.check(true);
  return mt;
}

namespace {

// Note [host scalars]: a scalar read on the host (a number, or a 1-element CPU array) gets the
// checks a Python number gets in fusedtrain/_checks.py; a device scalar is read by the kernel
// and is the caller's to keep valid (Note [step range] for what a bad device step becomes).
void check_host_scalars(const char* fn, const StepArgs& a) {
  auto bad = [&](const char* name, const ScalarArg& s, const char* want) {
    char got[32];
    std::snprintf(got, sizeof got, "%.17g", s.host);
    value_error(ArgRef{fn, name, -1}, std::string("must be ") + want + ", got " + got);
  };
  auto host = [](const ScalarArg& s) { return s.present && !s.on_device; };
  if (host(a.grad_scale) && !(a.grad_scale.host > 0 && std::isfinite(a.grad_scale.host)))
    bad("grad_scale", a.grad_scale, "a finite number > 0 (grads are divided by it)");
  if (host(a.lr) && !(a.lr.host >= 0)) bad("lr", a.lr, ">= 0");
  if (host(a.step) && !(a.step.host >= 1 && a.step.host <= kMaxStep &&
                        a.step.host == std::floor(a.step.host)))
    bad("step", a.step, "a whole number in [1, 2**53] (the 1-based count of this step)");
}

}  // namespace

StepArgs read_step_args(const char* fn, const MultiTensor& mt, py::handle grad_scale,
                        py::handle found_inf, py::handle lr, py::handle step, ExportHolder& keep) {
  StepArgs a;
  a.grad_scale = scalar_arg(grad_scale, ArgRef{fn, "grad_scale", -1}, keep);
  a.found_inf = scalar_arg(found_inf, ArgRef{fn, "found_inf", -1}, keep);
  a.lr = scalar_arg(lr, ArgRef{fn, "lr", -1}, keep);
  a.step = scalar_arg(step, ArgRef{fn, "step", -1}, keep);
  const ScalarArg* all[] = {&a.grad_scale, &a.found_inf, &a.lr, &a.step};
  const char* names[] = {"grad_scale", "found_inf", "lr", "step"};
  for (int i = 0; i < 4; ++i) {
    if (!all[i]->on_device) continue;
    if (mt.device != DeviceKind::cuda || all[i]->device_index != mt.device_index)
      value_error(ArgRef{fn, names[i], -1}, "is on a different device than the params");
  }
  check_host_scalars(fn, a);
  return a;
}

}  // namespace ft::bind
