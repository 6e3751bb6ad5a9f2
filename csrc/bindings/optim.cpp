// Python bindings of the optimizer rules and the multi-tensor utilities (norm, clip, EMA).
// Validation and dispatch only: the math is in csrc/math, the loops in csrc/cpu.
#include <pybind11/pybind11.h>

#include "bindings/interop.h"
#include "bindings/multi_tensor_args.h"
#include "cpu/kernels.h"

namespace ft::bind {
namespace {

template <class Rule>
using CpuKernel = void (*cpu::Kernels::*)(const MultiTensor&, const typename Rule::Options&);

// Slot bit masks from the math header's state masks (Note [slot roles]).
int slot_mask(int state_mask) {
  return (state_mask & math::kS0 ? 1 << kState0 : 0) | (state_mask & math::kS1 ? 1 << kState1 : 0) |
         (state_mask & math::kS2 ? 1 << kState2 : 0);
}

template <class Rule>
void run_rule(const SlotNames& names, const SlotArgs& args, py::handle grad_scale,
              py::handle found_inf, const typename Rule::Options& o, CpuKernel<Rule> kernel) {
  ExportHolder keep;
  const int needed = slot_mask(Rule::needs(o));
  MultiTensor mt = gather(names, args, (1 << kParam) | (1 << kGrad) | needed, keep);
  bool skip = false;
  read_amp_args(names.fn, grad_scale, found_inf, mt, &skip, keep);
  if (skip || mt.tensors.empty()) return;
  for (auto& t : mt.tensors)
    for (int s = kState0; s <= kState2; ++s)
      if (!(needed & (1 << s))) t.ptr[s] = nullptr;  // present but unused by these options
  py::gil_scoped_release nogil;
  (cpu::active().*kernel)(mt, o);
}

// One optimizer binding: fn(params, grads, state0, state1, state2, master_params, grad_scale,
// found_inf, options).  States the rule does not have are passed as None.
template <class Rule>
void def_rule(py::module_& m, const char* fn, std::array<const char*, 3> states,
              CpuKernel<Rule> kernel) {
  SlotNames names{fn, {"params", "grads", states[0], states[1], states[2], "master_params"}};
  m.def(
      fn,
      [names, kernel](py::handle params, py::handle grads, py::handle s0, py::handle s1,
                      py::handle s2, py::handle master, py::handle grad_scale,
                      py::handle found_inf, const typename Rule::Options& o) {
        run_rule<Rule>(names, SlotArgs{{params, grads, s0, s1, s2, master}}, grad_scale,
                       found_inf, o, kernel);
      },
      py::arg("params"), py::arg("grads"), py::arg("state0").none(true),
      py::arg("state1").none(true), py::arg("state2").none(true),
      py::arg("master_params").none(true), py::arg("grad_scale").none(true),
      py::arg("found_inf").none(true), py::arg("options"));
}

double global_norm(py::handle arrays, double norm_type, const char* fn) {
  ExportHolder keep;
  std::vector<TensorView> views = views_of(arrays, fn, "arrays", Access::read, keep);
  cpu::NormInput in;
  for (size_t i = 0; i < views.size(); ++i) {
    if (views[i].device != DeviceKind::cpu)
      value_error(ArgRef{fn, "arrays", int64_t(i)}, "is on a CUDA device; this build runs on the CPU only");
    in.data.push_back(views[i].data);
    in.dtypes.push_back(views[i].dtype);
    in.numel.push_back(views[i].numel);
  }
  py::gil_scoped_release nogil;
  return cpu::active().norm(in, norm_type);
}

}  // namespace

void init_optim(py::module_& m) {
  using namespace math;
  py::class_<Sgd::Options>(m, "SgdOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Sgd::Options::lr)
      .def_readwrite("weight_decay", &Sgd::Options::weight_decay)
      .def_readwrite("maximize", &Sgd::Options::maximize);
  py::class_<Momentum::Options>(m, "MomentumOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Momentum::Options::lr)
      .def_readwrite("momentum", &Momentum::Options::momentum)
      .def_readwrite("dampening", &Momentum::Options::dampening)
      .def_readwrite("weight_decay", &Momentum::Options::weight_decay)
      .def_readwrite("nesterov", &Momentum::Options::nesterov)
      .def_readwrite("maximize", &Momentum::Options::maximize)
      .def_readwrite("first_step", &Momentum::Options::first_step);
  py::class_<Adagrad::Options>(m, "AdagradOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Adagrad::Options::lr)
      .def_readwrite("lr_decay", &Adagrad::Options::lr_decay)
      .def_readwrite("weight_decay", &Adagrad::Options::weight_decay)
      .def_readwrite("eps", &Adagrad::Options::eps)
      .def_readwrite("step", &Adagrad::Options::step)
      .def_readwrite("maximize", &Adagrad::Options::maximize);
  py::class_<Rmsprop::Options>(m, "RmspropOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Rmsprop::Options::lr)
      .def_readwrite("alpha", &Rmsprop::Options::alpha)
      .def_readwrite("eps", &Rmsprop::Options::eps)
      .def_readwrite("weight_decay", &Rmsprop::Options::weight_decay)
      .def_readwrite("momentum", &Rmsprop::Options::momentum)
      .def_readwrite("centered", &Rmsprop::Options::centered)
      .def_readwrite("nesterov", &Rmsprop::Options::nesterov)
      .def_readwrite("maximize", &Rmsprop::Options::maximize);
  py::class_<Adadelta::Options>(m, "AdadeltaOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Adadelta::Options::lr)
      .def_readwrite("rho", &Adadelta::Options::rho)
      .def_readwrite("eps", &Adadelta::Options::eps)
      .def_readwrite("weight_decay", &Adadelta::Options::weight_decay)
      .def_readwrite("maximize", &Adadelta::Options::maximize);
  py::class_<Adam::Options>(m, "AdamOptions")
      .def(py::init<>())
      .def_readwrite("lr", &Adam::Options::lr)
      .def_readwrite("beta1", &Adam::Options::beta1)
      .def_readwrite("beta2", &Adam::Options::beta2)
      .def_readwrite("eps", &Adam::Options::eps)
      .def_readwrite("weight_decay", &Adam::Options::weight_decay)
      .def_readwrite("step", &Adam::Options::step)
      .def_readwrite("decoupled", &Adam::Options::decoupled)
      .def_readwrite("amsgrad", &Adam::Options::amsgrad)
      .def_readwrite("maximize", &Adam::Options::maximize);

  def_rule<Sgd>(m, "sgd_", {nullptr, nullptr, nullptr}, &cpu::Kernels::sgd);
  def_rule<Momentum>(m, "momentum_", {"momentum_buffers", nullptr, nullptr}, &cpu::Kernels::momentum);
  def_rule<Adagrad>(m, "adagrad_", {"state_sums", nullptr, nullptr}, &cpu::Kernels::adagrad);
  def_rule<Rmsprop>(m, "rmsprop_", {"square_avgs", "momentum_buffers", "grad_avgs"},
                    &cpu::Kernels::rmsprop);
  def_rule<Adadelta>(m, "adadelta_", {"square_avgs", "acc_deltas", nullptr}, &cpu::Kernels::adadelta);
  def_rule<Adam>(m, "adam_", {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"}, &cpu::Kernels::adam);

  m.def("global_norm", [](py::handle arrays, double norm_type) {
    return global_norm(arrays, norm_type, "global_norm");
  });

  m.def("clip_grad_norm_", [](py::handle grads, double max_norm, double norm_type) {
    const char* fn = "clip_grad_norm_";
    ExportHolder keep;
    SlotNames names{fn, {"grads", nullptr, nullptr, nullptr, nullptr, nullptr}};
    py::handle none = py::none();
    // Validate writability first: a read-only gradient must fail before the norm is even taken.
    MultiTensor mt = gather(names, SlotArgs{{grads, none, none, none, none, none}}, 1 << kParam, keep);
    double total = global_norm(grads, norm_type, fn);
    double coef = math::clip_coefficient(max_norm, total);
    if (coef < 1.0 && !mt.tensors.empty()) {
      py::gil_scoped_release nogil;
      math::Scale::Options o;
      o.coef = coef;
      cpu::active().scale(mt, o);
    }
    return total;
  });

  m.def("ema_", [](py::handle averages, py::handle params, const Ema::Options& o) {
    const char* fn = "ema_";
    ExportHolder keep;
    SlotNames names{fn, {"averages", "params", nullptr, nullptr, nullptr, nullptr}};
    py::handle none = py::none();
    MultiTensor mt = gather(names, SlotArgs{{averages, params, none, none, none, none}},
                            (1 << kParam) | (1 << kGrad), keep);
    if (mt.tensors.empty()) return;
    py::gil_scoped_release nogil;
    cpu::active().ema(mt, o);
  });
  py::class_<Ema::Options>(m, "EmaOptions").def(py::init<>()).def_readwrite("decay", &Ema::Options::decay);
}

}  // namespace ft::bind
