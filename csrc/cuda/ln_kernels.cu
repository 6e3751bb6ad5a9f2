// Layer, RMS, group and instance norm on CUDA. Statistics and per-channel gradient sums are batch
// norm's kernels (csrc/cuda/norm_reduce.cuh) on the planar views of Note [planar view]: a
// layer-norm row is channel r of (1, rows, cols); a group of NCHW input is channel n * G + g of
// (1, N * G, C / G * HW); a group of channels-last sample n is channel g of (HW, G, C / G) at
// x + n * HW * C (one launch per sample, so each sample's statistics shift around its own
// values).  What batch norm lacks is here: layer norm's row sums of weight * dy and its column
// sums for dweight / dbias, the group combinations, and elementwise passes over a (rows, cols)
// matrix with coefficients per row or per (sample, channel).  The math is
// csrc/math/batch_norm.h and csrc/math/layer_norm.h.
//
// Note [cuda norm passes]: every kernel here is a grid-stride loop or one block (warp) per row
// or group with a fixed merge order, so results do not depend on scheduling; a reduction over
// many blocks goes through Reduction (Note [split merges]).
#include "cuda/ln_kernels.h"
#include "cuda/norm_reduce.cuh"
#include "math/layer_norm.h"

namespace ft::cuda {
namespace {

// ---- elementwise passes over a (rows, cols) matrix

// Block (tx, ty): tx threads over vectors of V columns, ty rows; grid (column tiles, row tiles),
// striding over row tiles. op.apply(r, c) maps columns [c, c + V) of row r.
template <int V, class Op>
__global__ void __launch_bounds__(kBlock) matrix_kernel(int64_t rows, int64_t cols, Op op) {
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= cols) return;
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += int64_t(gridDim.y) * blockDim.y)
    op.apply(r, c);
}

// Op<V> must be instantiable for every width with_width<S> may pick.
template <class S, template <class, int> class Op, class Params>
void launch_matrix(int64_t rows, int64_t cols, std::initializer_list<const void*> ptrs,
                   const Params& p, cudaStream_t st, const char* name) {
  if (rows == 0 || cols == 0) return;
  const int v = vec_width<S>(cols, ptrs);
  const int64_t vcols = cols / v;
  int tx = 1;
  while (tx < kBlock && tx < vcols) tx *= 2;
  const int ty = kBlock / tx;
  const dim3 grid(unsigned((vcols + tx - 1) / tx),
                  unsigned(std::min<int64_t>((rows + ty - 1) / ty, 65535)));
  with_width<S>(v, [&](auto V) {
    constexpr int W = decltype(V)::value;
    matrix_kernel<W, Op<S, W>><<<grid, dim3(tx, ty), 0, st>>>(rows, cols, Op<S, W>{p});
  });
  count_launch(name);
}

// Calls f(i) for i in [0, n) on the device, one thread each (f: a functor of the few per-channel
// or per-group loops below).
template <class F>
__global__ void each_kernel(int64_t n, F f) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}
template <class F>
void launch_each(int64_t n, const F& f, cudaStream_t st, const char* name) {
  if (n == 0) return;
  each_kernel<<<unsigned((n + 255) / 256), 256, 0, st>>>(n, f);
  count_launch(name);
}

// Splits of a planar reduction (as Geometry's: about 4 blocks per SM, at least 16K values each).
int planar_splits(int64_t channels, int64_t per_channel) {
  int64_t sp = (4LL * sm_count() + channels - 1) / channels;
  sp = std::min<int64_t>(sp, std::max<int64_t>(1, per_channel / 16384));
  return int(std::max<int64_t>(1, std::min<int64_t>(sp, 65535)));
}

// Statistics of the channels of `count` planar views of shape s at x + i * stride (channel c of
// view i is channel i * s.channels + c), merged and handed to epi (Note [split merges]).
template <class S, class Epilogue>
void planar_stats_pass(const S* x, const BnShape& s, int64_t count, int64_t stride,
                       cudaStream_t st, const Epilogue& epi) {
  const int v = vec_width<S>(s.inner, {x});  // s.inner divides stride: every view is aligned
  const int splits = planar_splits(s.channels * count, s.per_channel());
  Reduction<Stats> r(splits, s.channels * count, st);
  for (int64_t i = 0; i < count; ++i) {
    with_width<S>(v, [&](auto V) {
      planar_stats_kernel<S, decltype(V)::value><<<dim3(unsigned(s.channels), unsigned(splits)), kBlock, 0, st>>>(
          x + i * stride, s, r.partials + i * s.channels * splits);
    });
    count_launch("norm stats");
  }
  r.finalize(epi, st);
}

// ---------------------------------------------------------------- layer and RMS norm

struct RowStatsEpilogue {
  LnForwardArgs a;
  double* coeffs;  // per row: mean, rstd
  __device__ void operator()(int64_t r, const Stats& st) const {
    const double mean = a.rms ? 0.0 : st.mean;
    const double rstd = math::inv_std(a.rms ? math::mean_square(st) : math::biased_var(st), a.eps);
    a.mean.set(r, mean);
    a.rstd.set(r, rstd);
    coeffs[2 * r] = mean;
    coeffs[2 * r + 1] = rstd;
  }
};

struct LnApplyParams {
  const void* x;
  void* y;
  int64_t cols;
  const double* coeffs;
  ChannelArray weight, bias;
};
template <class S, int V>
struct LnApply {
  LnApplyParams p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    const auto mean = math::split_mean<T>(p.coeffs[2 * r]);
    const T rstd = T(p.coeffs[2 * r + 1]);
    Pack<S, V> in, out;
    in.load(static_cast<const S*>(p.x) + r * p.cols + c);
#pragma unroll
    for (int e = 0; e < V; ++e)
      out.v[e] = Narrow<S>::from(math::ln_forward(T(to_float(in.v[e])), mean, rstd,
                                                  T(p.weight.get(c + e, 1.0)), T(p.bias.get(c + e, 0.0))));
    out.store(static_cast<S*>(p.y) + r * p.cols + c);
  }
};

template <class S>
void ln_forward_typed(const LnForwardArgs& a, cudaStream_t st) {
  const auto* x = static_cast<const S*>(a.x);
  Scratch coeffs(sizeof(double) * 2 * size_t(a.rows), st);
  planar_stats_pass(x, BnShape{1, a.rows, a.cols}, 1, 0, st, RowStatsEpilogue{a, coeffs.as<double>()});
  launch_matrix<S, LnApply>(a.rows, a.cols, {a.x, a.y},
                            LnApplyParams{a.x, a.y, a.cols, coeffs.as<double>(), a.weight, a.bias},
                            st, "ln normalize");
}

// One block per row (striding over rows): sums of g = weight * dy and g * (x - mean) over the
// row in a fixed order, then the row's input-gradient coefficients (Note [norm grad]).
template <class S, int V>
__global__ void __launch_bounds__(kBlock)
    row_grad_kernel(const S* dy, const S* x, LnBackwardArgs a, math::NormGradCoeffs<ComputeT<S>>* co) {
  using T = ComputeT<S>;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const double mean = a.rms ? 0.0 : a.mean.get(r, 0.0), rstd = a.rstd.get(r, 0.0);
    const auto m = math::split_mean<T>(mean);
    GradSums s{0, 0};
    for (int64_t c = int64_t(threadIdx.x) * V; c < a.cols; c += int64_t(blockDim.x) * V) {
      Pack<S, V> g, p;
      g.load(dy + r * a.cols + c);
      p.load(x + r * a.cols + c);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const T gw = T(to_float(g.v[e])) * T(a.weight.get(c + e, 1.0));
        s.dy += double(gw);
        s.dy_xc += double(gw * math::centered(T(to_float(p.v[e])), m));
      }
    }
    s = block_merge(s);
    if (threadIdx.x == 0)
      co[r] = math::norm_grad_coeffs<T>(double(a.cols), a.rms ? 0.0 : s.dy, s.dy_xc, mean, rstd, 1.0);
    __syncthreads();  // block_merge's shared values are reused by the next row
  }
}

template <class S>
struct RowCoeffsParams {
  const void* dy;
  const void* x;
  void* dx;
  int64_t cols;
  const math::NormGradCoeffs<ComputeT<S>>* co;
  ChannelArray weight;
};
template <class S, int V>
struct LnGradApply {
  RowCoeffsParams<S> p;
  __device__ void apply(int64_t r, int64_t c) const {
    using T = ComputeT<S>;
    const int64_t off = r * p.cols + c;
    Pack<S, V> g, in, out;
    g.load(static_cast<const S*>(p.dy) + off);
    in.load(static_cast<const S*>(p.x) + off);
    const auto co = p.co[r];
#pragma unroll
    for (int e = 0; e < V; ++e)
      out.v[e] = Narrow<S>::from(math::norm_grad_input(T(to_float(g.v[e])) * T(p.weight.get(c + e, 1.0)),
                                                       T(to_float(in.v[e])), co));
    out.store(static_cast<S*>(p.dx) + off);
  }
};

// dweight = sum over rows of dy * xhat, dbias = sum of dy: grid (column tiles of 32, splits),
// block (32, 8); each thread walks its split's rows of one column; row lanes merge in a fixed
// tree, splits in the finalize launch.
constexpr int kColTile = 32;
template <class S>
__global__ void __launch_bounds__(kBlock) col_grad_kernel(const S* dy, const S* x, LnBackwardArgs a,
                                                          GradSums* partials) {
  using T = ComputeT<S>;
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  int64_t r0, r1;
  rows_range(a.rows, r0, r1);
  GradSums s{0, 0};
  if (c < a.cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const T d = T(to_float(dy[r * a.cols + c]));
      const auto m = math::split_mean<T>(a.rms ? 0.0 : a.mean.get(r, 0.0));
      const T xhat = math::centered(T(to_float(x[r * a.cols + c])), m) * T(a.rstd.get(r, 0.0));
      s.dy += double(d);
      s.dy_xc += double(d * xhat);
    }
  }
  s = rows_merge_lane(s);
  if (c < a.cols && threadIdx.y == 0) partials[c * gridDim.y + blockIdx.y] = s;
}

struct ParamGradEpilogue {
  ChannelArray dweight, dbias;
  __device__ void operator()(int64_t c, const GradSums& g) const {
    dweight.set(c, g.dy_xc);
    dbias.set(c, g.dy);
  }
};

template <class S>
void ln_backward_typed(const LnBackwardArgs& a, cudaStream_t st) {
  using T = ComputeT<S>;
  const auto* dy = static_cast<const S*>(a.dy);
  const auto* x = static_cast<const S*>(a.x);
  if (a.rows > 0) {
    Scratch co(sizeof(math::NormGradCoeffs<T>) * size_t(a.rows), st);
    auto* cop = co.as<math::NormGradCoeffs<T>>();
    const int v = vec_width<S>(a.cols, {dy, x});
    const unsigned blocks = unsigned(std::min<int64_t>(a.rows, 65535LL * 16));
    with_width<S>(v, [&](auto V) {
      row_grad_kernel<S, decltype(V)::value><<<blocks, kBlock, 0, st>>>(dy, x, a, cop);
    });
    count_launch("ln grad sums");
    launch_matrix<S, LnGradApply>(a.rows, a.cols, {a.dy, a.x, a.dx},
                                  RowCoeffsParams<S>{a.dy, a.x, a.dx, a.cols, cop, a.weight}, st,
                                  "ln grad input");
  }
  if (!a.dweight.present()) return;
  const int64_t tiles = (a.cols + kColTile - 1) / kColTile;
  int64_t sp = (4LL * sm_count() + tiles - 1) / tiles;
  sp = std::max<int64_t>(1, std::min<int64_t>({sp, a.rows / 64, 65535}));
  Reduction<GradSums> r(int(sp), a.cols, st);
  if (a.rows > 0) {
    col_grad_kernel<S><<<dim3(unsigned(tiles), unsigned(sp)), dim3(kColTile, kBlock / kColTile), 0, st>>>(
        dy, x, a, r.partials);
    count_launch("ln param grads");
  } else {
    cudaMemsetAsync(r.partials, 0, sizeof(GradSums) * size_t(a.cols) * size_t(sp), st);
  }
  r.finalize(ParamGradEpilogue{a.dweight, a.dbias}, st);
}

// ---------------------------------------------------------------- group and instance norm

// Index of (sample, channel) coefficients for matrix element (r, c): rows are (n, c) with cols
// HW in the planar layout, (n, hw) with cols C in the channels-last one.
struct GroupIndex {
  int64_t c, hw;
  bool channels_last;
  __device__ int64_t operator()(int64_t r, int64_t col) const {
    return channels_last ? r / hw * c + col : r;
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
    const int64_t off = r * p.cols + c;
    Pack<S, V> g, in, out;
    g.load(static_cast<const S*>(p.src) + off);
    in.load(static_cast<const S*>(p.x) + off);
#pragma unroll
    for (int e = 0; e < V; ++e)
      out.v[e] = Narrow<S>::from(math::norm_grad_input(T(to_float(g.v[e])), T(to_float(in.v[e])),
                                                       p.co[p.index(r, c + e)]));
    out.store(static_cast<S*>(p.out) + off);
  }
};

// Statistics of every group into a.mean / a.rstd and coeffs (and instance statistics into inst).
template <class S>
void group_stats(const GnForwardArgs& a, double* coeffs, double* inst, cudaStream_t st) {
  const GnShape& s = a.shape;
  const GroupStatsEpilogue epi{a, coeffs, inst};
  if (!a.use_input_stats) {
    launch_each(s.n * s.groups, epi, st, "in running coeffs");
    return;
  }
  const auto* x = static_cast<const S*>(a.x);
  if (planar_layout(s))
    planar_stats_pass(x, BnShape{1, s.n * s.groups, s.per_group()}, 1, 0, st, epi);
  else
    planar_stats_pass(x, BnShape{s.hw, s.groups, s.per_group_channels()}, s.n, s.hw * s.c, st, epi);
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
      for (int64_t n = 0; n < s.n; ++n) {
        const int64_t off = n * s.hw * s.c;
        with_width<S>(v, [&](auto V) {
          rows_grad_kernel<S, decltype(V)::value><<<g.grid(), g.block(), 0, st>>>(
              dy + off, x + off, s.hw, s.c, ChannelArray{mp + n * s.c, DType::f64},
              r.partials + n * s.c * g.splits);
        });
        count_launch("gn grad sums");
      }
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

template <class S> struct LnForwardFn { static void run(const LnForwardArgs& a, cudaStream_t st) { ln_forward_typed<S>(a, st); } };
template <class S> struct LnBackwardFn { static void run(const LnBackwardArgs& a, cudaStream_t st) { ln_backward_typed<S>(a, st); } };
template <class S> struct GnForwardFn { static void run(const GnForwardArgs& a, cudaStream_t st) { gn_forward_typed<S>(a, st); } };
template <class S> struct GnBackwardFn { static void run(const GnBackwardArgs& a, cudaStream_t st) { gn_backward_typed<S>(a, st); } };

}  // namespace

void ln_forward(const LnForwardArgs& a, Stream st) {
  if (a.rows > 0) by_dtype<LnForwardFn>(a, static_cast<cudaStream_t>(st));
}
void ln_backward(const LnBackwardArgs& a, Stream st) {
  by_dtype<LnBackwardFn>(a, static_cast<cudaStream_t>(st));
}
void gn_forward(const GnForwardArgs& a, Stream st) {
  if (a.shape.n > 0) by_dtype<GnForwardFn>(a, static_cast<cudaStream_t>(st));
}
void gn_backward(const GnBackwardArgs& a, Stream st) {
  by_dtype<GnBackwardFn>(a, static_cast<cudaStream_t>(st));
}

}  // namespace ft::cuda
