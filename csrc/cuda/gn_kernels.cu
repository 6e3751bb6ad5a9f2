// Group and instance norm on CUDA: group statistics, the group combinations of the per-channel
// gradient sums, and the elementwise passes with coefficients per (sample, channel) (the shared
// passes: norm_matrix.cuh, Note [cuda norm passes]).  The math is csrc/math/batch_norm.h and
// csrc/math/layer_norm.h.
#include "cuda/normalization_kernels.h"
#include "cuda/norm_matrix.cuh"
#include "math/layer_norm.h"

namespace ft::cuda {
namespace {

// The planar layout's matrix: (N * C, HW), a row per (sample, channel). Channels-last input is
// (HW, C) per sample (Note [view batches]).
bool planar_layout(const GnShape& s) { return !s.channels_last || s.hw == 1; }

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

// ---- elementwise passes, coefficients per (sample, channel)

// Planar: one (sample, channel) per matrix row.
template <class Co>
struct GroupApplyParams {
  const void* src;  // x (forward) or dy (backward)
  const void* x;
  void* out;
  int64_t cols;
  const Co* co;  // per row
};
template <class S, int V>
struct GnApply {
  GroupApplyParams<math::BnForwardCoeffs<ComputeT<S>>> p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    const int64_t off = r * p.cols + c;
    const auto co = p.co[r];
    Pack<S, V> in, out;
    in.load(static_cast<const S*>(p.src) + off);
#pragma unroll
    for (int e = 0; e < V; ++e) out.v[e] = Narrow<S>::from(math::bn_forward(in.get(e), co));
    out.store(static_cast<S*>(p.out) + off);
  }
};
template <class S, int V>
struct GnGradApply {
  GroupApplyParams<math::NormGradCoeffs<ComputeT<S>>> p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    const auto co = p.co[r];
    grad_pack<S, V>(p.src, p.x, p.out, r * p.cols + c, [&](int, T dy, T x) { return math::norm_grad_input(dy, x, co); });
  }
};

// Note [gn rows passes]: channels-last, each thread holds the coefficients of its V channels of
// sample b.z and walks its split's rows of that sample (Note [view batches]), as batch norm's
// rows passes do (b: the block's GridPos, Note [second pass in reverse]). Looked up per vector
// instead, they cost V scattered 16-byte loads per 16 bytes of data: an L1-bound pass at 4% of
// an H200's DRAM bandwidth.
template <class Co, int V>
__device__ __forceinline__ bool sample_coeffs(const Co* co, int64_t C, GridPos b, Co (&out)[V], int64_t& col) {
  col = int64_t(b.x) * blockDim.x + threadIdx.x;
  if (col * V >= C) return false;
#pragma unroll
  for (int e = 0; e < V; ++e) out[e] = co[int64_t(b.z) * C + col * V + e];
  return true;
}
template <class S, int V>
__global__ void __launch_bounds__(kBlock) gn_rows_normalize_kernel(
    const S* x, S* y, int64_t R, int64_t C, const math::BnForwardCoeffs<ComputeT<S>>* co, bool prefetch,
    int64_t view_stride, bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  math::BnForwardCoeffs<T> k[V];
  int64_t col;
  if (!sample_coeffs(co, C, b, k, col)) return;
  const int64_t off = int64_t(b.z) * view_stride;
  map_walk<S, V>(RowsSplit(R, C, col * V, prefetch, b.y), x + off, y + off,
                 [&](int e, T v) { return math::bn_forward(v, k[e]); });
}
template <class S, int V>
__global__ void __launch_bounds__(kBlock) gn_rows_grad_input_kernel(
    const S* dy, const S* x, S* dx, int64_t R, int64_t C, const math::NormGradCoeffs<ComputeT<S>>* co,
    bool prefetch, int64_t view_stride, bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  math::NormGradCoeffs<T> k[V];
  int64_t col;
  if (!sample_coeffs(co, C, b, k, col)) return;
  const int64_t off = int64_t(b.z) * view_stride;
  map_walk<S, V>(RowsSplit(R, C, col * V, prefetch, b.y), dy + off, x + off, dx + off,
                 [&](int e, T g, T v) { return math::norm_grad_input(g, v, k[e]); });
}

// The elementwise pass of coefficients co per (sample, channel): the planar matrix pass Apply, or
// for channels-last input rows_launch(V, grid, block, element offset, co of the first sample) for
// each batch of samples. Those split each sample's rows into about 8 blocks per SM in all, but
// no fewer than 8 rows per thread, so a thread's coefficient loads stay a small part of its
// traffic (Note [gn rows passes]).
template <class S, template <class, int> class Apply, class Co, class RowsLaunch>
void gn_elementwise(const GnShape& s, const void* src, const void* x, void* out, const Co* co,
                    std::initializer_list<const void*> ptrs, cudaStream_t st, const char* name,
                    RowsLaunch&& rows_launch) {
  if (planar_layout(s)) {
    launch_matrix<S, Apply>(s.n * s.c, s.hw, ptrs, GroupApplyParams<Co>{src, x, out, s.hw, co}, st, name);
    return;
  }
  if (s.n * s.hw == 0 || s.c == 0) return;
  const int v = vec_width<S>(s.c, ptrs);
  // Per sample: its share of 8 blocks per SM, and blocks of at least 8 vectors per thread.
  const Geometry g(BnShape{s.hw, s.c, 1}, v, sizeof(S), (8LL * sm_count() + s.n - 1) / s.n, 8LL * kBlock * v);
  each_view_batch(s.n, [&](int64_t n, unsigned views) {
    with_width<S>(v, [&](auto V) {
      rows_launch(V, dim3(g.grid().x, g.grid().y, views), g.block(), n * s.hw * s.c, co + n * s.c);
    });
    count_launch(name);
  });
}

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
      launch_kernel(rows_stats_kernel<S, decltype(V)::value>, dim3(g.grid().x, g.grid().y, views), g.block(),
                    0, st, x + n * stride, s.hw, s.c, r.partials + n * s.c * g.splits, rows_prefetch(), stride);
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
  const auto* x = static_cast<const S*>(a.x);
  auto* y = static_cast<S*>(a.y);
  gn_elementwise<S, GnApply>(s, a.x, a.x, a.y, cop, {a.x, a.y}, st, "gn normalize",
                             [&](auto V, dim3 grid, dim3 block, int64_t off, const math::BnForwardCoeffs<T>* c) {
                               launch_kernel(gn_rows_normalize_kernel<S, decltype(V)::value>, grid, block, 0, st,
                                             x + off, y + off, s.hw, s.c, c, rows_prefetch(), s.hw * s.c,
                                             reverse_second_pass());
                             });
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
        launch_kernel(planar_grad_kernel<S, decltype(V)::value>, dim3(unsigned(NC), unsigned(splits)), kBlock, 0,
                      st, dy, x, shape, ChannelArray{mp, DType::f64}, r.partials);
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
          launch_kernel(rows_grad_kernel<S, decltype(V)::value>, dim3(g.grid().x, g.grid().y, views), g.block(),
                        0, st, dy + n * stride, x + n * stride, s.hw, s.c, ChannelArray{mp + n * s.c, DType::f64},
                        r.partials + n * s.c * g.splits, rows_prefetch(), stride);
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
  auto* dx = static_cast<S*>(a.dx);
  gn_elementwise<S, GnGradApply>(s, a.dy, a.x, a.dx, cop, {a.dy, a.x, a.dx}, st, "gn grad input",
                                 [&](auto V, dim3 grid, dim3 block, int64_t off, const math::NormGradCoeffs<T>* c) {
                                   launch_kernel(gn_rows_grad_input_kernel<S, decltype(V)::value>, grid, block, 0,
                                                 st, dy + off, x + off, dx + off, s.hw, s.c, c, rows_prefetch(),
                                                 s.hw * s.c, reverse_second_pass());
                                 });
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
