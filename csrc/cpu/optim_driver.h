// The multi-tensor CPU driver of the elementwise rules, for one ISA build: each rule's translation
// unit (optim_rule.cpp) instantiates it for its rule, so the rules of an ISA compile in parallel.
// FT_ISA names this build's namespace; vec.h supplies its vectors (Note [vector overloads]).
#pragma once
#include "cpu/vec.h"

#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/parallel.h"
#include "cpu/kernels.h"

namespace ft::cpu::FT_ISA {
namespace driver {


inline int64_t total_numel(const MultiTensor& mt) {
  int64_t n = 0;
  for (const auto& t : mt.tensors) n += t.numel;
  return n;
}

// Slot presence as compile-time bits, so the element loop carries no pointer tests: a mask of
// math::kS0/kS1/kS2 for the states plus kMasterBit.
constexpr int kMasterBit = 8;

inline int slot_bits(const TensorSlots& t) {
  return (t.ptr[kState0] ? math::kS0 : 0) | (t.ptr[kState1] ? math::kS1 : 0) |
         (t.ptr[kState2] ? math::kS2 : 0) | (t.ptr[kMaster] ? kMasterBit : 0);
}

// Calls f(std::integral_constant<int, bits>) for the runtime `bits`, instantiating only masks
// within `Allowed` that hold all of `Required`; returns whether one matched.
// Note [slot masks]: every mask is one copy of the element loop. The binding passes exactly the
// slots needs() returns, so masks without a rule's required slots never run: compiling only
// the reachable ones halves the optimizer objects and their build time.
template <int Allowed, int Required, class F, int... M>
bool with_bits(int bits, F&& f, std::integer_sequence<int, M...>) {
  bool ran = false;
  auto one = [&](auto m) {
    constexpr int mask = decltype(m)::value;
    if constexpr ((mask & ~Allowed) == 0 && (mask & Required) == Required) {
      if (bits == mask) {
        f(m);
        ran = true;
      }
    }
  };
  (one(std::integral_constant<int, M>{}), ...);
  return ran;
}

// One rule over elements [begin, end) of one tensor: full vectors, then a scalar tail that runs
// the same math on single values.
template <class Rule, class P, class G, class C, int kBits>
void apply_range(const typename Rule::template Coeffs<C>& coeffs, const TensorSlots& t,
                 int64_t begin, int64_t end, bool unscale, C grad_scale) {
  // Note [local coefficients]: a by-value copy no store can alias, so the compiler keeps the
  // coefficients in registers and hoists the rule's option tests out of the loop; read through
  // the reference, every float store could change them and each vector would reload them.
  const typename Rule::template Coeffs<C> c = coeffs;
  P* p = static_cast<P*>(t.ptr[kParam]);
  const G* g = static_cast<const G*>(t.ptr[kGrad]);
  C* s0 = static_cast<C*>(t.ptr[kState0]);
  C* s1 = static_cast<C*>(t.ptr[kState1]);
  C* s2 = static_cast<C*>(t.ptr[kState2]);
  float* master = static_cast<float*>(t.ptr[kMaster]);
  constexpr bool kHasMaster = (kBits & kMasterBit) != 0;

  auto body = [&](auto tag, int64_t i) {
    using V = decltype(load(tag, p + i));
    V pv;
    if constexpr (kHasMaster) pv = load(tag, master + i);
    else pv = load(tag, p + i);
    V gv{};
    if constexpr (Rule::kReadsGrad) {
      gv = load(tag, g + i);
      if (unscale) gv = gv / grad_scale;
    }
    V a{}, b{}, d{};
    if constexpr ((kBits & math::kS0) != 0) a = load(tag, s0 + i);
    if constexpr ((kBits & math::kS1) != 0) b = load(tag, s1 + i);
    if constexpr ((kBits & math::kS2) != 0) d = load(tag, s2 + i);
    Rule::update(c, pv, gv, a, b, d);
    if constexpr (kHasMaster) store(tag, master + i, pv);
    store(tag, p + i, pv);
    if constexpr ((kBits & math::kS0) != 0) store(tag, s0 + i, a);
    if constexpr ((kBits & math::kS1) != 0) store(tag, s1 + i, b);
    if constexpr ((kBits & math::kS2) != 0) store(tag, s2 + i, d);
  };
  constexpr int W = lanes<C>();
  int64_t i = begin;
  // Two vectors per iteration: more independent loads in flight per loop branch.
  for (; i + 2 * W <= end; i += 2 * W) {
    body(VectorTag{}, i);
    body(VectorTag{}, i + W);
  }
  for (; i + W <= end; i += W) body(VectorTag{}, i);
  for (; i < end; ++i) body(ScalarTag{}, i);
}

template <class Rule, class P, class G>
void run_typed(const MultiTensor& mt, const typename Rule::Options& o) {
  using C = ComputeOf<P>;  // Note [compute type]
  const auto c = Rule::template coeffs<C>(o);
  const C scale = C(mt.grad_scale);
  const std::vector<Chunk> chunks = make_chunks(mt);
  if (chunks.empty()) return;
  // Lists are uniform: every tensor has the same slots present.
  constexpr int kAllowed = Rule::kStateSlots | (std::is_same_v<C, float> && !std::is_same_v<P, float> ? kMasterBit : 0);
  const int bits_here = slot_bits(mt.tensors[0]);
  const bool ran = with_bits<kAllowed, Rule::kRequiredSlots>(bits_here, [&](auto bits) {
    constexpr int kBits = decltype(bits)::value;
    parallel_for(int64_t(chunks.size()), total_numel(mt), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const Chunk& ch = chunks[k];
        apply_range<Rule, P, G, C, kBits>(c, mt.tensors[ch.tensor], ch.begin, ch.end,
                                          mt.has_grad_scale, scale);
      }
    });
  }, std::make_integer_sequence<int, 16>{});
  if (!ran) throw std::logic_error("fusedtrain: state slots outside the rule's masks");
}

// Note [dtype pairs]: the binding admits only the pairs of the list in core/dtype.h.
template <class Rule>
void run(const MultiTensor& mt, const typename Rule::Options& o) {
  visit_dtype_pair(mt.param_dtype, mt.grad_dtype, [&](auto p, auto g) {
    run_typed<Rule, typename decltype(p)::type, typename decltype(g)::type>(mt, o);
  });
}

}  // namespace driver
}  // namespace ft::cpu::FT_ISA
