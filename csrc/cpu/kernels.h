// The table of CPU kernels one ISA build provides, and the runtime choice among ISA builds.
#pragma once
#include <string>
#include <vector>
#include "core/multi_tensor.h"
#include "math/norms.h"
#include "math/optim_rules.h"

namespace ft::cpu {

// Per-chunk partial of a p-norm: one double per chunk of make_chunks(arrays).
struct NormInput {
  std::vector<const void*> data;
  std::vector<DType> dtypes;
  std::vector<int64_t> numel;
};

struct Kernels {
  const char* isa;
#define FT_DECLARE_KERNEL(Rule, name) void (*name)(const MultiTensor&, const math::Rule::Options&);
  FT_ELEMENTWISE_RULES(FT_DECLARE_KERNEL)
#undef FT_DECLARE_KERNEL
  double (*norm)(const NormInput&, double p);
};

// Each ISA build defines its table in its own namespace (csrc/cpu/optim_kernels.cpp).
#define FT_DECLARE_ISA(isa) namespace isa { const Kernels& kernels(); }
FT_DECLARE_ISA(baseline)
FT_DECLARE_ISA(avx2)
FT_DECLARE_ISA(avx512)
FT_DECLARE_ISA(neon)
#undef FT_DECLARE_ISA

// The ISA in use: FUSEDTRAIN_CPU_ISA at first use, else the best the CPU supports.
const Kernels& active();
std::vector<std::string> available_isas();  // built and supported here, best last
void set_isa(const std::string& name);       // throws std::invalid_argument if unavailable
std::string current_isa();

}  // namespace ft::cpu
