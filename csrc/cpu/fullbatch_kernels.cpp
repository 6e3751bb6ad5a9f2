// The full-batch CPU passes (csrc/math/fullbatch.h) for one ISA build: one generic chunk loop
// that loads a pass's slots, runs its element math and stores what it writes, with the sums of
// Note [pass reductions].  FT_ISA names this build's namespace; vec.h supplies its vectors.
#include "cpu/vec.h"

#include <type_traits>
#include <utility>
#include <vector>

#include "core/multi_tensor.h"
#include "core/parallel.h"
#include "cpu/fullbatch_kernels.h"

#define FT_STR_(x) #x
#define FT_STR(x) FT_STR_(x)

namespace ft::cpu::FT_ISA {
namespace {

namespace fb = math::fb;


// Sums of one block are carried in the compute type; a block is short enough that float32
// partial sums keep about 1e-6 relative accuracy before they are added in double.
constexpr int64_t kBlock = 1024;


// Calls f(std::integral_constant<int, s>) for every slot s, so slot types are known at compile time.
template <class F, int... Ss>
FT_INLINE void for_slots_impl(F&& f, std::integer_sequence<int, Ss...>) {
  (f(std::integral_constant<int, Ss>{}), ...);
}
template <class F> FT_INLINE void for_slots(F&& f) {
  for_slots_impl(f, std::make_integer_sequence<int, fb::kMaxSlots>{});
}

// One pass over elements [begin, end) of one tensor (indices into the slots' base pointers).
template <class Pass, class P>
FbResult chunk_pass(const typename Pass::template Coeffs<ComputeOf<P>>& coeffs, void* const* ptr,
                    int64_t begin, int64_t end) {
  using C = ComputeOf<P>;
  const typename Pass::template Coeffs<C> c = coeffs;  // Note [local coefficients]
  constexpr int W = lanes<C>();
  constexpr int S = fb::kMaxSlots;

  auto body = [&](auto tag, int64_t i, auto* sum, auto& mx) {
    using V = std::remove_reference_t<decltype(mx)>;
    V v[S];
    for (int s = 0; s < S; ++s) v[s] = V{};
    for_slots([&](auto sc) {
      constexpr int s = decltype(sc)::value;
      if constexpr ((Pass::kRead >> s) & 1) {
        if constexpr ((Pass::kParamSlots >> s) & 1) v[s] = load(tag, static_cast<const P*>(ptr[s]) + i);
        else v[s] = load(tag, static_cast<const C*>(ptr[s]) + i);
      }
    });
    Pass::element(c, v, sum, mx);
    for_slots([&](auto sc) {
      constexpr int s = decltype(sc)::value;
      if constexpr ((Pass::kWrite >> s) & 1) {
        if constexpr ((Pass::kParamSlots >> s) & 1) store(tag, static_cast<P*>(ptr[s]) + i, v[s]);
        else store(tag, static_cast<C*>(ptr[s]) + i, v[s]);
      }
    });
  };

  using V = decltype(vload(static_cast<const C*>(nullptr)));
  constexpr int R = Pass::kSums > 0 ? Pass::kSums : 1;
  FbResult out;
  V vmx{};
  int64_t i = begin;
  const int64_t vec_end = begin + (end - begin) / W * W;
  while (i < vec_end) {
    // Two accumulator sets (even and odd vectors) keep two add chains in flight; they are added
    // lane by lane in a fixed order at the end of the block.
    V sa[R], sb[R];
    for (int r = 0; r < R; ++r) sa[r] = sb[r] = V{};
    const int64_t stop = vec_end < i + kBlock ? vec_end : i + kBlock;
    for (; i + 2 * W <= stop; i += 2 * W) {
      body(VectorTag{}, i, sa, vmx);
      body(VectorTag{}, i + W, sb, vmx);
    }
    for (; i < stop; i += W) body(VectorTag{}, i, sa, vmx);
    for (int r = 0; r < Pass::kSums; ++r) out.sum[r] += lane_sum(V(sa[r] + sb[r]));
  }
  C ts[R], smx = 0;
  for (int r = 0; r < R; ++r) ts[r] = 0;
  for (; i < end; ++i) body(ScalarTag{}, i, ts, smx);
  for (int r = 0; r < Pass::kSums; ++r) out.sum[r] += ts[r];
  if constexpr (Pass::kMax) {
    out.max = math::ft_max(lane_max(vmx), double(smx));
    // Note [NaN in norms]: the vector max drops NaN; a NaN anywhere in v[0] reaches the sums of
    // every pass that takes a max (they dot v[0]), and the caller sees it there.
  }
  return out;
}

template <class Pass, class P>
FbResult run_pass(const FbTensors& ts, const typename Pass::template Coeffs<ComputeOf<P>>& c) {
  const std::vector<Chunk> chunks = make_chunks(ts.size(), [&](size_t t) { return ts.numel[t]; });
  std::vector<FbResult> partial(chunks.size());
  int64_t total = 0;
  for (int64_t n : ts.numel) total += n;
  parallel_for(int64_t(chunks.size()), total * fb::kMaxSlots, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const Chunk& ch = chunks[k];
      partial[k] = chunk_pass<Pass, P>(c, ts.ptr[ch.tensor].data(), ch.begin, ch.end);
    }
  });
  FbResult out;
  for (const FbResult& r : partial) {  // chunk order: Note [pass reductions]
    for (int s = 0; s < fb::kMaxSums; ++s) out.sum[s] += r.sum[s];
    out.max = math::ft_max(out.max, r.max);
  }
  return out;
}

// Calls f(type tag) for the storage type of dtype d.
template <class F> auto with_dtype(DType d, F&& f) {
  return visit_dtype(d, [&](auto s) { return f(typename decltype(s)::type{}); });
}

FbResult history(const FbTensors& ts, double t) {
  return with_dtype(ts.dtype, [&](auto p) {
    using P = decltype(p);
    return run_pass<fb::History, P>(ts, {ComputeOf<P>(t)});
  });
}

FbResult combine(const FbTensors& ts, const fb::TwoLoopCoef& k, bool copy) {
  return with_dtype(ts.dtype, [&](auto p) {
    using P = decltype(p);
    using C = ComputeOf<P>;
    const typename fb::Combine<true, false>::template Coeffs<C> c{C(k.a), C(k.c), C(k.h), k.scale};
    if (k.keep) {
      if (copy) return run_pass<fb::Combine<true, true>, P>(ts, {c.a, c.c, c.h, c.scale});
      return run_pass<fb::Combine<true, false>, P>(ts, c);
    }
    if (copy) return run_pass<fb::Combine<false, true>, P>(ts, {c.a, c.c, c.h, c.scale});
    return run_pass<fb::Combine<false, false>, P>(ts, {c.a, c.c, c.h, c.scale});
  });
}

FbResult dots(const FbTensors& ts, int n) {
  return with_dtype(ts.dtype, [&](auto p) {
    using P = decltype(p);
    if (n == 1) return run_pass<fb::Dots<1>, P>(ts, {0});
    if (n == 2) return run_pass<fb::Dots<2>, P>(ts, {0});
    return run_pass<fb::Dots<3>, P>(ts, {0});
  });
}

FbResult grad_copy(const FbTensors& ts) {
  const bool dot = !ts.ptr.empty() && ts.ptr[0][2] != nullptr;
  return with_dtype(ts.dtype, [&](auto p) {
    using P = decltype(p);
    return dot ? run_pass<fb::GradCopy<true>, P>(ts, {0}) : run_pass<fb::GradCopy<false>, P>(ts, {0});
  });
}

void param_step(const FbTensors& ts, fb::StepMode mode, double t) {
  with_dtype(ts.dtype, [&](auto p) {
    using P = decltype(p);
    const ComputeOf<P> tc(t);
    switch (mode) {
      case fb::StepMode::Add: run_pass<fb::ParamStep<fb::StepMode::Add>, P>(ts, {tc}); break;
      case fb::StepMode::SaveBase: run_pass<fb::ParamStep<fb::StepMode::SaveBase>, P>(ts, {tc}); break;
      case fb::StepMode::FromBase: run_pass<fb::ParamStep<fb::StepMode::FromBase>, P>(ts, {tc}); break;
      case fb::StepMode::Restore: run_pass<fb::ParamStep<fb::StepMode::Restore>, P>(ts, {tc}); break;
    }
    return 0;
  });
}

const FbKernels& fullbatch_kernels() {
  static const FbKernels k = {FT_STR(FT_ISA), &history, &combine, &dots, &grad_copy, &param_step};
  return k;
}
const bool registered = IsaTables<FbKernels>::add(&fullbatch_kernels);  // Note [isa tables]

}  // namespace

}  // namespace ft::cpu::FT_ISA
