// Batch norm on CUDA: split per-channel reductions merged in a second launch in a fixed order
// (Note [split merges]), running stats and coefficients in its epilogue, then an elementwise
// pass; NCHW-like (planar) and rows (NHWC, 2-d) layouts, vector loads of up to 16 bytes.  The
// math (Welford/Chan, coefficients) is csrc/math/batch_norm.h; the reduction pieces every
// normalization shares are csrc/cuda/norm_reduce.cuh.
#include "cuda/normalization_kernels.h"
#include "cuda/norm_reduce.cuh"

namespace ft::cuda {
namespace {

// ---- epilogues: one per channel, run by the merge of its partials (Note [split merges])

struct ForwardEpilogue {
  BnForwardArgs a;
  double* coeffs;  // per channel: mean, scale, shift (for the elementwise pass)
  __device__ void operator()(int64_t c, const Stats& st) const {
    double mean, var;
    if (a.training) {
      mean = st.mean;
      var = math::biased_var(st);
      if (a.running_mean.data) {
        double rm = a.running_mean.get(c, 0), rv = a.running_var.get(c, 1);
        math::update_running<double>(rm, rv, mean, var, st.count, a.momentum);
        a.running_mean.set(c, rm);
        a.running_var.set(c, rv);
      }
    } else {
      mean = a.running_mean.get(c, 0);
      var = a.running_var.get(c, 1);
    }
    const double invstd = math::inv_std(var, a.eps);
    a.save_mean.set(c, mean);
    a.save_invstd.set(c, invstd);
    coeffs[3 * c] = mean;
    coeffs[3 * c + 1] = math::bn_forward_scale(invstd, a.weight.get(c, 1.0));
    coeffs[3 * c + 2] = a.bias.get(c, 0.0);
  }
};

struct StatsEpilogue {
  BnStatsArgs a;
  __device__ void operator()(int64_t c, const Stats& st) const {
    a.mean.set(c, st.mean);
    a.var.set(c, math::biased_var(st));
  }
};

struct BackwardEpilogue {
  BnBackwardArgs a;
  double n;
  double* coeffs;  // per channel: mean, mean_dy, proj, scale
  __device__ void operator()(int64_t c, GradSums g) const {
    const double mean = a.save_mean.get(c, 0), invstd = a.save_invstd.get(c, 1);
    if (a.given())  // Note [given sums]
      g = {a.given_sum_dy.get(c, 0), math::bn_sum_dy_xc(a.given_sum_dy_xhat.get(c, 0), invstd)};
    a.dweight.set(c, math::bn_dweight(g.dy_xc, invstd));
    a.dbias.set(c, g.dy);
    const auto k = math::bn_backward_coeffs<double>(n, g.dy, g.dy_xc, mean, invstd,
                                                    a.weight.get(c, 1.0));
    coeffs[4 * c] = mean;
    coeffs[4 * c + 1] = k.mean_dy;
    coeffs[4 * c + 2] = k.proj;
    coeffs[4 * c + 3] = k.scale;
  }
};

// map_walk over the masked walk (Note [masked planar walk]): a vector whose lanes are all the
// channel's is stored whole, the others lane by lane (their other lanes are other channels').
template <class S, int V>
__device__ __forceinline__ void store_lanes(const Pack<S, V>& o, S* out, int64_t off, Lanes l) {
  if (l.lo == 0 && l.hi == V) return o.store(out + off);
#pragma unroll
  for (int e = 0; e < V; ++e)
    if (e >= l.lo && e < l.hi) out[off + e] = o.v[e];
}
template <class S, int V, class F>
__device__ __forceinline__ void map_span(const BnShape& s, GridPos b, const S* a, S* out, F f) {
  using T = ComputeT<S>;
  span_batches<S, V>(PlanarSpanSplit<V>(s, b), s.outer * s.channels * s.inner, a,
                     [&](const auto& off, const auto& ln, const auto& pa) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (off[u] < 0) continue;
      Pack<S, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = Narrow<S>::from(f(pa[u].get(e)));
      store_lanes(o, out, off[u], ln[u]);
    }
  });
}
template <class S, int V, class F>
__device__ __forceinline__ void map_span(const BnShape& s, GridPos pos, const S* a, const S* b, S* out, F f) {
  using T = ComputeT<S>;
  span_batches<S, V>(PlanarSpanSplit<V>(s, pos), s.outer * s.channels * s.inner, a, b,
                     [&](const auto& off, const auto& ln, const auto& pa, const auto& pb) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (off[u] < 0) continue;
      Pack<S, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e)
        o.v[e] = Narrow<S>::from(f(pa[u].get(e), pb[u].get(e)));
      store_lanes(o, out, off[u], ln[u]);
    }
  });
}

// Channel c's coefficients as the epilogues store them (ForwardEpilogue: 3 doubles a channel,
// BackwardEpilogue: 4).
template <class T>
__device__ __forceinline__ math::BnForwardCoeffs<T> forward_coeffs(const double* coeffs, int64_t c) {
  const double* q = coeffs + 3 * c;
  return {math::split_mean<T>(q[0]), T(q[1]), T(q[2])};
}
template <class T>
__device__ __forceinline__ math::BnBackwardCoeffs<T> backward_coeffs(const double* coeffs, int64_t c) {
  const double* q = coeffs + 4 * c;
  return {math::split_mean<T>(q[0]), T(q[1]), T(q[2]), T(q[3])};
}

// Elementwise over the planar view, grid (C, splits): every block has one channel, so its
// coefficients are read once.  The elementwise passes walk their grid from its last block where
// `reverse` (Note [second pass in reverse]).
template <class S, int V, bool kMasked>
__global__ void __launch_bounds__(kBlock, vector_pass_blocks<S, V>(4))  // Note [pass occupancy]
    planar_normalize_kernel(const S* x, S* y, BnShape s, const double* coeffs, bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  const auto co = forward_coeffs<T>(coeffs, b.x);
  auto f = [&](T v) { return math::bn_forward(v, co); };
  if constexpr (kMasked)
    map_span<S, V>(s, b, x, y, f);
  else
    map_walk<S, V>(PlanarSplit<V>(s, b), x, y, [&](int, T v) { return f(v); });
}

template <class S, int V, bool kMasked>
__global__ void __launch_bounds__(kBlock, vector_pass_blocks<S, V>(3))  // Note [pass occupancy]
    planar_grad_input_kernel(const S* dy, const S* x, S* dx, BnShape s, const double* coeffs, bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  const auto co = backward_coeffs<T>(coeffs, b.x);
  auto f = [&](T g, T v) { return math::bn_backward(g, v, co); };
  if constexpr (kMasked)
    map_span<S, V>(s, b, dy, x, dx, f);
  else
    map_walk<S, V>(PlanarSplit<V>(s, b), dy, x, dx, [&](int, T g, T v) { return f(g, v); });
}

template <class S, int V>
__global__ void __launch_bounds__(kBlock)
    rows_normalize_kernel(const S* x, S* y, int64_t R, int64_t C, const double* coeffs, bool prefetch,
                          bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  const int64_t col = int64_t(b.x) * blockDim.x + threadIdx.x;
  if (col * V >= C) return;
  math::BnForwardCoeffs<T> co[V];
#pragma unroll
  for (int e = 0; e < V; ++e) co[e] = forward_coeffs<T>(coeffs, col * V + e);
  map_walk<S, V>(RowsSplit(R, C, col * V, prefetch, b.y), x, y, [&](int e, T v) { return math::bn_forward(v, co[e]); });
}

template <class S, int V>
__global__ void __launch_bounds__(kBlock)
    rows_grad_input_kernel(const S* dy, const S* x, S* dx, int64_t R, int64_t C, const double* coeffs,
                           bool prefetch, bool reverse) {
  grid_dependency();
  using T = ComputeT<S>;
  const GridPos b = grid_pos(reverse);
  const int64_t col = int64_t(b.x) * blockDim.x + threadIdx.x;
  if (col * V >= C) return;
  math::BnBackwardCoeffs<T> co[V];
#pragma unroll
  for (int e = 0; e < V; ++e) co[e] = backward_coeffs<T>(coeffs, col * V + e);
  map_walk<S, V>(RowsSplit(R, C, col * V, prefetch, b.y), dy, x, dx,
                 [&](int e, T g, T v) { return math::bn_backward(g, v, co[e]); });
}

// ---- coefficients without a reduction, running-stat update

// Eval mode, from the running stats; or a training batch without values, from the statistics of
// none (Note [empty training batch], bindings/norm.cpp).
__global__ void unreduced_coeffs_kernel(int64_t C, ForwardEpilogue epi) {
  grid_dependency();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) epi(c, Stats{0, 0, 0});
}

// Note [given sums]: the coefficients of dx from the given sums, no reduction; or dweight and
// dbias of a batch without values, whose sums are 0.
__global__ void unreduced_grad_coeffs_kernel(int64_t C, BackwardEpilogue epi) {
  grid_dependency();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) epi(c, GradSums{0, 0});
}

__global__ void update_running_kernel(BnRunningArgs a) {
  grid_dependency();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= a.channels) return;
  double rm = a.running_mean.get(c, 0), rv = a.running_var.get(c, 1);
  math::update_running<double>(rm, rv, a.mean.get(c, 0), a.var.get(c, 0), a.values(),
                               a.momentum);
  a.running_mean.set(c, rm);
  a.running_var.set(c, rv);
}

template <class S, class Epilogue>
void stats_pass(const S* x, const BnShape& s, cudaStream_t st, const Epilogue& epi) {
  const int v = vec_width<S>(s.inner > 1 ? s.inner : s.channels, {x});
  const Geometry g = reduction_geometry<S>(s, v);
  Reduction<Stats> r(g, s.channels, st);
  if (g.planar) {
    with_planar_width<S>(v, masked_planar<S>(s.inner, v, {x}), [&](auto V, auto M) {
      launch_kernel(planar_stats_kernel<S, decltype(V)::value, decltype(M)::value>, g.grid(), g.block(), 0,
                    st, x, s, r.partials);
    });
  } else {
    with_width<S>(v, [&](auto V) {
      launch_kernel(rows_stats_kernel<S, decltype(V)::value>, g.grid(), g.block(), 0, st, x, s.outer,
                    s.channels, r.partials, rows_prefetch(), int64_t(0));
    });
  }
  count_launch("bn stats");
  r.finalize(epi, st);
}

template <class S>
void forward_typed(const BnForwardArgs& a, cudaStream_t st) {
  const BnShape& s = a.shape;
  const auto* x = static_cast<const S*>(a.x);
  auto* y = static_cast<S*>(a.y);
  Scratch coeffs(sizeof(double) * 3 * size_t(s.channels), st);
  ForwardEpilogue epi{a, coeffs.as<double>()};
  if (a.training && s.per_channel() > 0) {
    stats_pass(x, s, st, epi);
  } else {
    // save_mean / save_invstd are written even for an empty batch.
    launch_kernel(unreduced_coeffs_kernel, unsigned((s.channels + 255) / 256), 256, 0, st, s.channels, epi);
    count_launch("bn unreduced coeffs");
  }
  if (s.per_channel() == 0) return;
  const int v = vec_width<S>(s.inner > 1 ? s.inner : s.channels, {x, y});
  const Geometry g = elementwise_geometry<S>(s, v);
  if (g.planar) {
    with_planar_width<S>(v, masked_planar<S>(s.inner, v, {x, y}), [&](auto V, auto M) {
      launch_kernel(planar_normalize_kernel<S, decltype(V)::value, decltype(M)::value>, g.grid(), g.block(), 0,
                    st, x, y, s, coeffs.as<double>(), reverse_second_pass());
    });
  } else {
    with_width<S>(v, [&](auto V) {
      launch_kernel(rows_normalize_kernel<S, decltype(V)::value>, g.grid(), g.block(), 0, st, x, y, s.outer,
                    s.channels, coeffs.as<double>(), rows_prefetch(), reverse_second_pass());
    });
  }
  count_launch("bn normalize");
}

template <class S>
void backward_typed(const BnBackwardArgs& a, cudaStream_t st) {
  const BnShape& s = a.shape;
  const int64_t C = s.channels;
  const auto* dy = static_cast<const S*>(a.dy);
  const auto* x = static_cast<const S*>(a.x);
  auto* dx = static_cast<S*>(a.dx);
  Scratch coeffs(sizeof(double) * 4 * size_t(C), st);
  BackwardEpilogue epi{a, a.given() ? a.given_count : double(s.per_channel()), coeffs.as<double>()};
  const int64_t extent = s.inner > 1 ? s.inner : C;
  if (a.given() || s.per_channel() == 0) {  // Note [given sums]; an empty batch's sums are 0
    launch_kernel(unreduced_grad_coeffs_kernel, unsigned((C + 255) / 256), 256, 0, st, C, epi);
    count_launch("bn unreduced grad coeffs");
  } else {
    const int v = vec_width<S>(extent, {dy, x});
    const Geometry g = reduction_geometry<S>(s, v);
    Reduction<GradSums> r(g, C, st);
    if (g.planar) {
      with_planar_width<S>(v, masked_planar<S>(s.inner, v, {dy, x}), [&](auto V, auto M) {
        launch_kernel(planar_grad_kernel<S, decltype(V)::value, decltype(M)::value>, g.grid(), g.block(), 0,
                      st, dy, x, s, a.save_mean, r.partials);
      });
    } else {
      with_width<S>(v, [&](auto V) {
        launch_kernel(rows_grad_kernel<S, decltype(V)::value>, g.grid(), g.block(), 0, st, dy, x, s.outer, C,
                      a.save_mean, r.partials, rows_prefetch(), int64_t(0));
      });
    }
    count_launch("bn grad sums");
    r.finalize(epi, st);
  }
  if (!dx || s.per_channel() == 0) return;  // sums only, or no dx to write
  const int v = vec_width<S>(extent, {dy, x, dx});
  const Geometry g = elementwise_geometry<S>(s, v);
  if (g.planar) {
    with_planar_width<S>(v, masked_planar<S>(s.inner, v, {dy, x, dx}), [&](auto V, auto M) {
      launch_kernel(planar_grad_input_kernel<S, decltype(V)::value, decltype(M)::value>, g.grid(), g.block(), 0,
                    st, dy, x, dx, s, coeffs.as<double>(), reverse_second_pass());
    });
  } else {
    with_width<S>(v, [&](auto V) {
      launch_kernel(rows_grad_input_kernel<S, decltype(V)::value>, g.grid(), g.block(), 0, st, dy, x, dx,
                    s.outer, C, coeffs.as<double>(), rows_prefetch(), reverse_second_pass());
    });
  }
  count_launch("bn grad input");
}

template <class S> struct ForwardFn { static void run(const BnForwardArgs& a, cudaStream_t st) { forward_typed<S>(a, st); } };
template <class S> struct BackwardFn { static void run(const BnBackwardArgs& a, cudaStream_t st) { backward_typed<S>(a, st); } };
template <class S> struct StatsFn {
  static void run(const BnStatsArgs& a, cudaStream_t st) {
    stats_pass(static_cast<const S*>(a.x), a.shape, st, StatsEpilogue{a});
  }
};

}  // namespace

void bn_forward(const BnForwardArgs& a, Stream st) {
  if (a.shape.channels == 0) return;
  by_dtype<ForwardFn>(a, static_cast<cudaStream_t>(st));
}
void bn_backward(const BnBackwardArgs& a, Stream st) {
  if (a.shape.channels == 0) return;
  by_dtype<BackwardFn>(a, static_cast<cudaStream_t>(st));
}
void bn_stats(const BnStatsArgs& a, Stream st) {
  if (a.shape.channels == 0) return;
  if (a.shape.per_channel() == 0) {
    // No values: mean 0 and variance 0 per channel (count 0), as on the CPU; all-zero bytes are
    // 0.0 in every float dtype.
    for (const ChannelArray* c : {&a.mean, &a.var})
      FT_CUDA_CHECK(cudaMemsetAsync(c->data, 0, dtype_size(c->dtype) * size_t(a.shape.channels),
                                    static_cast<cudaStream_t>(st)));
    return;
  }
  by_dtype<StatsFn>(a, static_cast<cudaStream_t>(st));
}

void bn_update_running(const BnRunningArgs& a, Stream st) {
  if (a.channels == 0) return;
  launch_kernel(update_running_kernel, unsigned((a.channels + 255) / 256), 256, 0, static_cast<cudaStream_t>(st), a);
  count_launch("bn update running");
}

}  // namespace ft::cuda
