// Batch-norm CPU drivers (forward, backward, statistics), compiled once per ISA; the math is in
// csrc/math/batch_norm.h, the statistics, elementwise loops and work partition every
// normalization shares in csrc/cpu/norm_stats.h (Note [planar driver], Note [rows driver]).
#include "cpu/vec.h"

#include "cpu/bn_kernels.h"
#include "cpu/norm_stats.h"

#define FT_STR_(x) #x
#define FT_STR(x) FT_STR_(x)

namespace ft::cpu::FT_ISA {
namespace {

// The two layouts the drivers know. Note [empty batch norm]: an input without values per channel
// is rows (0, C), whatever its spatial dims: every loop over it is empty and only the per-channel
// outputs are written. A single channel of a rows-layout input is one contiguous run: planar
// (1, 1, R). Everything else is planar when inner > 1 and rows when inner == 1.
BnShape canonical(BnShape s) {
  if (s.per_channel() == 0) return BnShape{0, s.channels, 1};
  if (s.inner == 1 && s.channels == 1 && s.outer > 1) return BnShape{1, 1, s.outer};
  return s;
}

// ---------------------------------------------------------------- forward

// Note [channel runs]: the per-channel steps between a reduction and its elementwise pass (save
// the statistics, update the running ones, form the coefficients) take runs of up to kRun
// channels: each per-channel array is read or written in one loop of its dtype, and the math
// runs over contiguous doubles, which the compiler vectorizes.  Square root and division are
// exact in every lane, so each value is what a channel at a time gives (bitwise, every dtype and
// ISA).  A channel at a time, with a dtype dispatch per array and value and scalar divisions and
// square roots, they took about 8 ns a channel on this project's VM: a (8, 1024) forward call
// 16.1 us, now 8.0; BatchNorm1d (512, 1024) about 0.098 ms, now 0.075.  The planar layout, a
// channel per task, calls them with runs of one.
constexpr int64_t kRun = 128;

// Saves the statistics of channels [c0, c0 + n) (st: theirs), updates their running stats, and
// hands out(c, coefficients) each channel's coefficients.
template <class T, class Out>
void forward_channels(const BnForwardArgs& a, int64_t c0, int64_t n, const Stats* st, Out&& out) {
  double mean[kRun], var[kRun], invstd[kRun], w[kRun], b[kRun];
  if (a.training) {
    for (int64_t i = 0; i < n; ++i) {
      mean[i] = st[i].mean;
      var[i] = math::biased_var(st[i]);
    }
    if (a.running_mean.present()) {
      double rm[kRun], rv[kRun];
      a.running_mean.get_run(c0, n, rm);
      a.running_var.get_run(c0, n, rv);
      for (int64_t i = 0; i < n; ++i)
        math::update_running<double>(rm[i], rv[i], mean[i], var[i], st[i].count, a.momentum);
      a.running_mean.set_run(c0, n, rm);
      a.running_var.set_run(c0, n, rv);
    }
  } else {
    a.running_mean.get_run(c0, n, mean);
    a.running_var.get_run(c0, n, var);
  }
  for (int64_t i = 0; i < n; ++i) invstd[i] = math::inv_std(var[i], a.eps);
  a.save_mean.set_run(c0, n, mean);
  a.save_invstd.set_run(c0, n, invstd);
  a.weight.get_run(c0, n, w, 1.0);
  a.bias.get_run(c0, n, b, 0.0);
  for (int64_t i = 0; i < n; ++i) out(c0 + i, math::bn_forward_coeffs<T>(mean[i], invstd[i], w[i], b[i]));
}

// f(c0, n) for the runs of kRun channels that cover [0, C).
template <class F>
void each_run(int64_t C, F&& f) {
  for (int64_t c0 = 0; c0 < C; c0 += kRun) f(c0, std::min(kRun, C - c0));
}

template <class S>
void forward_typed(const BnForwardArgs& a) {
  using T = Cmp<S>;
  const BnShape s = canonical(a.shape);
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t C = s.channels;
  if (s.inner > 1) {
    std::vector<math::BnForwardCoeffs<T>> co(C);
    planar_driver<Stats>(
        C, s.per_channel(), sizeof(S),
        [&](int64_t c, int64_t j0, int64_t j1) {
          return a.training ? planar_stats(x, s, c, j0, j1) : Stats{0, 0, 0};
        },
        [&](int64_t c, const Stats& st) {
          forward_channels<T>(a, c, 1, &st, [&](int64_t, const auto& k) { co[c] = k; });
        },
        [&](int64_t c, int64_t j0, int64_t j1) { planar_normalize(x, y, s, c, j0, j1, co[c]); });
    return;
  }
  ChannelCoeffs<T> k(C);  // a: scale, b: bias
  rows_driver<Stats>(
      1, s.outer, C,
      [&](int64_t, int64_t r0, int64_t r1, bool hot, Stats* out) {
        if (a.training) rows_stats(x, C, r0, r1, hot, out);
      },
      [&](int64_t, const Stats* st) {
        each_run(C, [&](int64_t c0, int64_t n) {
          forward_channels<T>(a, c0, n, st + c0, [&](int64_t c, const auto& co) { k.set_forward(c, co); });
        });
      },
      [&](int64_t, int64_t r0, int64_t r1, bool hot) { rows_normalize(x, y, C, r0, r1, hot, k); });
}

// ---------------------------------------------------------------- backward

// dweight and dbias of channels [c0, c0 + n) from their sums (own: the reduction's, or the given
// ones of a larger batch, Note [given sums]), and out(c, coefficients) of each channel's dx
// (Note [channel runs]).
template <class T, class Out>
void backward_channels(const BnBackwardArgs& a, int64_t c0, int64_t n, double count, const GradSums* own,
                       Out&& out) {
  double mean[kRun], invstd[kRun], w[kRun], dy[kRun], dy_xc[kRun], dw[kRun];
  a.save_mean.get_run(c0, n, mean);
  a.save_invstd.get_run(c0, n, invstd);
  a.weight.get_run(c0, n, w, 1.0);
  if (a.given()) {
    a.given_sum_dy.get_run(c0, n, dy);
    a.given_sum_dy_xhat.get_run(c0, n, dy_xc);
    for (int64_t i = 0; i < n; ++i) dy_xc[i] = math::bn_sum_dy_xc(dy_xc[i], invstd[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      dy[i] = own[i].dy;
      dy_xc[i] = own[i].dy_xc;
    }
  }
  for (int64_t i = 0; i < n; ++i) dw[i] = math::bn_dweight(dy_xc[i], invstd[i]);
  a.dweight.set_run(c0, n, dw);
  a.dbias.set_run(c0, n, dy);
  for (int64_t i = 0; i < n; ++i)
    out(c0 + i, math::bn_backward_coeffs<T>(count, dy[i], dy_xc[i], mean[i], invstd[i], w[i]));
}

template <class S>
void backward_typed(const BnBackwardArgs& a) {
  using T = Cmp<S>;
  const BnShape s = canonical(a.shape);
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  S* dx = static_cast<S*>(a.dx);
  const int64_t C = s.channels, M = s.per_channel();
  // Note [given sums]: either half of the backward may be skipped.
  const bool reduce = !a.given(), apply = dx != nullptr;
  const double n = a.given() ? a.given_count : double(M);
  if (s.inner > 1) {  // Note [bn hot channel], with dy and x both hot
    std::vector<math::BnBackwardCoeffs<T>> co(C);
    planar_driver<GradSums>(
        C, M, 2 * sizeof(S),
        [&](int64_t c, int64_t j0, int64_t j1) {
          return reduce ? planar_grad_sums(dy, x, s, c, j0, j1, math::split_mean<T>(a.save_mean.get(c)))
                        : GradSums{};
        },
        [&](int64_t c, const GradSums& g) {
          backward_channels<T>(a, c, 1, n, &g, [&](int64_t, const auto& k) { co[c] = k; });
        },
        [&](int64_t c, int64_t j0, int64_t j1) {
          if (apply) planar_grad_input(dy, x, dx, s, c, j0, j1, co[c]);
        });
    return;
  }
  ChannelCoeffs<T> k(C);  // a: mean_dy, b: proj, d: scale
  for (int64_t c = 0; c < C; ++c) k.set_mean(c, math::split_mean<T>(a.save_mean.get(c)));
  rows_driver<GradSums>(
      1, s.outer, C,
      [&](int64_t, int64_t r0, int64_t r1, bool hot, GradSums* out) {
        if (reduce) rows_grad_sums(dy, x, C, r0, r1, hot, k.hi.data(), k.lo.data(), out);
      },
      [&](int64_t, const GradSums* g) {
        each_run(C, [&](int64_t c0, int64_t m) {
          backward_channels<T>(a, c0, m, n, g + c0, [&](int64_t c, const auto& co) { k.set_grad(c, co); });
        });
      },
      [&](int64_t, int64_t r0, int64_t r1, bool hot) {
        if (apply) rows_grad_input<math::BnBackwardCoeffs>(dy, x, dx, C, r0, r1, hot, k);
      });
}

// ---------------------------------------------------------------- statistics, merge, running

template <class S>
void stats_typed(const BnStatsArgs& a) {
  const BnShape s = canonical(a.shape);
  std::vector<Stats> st = channel_stats(static_cast<const S*>(a.x), s);
  for (int64_t c = 0; c < s.channels; ++c) {
    a.mean.set(c, st[c].mean);
    a.var.set(c, math::biased_var(st[c]));
  }
}

template <class S> struct ForwardFn { static void run(const BnForwardArgs& a) { forward_typed<S>(a); } };
template <class S> struct BackwardFn { static void run(const BnBackwardArgs& a) { backward_typed<S>(a); } };
template <class S> struct StatsFn { static void run(const BnStatsArgs& a) { stats_typed<S>(a); } };

void forward(const BnForwardArgs& a) { by_dtype<ForwardFn>(a.dtype, a); }
void backward(const BnBackwardArgs& a) { by_dtype<BackwardFn>(a.dtype, a); }
void stats(const BnStatsArgs& a) { by_dtype<StatsFn>(a.dtype, a); }

void merge(const BnMergeArgs& a) {
  const int64_t C = a.channels;
  for (int64_t c = 0; c < C; ++c) {
    Stats st{0, 0, 0};
    for (size_t k = 0; k < a.counts.size(); ++k) {
      const double n = a.counts[k];
      st = math::chan_merge(st, Stats{n, a.means.get(int64_t(k) * C + c),
                                      a.vars.get(int64_t(k) * C + c) * n});
    }
    a.mean.set(c, st.mean);
    a.var.set(c, math::biased_var(st));
  }
}

void update_running(const BnRunningArgs& a) {
  const double n = a.values();
  for (int64_t c = 0; c < a.channels; ++c) {
    double rm = a.running_mean.get(c), rv = a.running_var.get(c);
    math::update_running<double>(rm, rv, a.mean.get(c), a.var.get(c), n, a.momentum);
    a.running_mean.set(c, rm);
    a.running_var.set(c, rv);
  }
}

const BnKernels& bn_kernels() {
  static const BnKernels k = {FT_STR(FT_ISA), &forward, &backward, &stats, &merge, &update_running};
  return k;
}
const bool registered = IsaTables<BnKernels>::add(&bn_kernels);  // Note [isa tables]

}  // namespace

}  // namespace ft::cpu::FT_ISA
