// The p-norm CPU kernel and the table of this ISA build's kernels; the elementwise rules are
// compiled one per translation unit (optim_rule.cpp).  FT_ISA names this build's namespace.
#include "cpu/optim_driver.h"

#define FT_STR_(x) #x
#define FT_STR(x) FT_STR_(x)

namespace ft::cpu::FT_ISA {

// Defined by optim_rule.cpp, once per rule.
#define FT_DECLARE_RULE_KERNEL(Rule, name) void name(const MultiTensor&, const math::Rule::Options&);
FT_ELEMENTWISE_RULES(FT_DECLARE_RULE_KERNEL)
#undef FT_DECLARE_RULE_KERNEL

namespace {


// ---- p-norm partials

// Sum of |x|^p (or max |x|) over x[begin, end).  Vector lanes accumulate blocks of kInner
// elements in the compute type; block results are added in double, in a fixed order.
template <class S>
double chunk_norm(const S* x, int64_t begin, int64_t end, math::NormKind kind, double p) {
  using C = ComputeOf<S>;
  using V = decltype(vload(x));
  constexpr int W = lanes<C>();
  constexpr int64_t kInner = 1024;
  double total = 0;
  int64_t i = begin;
  if (kind == math::NormKind::P) {
    for (; i < end; ++i) total += pow(math::ft_abs(double(sload(x + i))), p);
    return total;
  }
  const int64_t vec_end = begin + (end - begin) / W * W;
  while (i < vec_end) {
    V acc{}, nan_probe{};
    const int64_t stop = vec_end < i + kInner ? vec_end : i + kInner;
    if (kind == math::NormKind::Inf) {
      // Note [NaN in norms]: the SIMD max drops NaN; a sum of |x| turns NaN only from a NaN.
      // Four independent max / probe chains: one chain waited on the probe's add latency
      // (about 5 cycles a vector, 1.5x the sums' time on data in cache); a max does not
      // depend on the order it is taken in, and the probe only tells NaN.
      V mx[4] = {}, pr[4] = {};
      for (; i + 4 * W <= stop; i += 4 * W) {
        for (int u = 0; u < 4; ++u) {
          const V v = math::ft_abs(vload(x + i + u * W));
          mx[u] = math::ft_max(mx[u], v);
          pr[u] = pr[u] + v;
        }
      }
      for (; i < stop; i += W) {
        const V v = math::ft_abs(vload(x + i));
        mx[0] = math::ft_max(mx[0], v);
        pr[0] = pr[0] + v;
      }
      acc = math::ft_max(math::ft_max(mx[0], mx[1]), math::ft_max(mx[2], mx[3]));
      nan_probe = (pr[0] + pr[1]) + (pr[2] + pr[3]);
    } else {
      for (; i < stop; i += W) {
        const V v = math::ft_abs(vload(x + i));
        acc = kind == math::NormKind::L2 ? acc + v * v : acc + v;
      }
    }
    C lane[W], probe[W];
    __builtin_memcpy(lane, &acc, sizeof acc);
    __builtin_memcpy(probe, &nan_probe, sizeof nan_probe);
    for (int l = 0; l < W; ++l) {
      total = math::norm_combine(kind, total, double(lane[l]));
      if (probe[l] != probe[l]) total = math::norm_combine(kind, total, double(probe[l]));
    }
  }
  for (; i < end; ++i) {
    double v = math::ft_abs(double(sload(x + i)));
    total = math::norm_combine(kind, total, kind == math::NormKind::L2 ? v * v : v);
  }
  return total;
}

double norm(const NormInput& in, double p) {
  const math::NormKind kind = math::norm_kind(p);
  const std::vector<Chunk> chunks =
      make_chunks(in.data.size(), [&](size_t t) { return in.numel[t]; });
  std::vector<double> partial(chunks.size(), 0.0);
  int64_t total = 0;
  for (int64_t n : in.numel) total += n;
  parallel_for(int64_t(chunks.size()), total, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const Chunk& ch = chunks[k];
      const void* d = in.data[ch.tensor];
      visit_dtype(in.dtypes[ch.tensor], [&](auto s) {
        using S = typename decltype(s)::type;
        partial[k] = chunk_norm(static_cast<const S*>(d), ch.begin, ch.end, kind, p);
      });
    }
  });
  double combined = 0;
  for (double v : partial) combined = math::norm_combine(kind, combined, v);
  return math::norm_finish(kind, p, combined);
}

}  // namespace

const Kernels& kernels() {
#define FT_KERNEL_ENTRY(Rule, name) &name,
  static const Kernels k = {FT_STR(FT_ISA), FT_ELEMENTWISE_RULES(FT_KERNEL_ENTRY) & norm};
#undef FT_KERNEL_ENTRY
  return k;
}

}  // namespace ft::cpu::FT_ISA
