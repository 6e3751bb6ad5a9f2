// C entry point of the emulated CUDA optimizer step (Note [host emulation]) for
// tests/test_cuda_emulated.py: one rule of FT_ELEMENTWISE_RULES by name, its Options set field by
// field (Rule::fields, Note [field bounds]) from names and values, the MultiTensor from a table of
// n x kNumSlots pointers (null: absent) as the bindings fill it, and the step's device scalars
// (null: absent). Returns 0, or -1 with the message in emu_error().
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/kernels.h"
#include "emu_guard.h"

namespace {

template <class Rule>
typename Rule::Options options(int64_t n, const char* const* names, const double* values) {
  typename Rule::Options o;
  for (int64_t i = 0; i < n; ++i) {
    bool found = false;
    Rule::fields([&](const char* name, auto member, ft::math::Bound) {
      using M = std::remove_reference_t<decltype(o.*member)>;
      if (std::strcmp(name, names[i]) == 0) {
        o.*member = M(values[i]);
        found = true;
      }
    });
    if (!found) throw std::invalid_argument(std::string("no Options field ") + names[i]);
  }
  return o;
}

ft::cuda::DeviceScalar scalar(void* p, int64_t dtype) { return {p, ft::DType(dtype)}; }

}  // namespace

extern "C" int emu_rule(const char* rule, int64_t param_dtype, int64_t grad_dtype, int64_t n,
                        const int64_t* numel, void* const* ptrs, int64_t nfields,
                        const char* const* names, const double* values, int64_t has_host_scale,
                        double host_scale, void* grad_scale, int64_t grad_scale_dtype,
                        void* found_inf, int64_t found_inf_dtype, void* lr, int64_t lr_dtype,
                        void* step, int64_t step_dtype) {
  return emu_guarded([&] {
    ft::MultiTensor mt;
    mt.param_dtype = ft::DType(param_dtype);
    mt.grad_dtype = ft::DType(grad_dtype);
    mt.device = ft::DeviceKind::cuda;
    mt.has_grad_scale = has_host_scale != 0;
    mt.grad_scale = host_scale;
    mt.tensors.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      mt.tensors[size_t(i)].numel = numel[i];
      for (int s = 0; s < ft::kNumSlots; ++s) mt.tensors[size_t(i)].ptr[s] = ptrs[i * ft::kNumSlots + s];
    }
    ft::cuda::StepScalars sc;
    sc.grad_scale = scalar(grad_scale, grad_scale_dtype);
    sc.found_inf = scalar(found_inf, found_inf_dtype);
    sc.lr = scalar(lr, lr_dtype);
    sc.step = scalar(step, step_dtype);
    bool ran = false;
#define FT_EMU_RULE(Rule, name)                                                          \
  if (!ran && std::strcmp(rule, #name) == 0) {                                           \
    ft::cuda::name(mt, options<ft::math::Rule>(nfields, names, values), sc, nullptr);    \
    ran = true;                                                                          \
  }
    FT_ELEMENTWISE_RULES(FT_EMU_RULE)
#undef FT_EMU_RULE
    if (!ran) throw std::invalid_argument(std::string("no rule ") + rule);
  });
}

// The global norm of n arrays (each its own dtype code) into *out_norm, and where max_norm >= 0
// the clip outputs (the AMP scale from grad_scale when given, else host_grad_scale) into
// *coef_out and *divisor_out.
extern "C" int emu_norm(int64_t n, const int64_t* numel, void* const* ptrs, const int64_t* dtypes,
                        double p, double* out_norm, double max_norm, void* grad_scale,
                        int64_t grad_scale_dtype, double host_grad_scale, float* coef_out,
                        float* divisor_out) {
  return emu_guarded([&] {
    ft::cuda::NormArrays in;
    for (int64_t i = 0; i < n; ++i) {
      in.data.push_back(ptrs[i]);
      in.dtypes.push_back(ft::DType(dtypes[i]));
      in.numel.push_back(numel[i]);
    }
    ft::cuda::ClipOutputs clip;
    clip.max_norm = max_norm;
    clip.grad_scale_in = scalar(grad_scale, grad_scale_dtype);
    clip.host_grad_scale = host_grad_scale;
    clip.coef_out = coef_out;
    clip.divisor_out = divisor_out;
    ft::cuda::norm(in, p, out_norm, clip, nullptr);
  });
}
