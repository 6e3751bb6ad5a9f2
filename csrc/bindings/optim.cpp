// Python bindings of the optimizer rules and the multi-tensor utilities (norm, clip, EMA).
// Validation and dispatch only: the math is in csrc/math, the loops in csrc/cpu and csrc/cuda.
#include <pybind11/pybind11.h>

#include <memory>

#include "bindings/aliasing.h"
#include "bindings/device_guard.h"
#include "bindings/gil.h"
#include "bindings/interop.h"
#include "bindings/multi_tensor_args.h"
#include "core/option_overrides.h"
#include "cpu/kernels.h"
#include "cuda/kernels.h"
#if defined(FT_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace ft::bind {
namespace {

template <class Rule>
using CpuKernel = void (*cpu::Kernels::*)(const MultiTensor&, const typename Rule::Options&);
template <class Rule>
using CudaKernel = void (*)(const MultiTensor&, const typename Rule::Options&,
                            const cuda::StepScalars&, cuda::Stream);

#if defined(FT_WITH_CUDA)
#define FT_CUDA_KERNEL(name) &cuda::name
#else
#define FT_CUDA_KERNEL(name) nullptr
#endif

// Slot bit masks from the math header's state masks (Note [slot roles]).
int slot_mask(int state_mask) {
  return (state_mask & math::kS0 ? 1 << kState0 : 0) | (state_mask & math::kS1 ? 1 << kState1 : 0) |
         (state_mask & math::kS2 ? 1 << kState2 : 0);
}



cpu::NormInput cpu_norm_input(const MultiTensor& mt, DType dtype) {
  cpu::NormInput in;
  for (const auto& t : mt.tensors) {
    in.data.push_back(t.ptr[kGrad]);
    in.dtypes.push_back(dtype);
    in.numel.push_back(t.numel);
  }
  return in;
}

// Optional global-norm clipping fused into the step: the grads' norm is taken first and the
// clip coefficient joins grad_scale as one divisor, so the update kernel reads the grads once.
template <class Rule>
void run_rule(const SlotNames& names, const SlotArgs& args, py::handle grad_scale, py::handle found_inf, py::handle lr, py::handle step,
              double clip_max_norm, py::handle stream, typename Rule::Options o,
              CpuKernel<Rule> cpu_kernel, CudaKernel<Rule> cuda_kernel) {
  static_assert(HasLr<typename Rule::Options>::value,
                "Note [lr override]: a rule bound with an lr argument names its field lr");
  ExportHolder keep;
  keep.cuda_call = !stream.is_none();
  const int needed = slot_mask(Rule::needs(o));
  MultiTensor mt = gather(names, args, (1 << kParam) | (1 << kGrad) | needed, keep);
  const StepArgs sa = read_step_args(names.fn, mt, grad_scale, found_inf, lr, step, keep);
  if (mt.tensors.empty()) return;
  for (auto& t : mt.tensors)
    for (int s = kState0; s <= kState2; ++s)
      if (!(needed & (1 << s))) t.ptr[s] = nullptr;  // present but unused by these options

  // Host-side scalars apply now; device-side ones travel to the kernel.
  if (sa.found_inf.present && !sa.found_inf.on_device && sa.found_inf.host != 0.0) return;
  if (sa.grad_scale.present && !sa.grad_scale.on_device) {
    mt.has_grad_scale = true;
    mt.grad_scale = sa.grad_scale.host;
  }
  if (sa.lr.present && !sa.lr.on_device) set_lr(o, sa.lr.host);
  if (sa.step.present && !sa.step.on_device) set_step(o, sa.step.host, 0);

  if (mt.device == DeviceKind::cpu) {
    ReleaseGil nogil;
    if (clip_max_norm >= 0) {
      // Clip on the unscaled grads' norm: torch's AMP recipe is unscale, clip, step.
      const double scale = mt.has_grad_scale ? mt.grad_scale : 1.0;
      const double norm = cpu::active().norm(cpu_norm_input(mt, mt.grad_dtype), 2.0) / scale;
      const double coef = math::clip_coefficient(clip_max_norm, norm);
      if (coef < 1.0) {
        mt.grad_scale = (mt.has_grad_scale ? mt.grad_scale : 1.0) / coef;
        mt.has_grad_scale = true;
      }
    }
    (cpu::active().*cpu_kernel)(mt, o);
    return;
  }
#if defined(FT_WITH_CUDA)
  cuda::StepScalars sc;
  if (sa.grad_scale.on_device) sc.grad_scale = sa.grad_scale.device;
  if (sa.found_inf.on_device) sc.found_inf = sa.found_inf.device;
  if (sa.lr.on_device) sc.lr = sa.lr.device;
  if (sa.step.on_device) sc.step = sa.step.device;
  const cuda::Stream st = stream_of(stream);
  ReleaseGil nogil;
  DeviceGuard guard(mt.device_index);
  std::unique_ptr<cuda::Scratch> divisor;
  if (clip_max_norm >= 0) {
    cuda::NormArrays in;
    for (const auto& t : mt.tensors) {
      in.data.push_back(t.ptr[kGrad]);
      in.dtypes.push_back(mt.grad_dtype);
      in.numel.push_back(t.numel);
    }
    divisor = std::make_unique<cuda::Scratch>(sizeof(float), st);
    cuda::ClipOutputs clip;
    clip.max_norm = clip_max_norm;
    clip.grad_scale_in = sc.grad_scale;
    clip.host_grad_scale = mt.has_grad_scale ? mt.grad_scale : 1.0;
    clip.divisor_out = divisor->as<float>();
    cuda::norm(in, 2.0, nullptr, clip, st);
    sc.grad_scale = cuda::DeviceScalar{divisor->as<float>(), DType::f32};
    mt.has_grad_scale = false;
  }
  cuda_kernel(mt, o, sc, st);
#else
  (void)cuda_kernel;
#endif
}

// One optimizer binding: fn(params, grads, state0, state1, state2, master_params, grad_scale,
// found_inf, options, lr, step, clip_max_norm, stream).  States a rule lacks are passed as None.
template <class Rule>
void def_rule(py::module_& m, const char* fn, std::array<const char*, 3> states,
              CpuKernel<Rule> cpu_kernel, CudaKernel<Rule> cuda_kernel) {
  SlotNames names{fn, {"params", "grads", states[0], states[1], states[2], "master_params"}};
  m.def(
      fn,
      [names, cpu_kernel, cuda_kernel](py::handle params, py::handle grads, py::handle s0,
                                       py::handle s1, py::handle s2, py::handle master,
                                       py::handle grad_scale, py::handle found_inf,
                                       const typename Rule::Options& o, py::handle lr,
                                       py::handle step, double clip_max_norm, py::handle stream) {
        run_rule<Rule>(names, SlotArgs{{params, grads, s0, s1, s2, master}}, grad_scale, found_inf, lr, step, clip_max_norm, stream, o, cpu_kernel,
                       cuda_kernel);
      },
      py::arg("params"), py::arg("grads"), py::arg("state0").none(true),
      py::arg("state1").none(true), py::arg("state2").none(true),
      py::arg("master_params").none(true), py::arg("grad_scale").none(true),
      py::arg("found_inf").none(true), py::arg("options"), py::arg("lr").none(true) = py::none(),
      py::arg("step").none(true) = py::none(), py::arg("clip_max_norm") = -1.0,
      py::arg("stream").none(true) = py::none());
}

// The norm of a validated single-slot MultiTensor (slot kParam), on its device.
double norm_of(const std::vector<TensorView>& views, double norm_type, py::handle stream,
               const char* fn) {
  if (views.empty()) return 0.0;
  const DeviceKind device = views[0].device;
  for (size_t i = 0; i < views.size(); ++i)
    if (views[i].device != device || views[i].device_index != views[0].device_index)
      value_error(ArgRef{fn, "arrays", int64_t(i)}, "is on a different device than arrays[0]");
  if (device == DeviceKind::cpu) {
    cpu::NormInput in;
    for (const auto& v : views) {
      in.data.push_back(v.data);
      in.dtypes.push_back(v.dtype);
      in.numel.push_back(v.numel);
    }
    ReleaseGil nogil;
    return cpu::active().norm(in, norm_type);
  }
#if defined(FT_WITH_CUDA)
  cuda::NormArrays in;
  for (const auto& v : views) {
    in.data.push_back(v.data);
    in.dtypes.push_back(v.dtype);
    in.numel.push_back(v.numel);
  }
  const cuda::Stream st = stream_of(stream);
  ReleaseGil nogil;
  DeviceGuard guard(views[0].device_index);
  cuda::Scratch out(sizeof(double), st);
  cuda::norm(in, norm_type, out.as<double>(), cuda::ClipOutputs{}, st);
  return cuda::read_back(out.as<double>(), st);
#else
  (void)stream;
  value_error(ArgRef{fn, "arrays", 0}, "is on a CUDA device, but this build has no CUDA kernels");
#endif
}

}  // namespace

// Note [rule table]: every rule of the math header's list registers its Options class (one
// attribute per field, by the struct's own field list) and, when it names one, its function:
// adding a rule touches no line here.  The class's `fields` is the description the Python rule
// table is built from: (name, default, bound) per field (Note [field bounds]).
template <class Rule>
void def_options(py::module_& m, const char* cls) {
  using Options = typename Rule::Options;
  py::list described;
  const Options defaults{};
  Rule::fields([&](const char* name, auto member, math::Bound bound) {
    const char* kind = math::bound_name(bound);
    described.append(py::make_tuple(name, defaults.*member,
                                    kind ? py::object(py::str(kind)) : py::object(py::none())));
  });
  if (described.empty()) return;  // no hyperparameters a caller sets (Scale)
  py::class_<Options> c(m, cls);
  c.def(py::init<>());
  Rule::fields([&](const char* name, auto member, math::Bound) { c.def_readwrite(name, member); });
  c.attr("fields") = py::tuple(described);
}

void init_optim(py::module_& m) {
  using namespace math;
#define FT_BIND_RULE(Rule, name)                                                              \
  def_options<Rule>(m, #Rule "Options");                                                    \
  if constexpr (Rule::kFunction != nullptr)                                                  \
    def_rule<Rule>(m, Rule::kFunction, {Rule::kStateNames[0], Rule::kStateNames[1],         \
                                        Rule::kStateNames[2]},                                \
                   &cpu::Kernels::name, FT_CUDA_KERNEL(name));
  FT_ELEMENTWISE_RULES(FT_BIND_RULE)
#undef FT_BIND_RULE

  m.def(
      "global_norm",
      [](py::handle arrays, double norm_type, py::handle stream) {
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        return norm_of(views_of(arrays, "global_norm", "arrays", Access::read, keep), norm_type,
                       stream, "global_norm");
      },
      py::arg("arrays"), py::arg("norm_type"), py::arg("stream").none(true) = py::none());

  m.def(
      "clip_grad_norm_",
      [](py::handle grads, double max_norm, double norm_type, py::handle stream) {
        const char* fn = "clip_grad_norm_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        std::vector<TensorView> views = views_of(grads, fn, "grads", Access::write, keep);
        Aliasing alias(fn);  // Note [aliasing]: the same grad twice would be scaled twice
        for (size_t i = 0; i < views.size(); ++i) alias.written(views[i], "grads", int64_t(i));
        alias.check(false);
        const double total = norm_of(views, norm_type, stream, fn);
        const double coef = math::clip_coefficient(max_norm, total);
        if (coef >= 1.0 || views.empty()) return total;
        // Scale in groups of one dtype (a list may mix them, as torch allows).
        for (DType d : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
          MultiTensor mt;
          mt.param_dtype = mt.grad_dtype = d;
          mt.device = views[0].device;
          mt.device_index = views[0].device_index;
          for (const auto& v : views) {
            if (v.dtype != d) continue;
            TensorSlots t;
            t.ptr[kParam] = v.data;
            t.numel = v.numel;
            mt.tensors.push_back(t);
          }
          if (mt.tensors.empty()) continue;
          math::Scale::Options o;
          o.coef = coef;
          const cuda::Stream st = stream_of(stream);  // read before the GIL goes
          ReleaseGil nogil;
          if (mt.device == DeviceKind::cpu) {
            cpu::active().scale(mt, o);
          } else {
#if defined(FT_WITH_CUDA)
            DeviceGuard guard(mt.device_index);
            cuda::scale(mt, o, cuda::StepScalars{}, st);
#endif
          }
        }
        return total;
      },
      py::arg("grads"), py::arg("max_norm"), py::arg("norm_type"),
      py::arg("stream").none(true) = py::none());

  m.def(
      "ema_",
      [](py::handle averages, py::handle params, const Ema::Options& o, py::handle stream) {
        const char* fn = "ema_";
        ExportHolder keep;
        keep.cuda_call = !stream.is_none();
        SlotNames names{fn, {"averages", "params", nullptr, nullptr, nullptr, nullptr}};
        py::handle none = py::none();
        MultiTensor mt = gather(names, SlotArgs{{averages, params, none, none, none, none}},
                                (1 << kParam) | (1 << kGrad), keep);
        if (mt.tensors.empty()) return;
        const cuda::Stream st = stream_of(stream);  // read before the GIL goes
        ReleaseGil nogil;
        if (mt.device == DeviceKind::cpu) {
          cpu::active().ema(mt, o);
          return;
        }
#if defined(FT_WITH_CUDA)
        DeviceGuard guard(mt.device_index);
        cuda::ema(mt, o, cuda::StepScalars{}, st);
#endif
      },
      py::arg("averages"), py::arg("params"), py::arg("options"),
      py::arg("stream").none(true) = py::none());
}

}  // namespace ft::bind
