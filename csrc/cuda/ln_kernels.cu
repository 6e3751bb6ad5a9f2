// Layer and RMS norm on CUDA: the row statistics, layer norm's row sums of weight * dy and its
// column sums for dweight / dbias, and the elementwise passes over the (rows, cols) matrix (the
// shared passes: norm_matrix.cuh, Note [cuda norm passes]).  The math is csrc/math/layer_norm.h.
#include "cuda/normalization_kernels.h"
#include "cuda/norm_matrix.cuh"
#include "math/layer_norm.h"

namespace ft::cuda {
namespace {

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
    const auto co = p.co[r];
    grad_pack<S, V>(p.dy, p.x, p.dx, r * p.cols + c, [&](int e, T dy, T x) {
      return math::norm_grad_input(dy * T(p.weight.get(c + e, 1.0)), x, co);
    });
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

template <class S> struct LnForwardFn { static void run(const LnForwardArgs& a, cudaStream_t st) { ln_forward_typed<S>(a, st); } };
template <class S> struct LnBackwardFn { static void run(const LnBackwardArgs& a, cudaStream_t st) { ln_backward_typed<S>(a, st); } };

}  // namespace

void ln_forward(const LnForwardArgs& a, Stream st) {
  if (a.rows > 0) by_dtype<LnForwardFn>(a, static_cast<cudaStream_t>(st));
}
void ln_backward(const LnBackwardArgs& a, Stream st) {
  by_dtype<LnBackwardFn>(a, static_cast<cudaStream_t>(st));
}

}  // namespace ft::cuda
