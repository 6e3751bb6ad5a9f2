// Group and instance norm on CUDA: group statistics, the group combinations of the per-channel
// gradient sums, and the elementwise passes with coefficients per (sample, channel) (the shared
// passes: norm_matrix.cuh, Note [cuda norm passes]).  The math is csrc/math/batch_norm.h and
// csrc/math/layer_norm.h.
#include "cuda/normalization_kernels.h"
#include "cuda/norm_matrix.cuh"
#include "math/layer_norm.h"

namespace ft::cuda {
namespace {

// Index of (sample, channel) coefficients for matrix element (r, c): rows are (n, c) with cols
// HW in the planar layout, (n, hw) with cols C in the channels-last one.
struct GroupIndex {
  int64_t c, hw;
  bool channels_last;
  __device__ int64_t operator()(int64_t r, int64_t col) const {
    if (!channels_last) return r;
    // A 32-bit division where the row fits (a 64-bit one costs several times the instructions,
    // once per vector of the elementwise passes).
    const bool narrow = (uint64_t(r) >> 32) == 0 && (uint64_t(hw) >> 32) == 0;
    const int64_t n = narrow ? int64_t(uint32_t(r) / uint32_t(hw)) : r / hw;
    return n * c + col;
  }
};

// The matrix of a group-norm input: (N * C, HW), or (N * HW, C) channels-last.
bool planar_layout(const GnShape& s) { return !s.channels_last || s.hw == 1; }
int64_t matrix_rows(const GnShape& s) { return planar_layout(s) ? s.n * s.c : s.n * s.hw; }
int64_t matrix_cols(const GnShape& s) { return planar_layout(s) ? s.hw : s.c; }
GroupIndex group_index(const GnShape& s) { return {s.c, s.hw, !planar_layout(s)}; }

struct GroupStatsEpilogue {
  GnForwardArgs a;
  double* coeffs;  // per group: mean, rstd
  double* inst;    // per group: mean, biased var (for instance norm's running stats), or null
  __device__ void operator()(int64_t k, const Stats& st) const {
    double mean, var;
    if (a.use_input_stats) {
      mean = st.mean;
      var = math::biased_var(st);
      if (inst) {
        inst[2 * k] = mean;
        inst[2 * k + 1] = var;
      }
    } else {  // instance norm (G == C) with its running statistics
      mean = a.running_mean.get(k % a.shape.c, 0.0);
      var = a.running_var.get(k % a.shape.c, 1.0);
    }
    const double rstd = math::inv_std(var, a.eps);
    a.mean.set(k, mean);
    a.rstd.set(k, rstd);
    coeffs[2 * k] = mean;
    coeffs[2 * k + 1] = rstd;
  }
  __device__ void operator()(int64_t k) const { (*this)(k, Stats{0, 0, 0}); }  // running stats
};

// Per channel c: instance norm's running statistics (Note [group sums]).
struct InstanceRunning {
  GnForwardArgs a;
  const double* inst;
  __device__ void operator()(int64_t c) const { math::instance_running_update(a, inst, c); }
};

// Forward coefficients of (sample, channel) i from its group's mean and rstd.
template <class T>
struct GroupForwardCoeffs {
  GnForwardArgs a;
  const double* group;  // per group: mean, rstd
  math::BnForwardCoeffs<T>* co;
  __device__ void operator()(int64_t i) const {
    const GnShape& s = a.shape;
    const int64_t c = i % s.c, k = i / s.c * s.groups + c / s.per_group_channels();
    co[i] = math::bn_forward_coeffs<T>(group[2 * k], group[2 * k + 1], a.weight.get(c, 1.0),
                                       a.bias.get(c, 0.0));
  }
};

// Each (sample, channel)'s group mean, for the gradient sums.
struct GroupMeans {
  GnBackwardArgs a;
  double* means;
  __device__ void operator()(int64_t i) const {
    const GnShape& s = a.shape;
    means[i] = a.mean.get(i / s.c * s.groups + i % s.c / s.per_group_channels(), 0.0);
  }
};

// Per group k: its channels' input-gradient coefficients (Note [group sums]).
template <class T>
struct GroupGradCoeffs {
  GnBackwardArgs a;
  const double* sums;
  math::NormGradCoeffs<T>* co;
  __device__ void operator()(int64_t k) const {
    math::group_grad_coeffs<T>(a, sums, k, [this](int64_t i, const math::NormGradCoeffs<T>& c) { co[i] = c; });
  }
};

// Per channel c: dweight and dbias (Note [group sums]).
struct GroupParamGrads {
  GnBackwardArgs a;
  const double* sums;
  __device__ void operator()(int64_t c) const { math::group_param_grads(a, sums, c); }
};

template <class Co>
struct GroupApplyParams {
  const void* src;  // x (forward) or dy (backward)
  const void* x;
  void* out;
  int64_t cols;
  GroupIndex index;
  const Co* co;  // per (sample, channel)
};
template <class S, int V>
struct GnApply {
  GroupApplyParams<math::BnForwardCoeffs<ComputeT<S>>> p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    const int64_t off = r * p.cols + c;
    Pack<S, V> in, out;
    in.load(static_cast<const S*>(p.src) + off);
#pragma unroll
    for (int e = 0; e < V; ++e)
      out.v[e] = Narrow<S>::from(math::bn_forward(T(to_float(in.v[e])), p.co[p.index(r, c + e)]));
    out.store(static_cast<S*>(p.out) + off);
  }
};
template <class S, int V>
struct GnGradApply {
  GroupApplyParams<math::NormGradCoeffs<ComputeT<S>>> p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    grad_pack<S, V>(p.src, p.x, p.out, r * p.cols + c, [&](int e, T dy, T x) {
      return math::norm_grad_input(dy, x, p.co[p.index(r, c + e)]);
    });
  }
};

struct StoreStats {
  Stats* out;
  __device__ void operator()(int64_t i, const Stats& st) const { out[i] = st; }
};
// Group k's statistics: its channels' (per sample), Chan-merged in channel order.
struct GroupOfChannels {
  GnShape s;
  const Stats* chan;  // per (sample, channel)
  GroupStatsEpilogue epi;
  __device__ void operator()(int64_t k) const {
    const int64_t c0 = k / s.groups * s.c + k % s.groups * s.per_group_channels();
    Stats st{0, 0, 0};
    for (int64_t c = c0; c < c0 + s.per_group_channels(); ++c) st = merge(st, chan[c]);
    epi(k, st);
  }
};

// Statistics of every group into a.mean / a.rstd and coeffs (and instance statistics into inst).
// Channels-last input: per (sample, channel) down the rows of each sample's (HW, C) matrix, whole
// lines per warp (a group's C / G channels are as little as 16 bytes of each 512-byte row), then
// merged per group.
template <class S>
void group_stats(const GnForwardArgs& a, double* coeffs, double* inst, cudaStream_t st) {
  const GnShape& s = a.shape;
  const GroupStatsEpilogue epi{a, coeffs, inst};
  if (!a.use_input_stats) {
    launch_each(s.n * s.groups, epi, st, "in running coeffs");
    return;
  }
  const auto* x = static_cast<const S*>(a.x);
  if (planar_layout(s) || s.hw == 0) {
    planar_stats_pass(x, BnShape{1, s.n * s.groups, s.per_group()}, st, epi);
    return;
  }
  const BnShape shape{s.hw, s.c, 1};
  const int v = vec_width<S>(s.c, {x});
  const Geometry g = reduction_geometry<S>(shape, v);
  const int64_t NC = s.n * s.c, stride = s.hw * s.c;
  Reduction<Stats> r(g, NC, st);
  each_view_batch(s.n, [&](int64_t n, unsigned views) {
    with_width<S>(v, [&](auto V) {
      rows_stats_kernel<S, decltype(V)::value><<<dim3(g.grid().x, g.grid().y, views), g.block(), 0, st>>>(
          x + n * stride, s.hw, s.c, r.partials + n * s.c * g.splits, stride);
    });
    count_launch("gn channel stats");
  });
  Scratch chan(sizeof(Stats) * size_t(NC), st);
  r.finalize(StoreStats{chan.as<Stats>()}, st);
  launch_each(s.n * s.groups, GroupOfChannels{s, chan.as<Stats>(), epi}, st, "gn group stats");
}

template <class S>
void gn_forward_typed(const GnForwardArgs& a, cudaStream_t st) {
  using T = ComputeT<S>;
  const GnShape& s = a.shape;
  const bool running = a.use_input_stats && a.running_mean.present();
  Scratch group(sizeof(double) * 2 * size_t(s.n * s.groups), st);
  Scratch inst(sizeof(double) * 2 * size_t(running ? s.n * s.groups : 1), st);
  group_stats<S>(a, group.as<double>(), running ? inst.as<double>() : nullptr, st);
  if (running) launch_each(s.c, InstanceRunning{a, inst.as<double>()}, st, "in update running");
  Scratch co(sizeof(math::BnForwardCoeffs<T>) * size_t(s.n * s.c), st);
  auto* cop = co.as<math::BnForwardCoeffs<T>>();
  launch_each(s.n * s.c, GroupForwardCoeffs<T>{a, group.as<double>(), cop}, st, "gn coeffs");
  launch_matrix<S, GnApply>(matrix_rows(s), matrix_cols(s), {a.x, a.y},
                            GroupApplyParams<math::BnForwardCoeffs<T>>{a.x, a.x, a.y, matrix_cols(s),
                                                                       group_index(s), cop},
                            st, "gn normalize");
}

struct ChannelSumsEpilogue {
  double* sums;  // per (sample, channel): sum dy, sum dy * (x - mean)
  __device__ void operator()(int64_t i, const GradSums& g) const {
    sums[2 * i] = g.dy;
    sums[2 * i + 1] = g.dy_xc;
  }
};

template <class S>
void gn_backward_typed(const GnBackwardArgs& a, cudaStream_t st) {
  using T = ComputeT<S>;
  const GnShape& s = a.shape;
  const int64_t NC = s.n * s.c;
  const auto* dy = static_cast<const S*>(a.dy);
  const auto* x = static_cast<const S*>(a.x);
  Scratch sums(sizeof(double) * 2 * size_t(std::max<int64_t>(NC, 1)), st);
  double* sp = sums.as<double>();
  if (NC > 0) {
    // Each (sample, channel)'s group mean, then its sums of dy and dy * (x - mean).
    Scratch means(sizeof(double) * size_t(NC), st);
    double* mp = means.as<double>();
    launch_each(NC, GroupMeans{a, mp}, st, "gn means");
    if (planar_layout(s)) {
      const BnShape shape{1, NC, s.hw};
      const int v = vec_width<S>(s.hw, {dy, x});
      const int splits = planar_splits(NC, s.hw);
      Reduction<GradSums> r(splits, NC, st);
      with_width<S>(v, [&](auto V) {
        planar_grad_kernel<S, decltype(V)::value><<<dim3(unsigned(NC), unsigned(splits)), kBlock, 0, st>>>(
            dy, x, shape, ChannelArray{mp, DType::f64}, r.partials);
      });
      count_launch("gn grad sums");
      r.finalize(ChannelSumsEpilogue{sp}, st);
    } else {
      const BnShape shape{s.hw, s.c, 1};
      const int v = vec_width<S>(s.c, {dy, x});
      const Geometry g = reduction_geometry<S>(shape, v);
      Reduction<GradSums> r(g, NC, st);
      const int64_t stride = s.hw * s.c;
      each_view_batch(s.n, [&](int64_t n, unsigned views) {
        with_width<S>(v, [&](auto V) {
          rows_grad_kernel<S, decltype(V)::value><<<dim3(g.grid().x, g.grid().y, views), g.block(), 0, st>>>(
              dy + n * stride, x + n * stride, s.hw, s.c, ChannelArray{mp + n * s.c, DType::f64},
              r.partials + n * s.c * g.splits, stride);
        });
        count_launch("gn grad sums");
      });
      r.finalize(ChannelSumsEpilogue{sp}, st);
    }
  }
  // Per group: the sums of g = weight * dy (Note [norm grad]) and its channels' coefficients.
  Scratch co(sizeof(math::NormGradCoeffs<T>) * size_t(std::max<int64_t>(NC, 1)), st);
  auto* cop = co.as<math::NormGradCoeffs<T>>();
  launch_each(s.n * s.groups, GroupGradCoeffs<T>{a, sp, cop}, st, "gn grad coeffs");
  if (a.dweight.present()) launch_each(s.c, GroupParamGrads{a, sp}, st, "gn param grads");
  launch_matrix<S, GnGradApply>(matrix_rows(s), matrix_cols(s), {a.dy, a.x, a.dx},
                                GroupApplyParams<math::NormGradCoeffs<T>>{a.dy, a.x, a.dx, matrix_cols(s), group_index(s), cop},
                                st, "gn grad input");
}

template <class S> struct GnForwardFn { static void run(const GnForwardArgs& a, cudaStream_t st) { gn_forward_typed<S>(a, st); } };
template <class S> struct GnBackwardFn { static void run(const GnBackwardArgs& a, cudaStream_t st) { gn_backward_typed<S>(a, st); } };

}  // namespace

void gn_forward(const GnForwardArgs& a, Stream st) {
  if (a.shape.n > 0) by_dtype<GnForwardFn>(a, static_cast<cudaStream_t>(st));
}
void gn_backward(const GnBackwardArgs& a, Stream st) {
  by_dtype<GnBackwardFn>(a, static_cast<cudaStream_t>(st));
}

}  // namespace ft::cuda
