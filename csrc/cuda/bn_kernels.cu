// Batch norm on CUDA: split per-channel reductions with a fixed-order last-block merge, running
// stats and coefficients in that epilogue, then an elementwise pass; NCHW-like and rows (NHWC,
// 2-d) layouts.  The math (Welford/Chan, coefficients) is csrc/math/batch_norm.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <memory>

#include "core/half.h"
#include "cuda/bn_kernels.h"
#include "cuda/check.h"
#include "cuda/device_state.h"
#include "math/batch_norm.h"

namespace ft::cuda {

extern std::atomic<uint64_t> g_launches;

namespace {

using cpu::BnShape;
using cpu::ChannelArray;
using Stats = math::BnStats<double>;

constexpr int kBlock = 256;      // planar (NCHW) reductions and elementwise passes; rows blocks

// Rows layout (R, C): a block is (tile_c channels) x (kBlock / tile_c row lanes), tile_c the
// smallest power of two >= C up to 32, so a warp reads whole rows of a narrow C (NHWC with C = 16
// reads two rows per warp instead of leaving half the lanes idle).
inline int rows_tile_c(int64_t C) {
  int t = 1;
  while (t < 32 && t < C) t *= 2;
  return t;
}

__device__ double ch_get(const ChannelArray& a, int64_t c, double absent) {
  if (!a.data) return absent;
  switch (a.dtype) {
    case DType::f32: return static_cast<const float*>(a.data)[c];
    case DType::f64: return static_cast<const double*>(a.data)[c];
    case DType::f16: return to_float(static_cast<const Half*>(a.data)[c]);
    case DType::bf16: return to_float(static_cast<const BFloat16*>(a.data)[c]);
  }
  return absent;
}

__device__ void ch_set(const ChannelArray& a, int64_t c, double v) {
  if (!a.data) return;
  switch (a.dtype) {
    case DType::f32: static_cast<float*>(a.data)[c] = float(v); break;
    case DType::f64: static_cast<double*>(a.data)[c] = v; break;
    case DType::f16: static_cast<Half*>(a.data)[c] = to_half(float(v)); break;
    case DType::bf16: static_cast<BFloat16*>(a.data)[c] = to_bf16(float(v)); break;
  }
}

template <class S> __device__ __forceinline__ double ld(const S* p) { return double(to_float(*p)); }

// What a channel reduction accumulates: statistics of x (forward) or the two gradient sums
// (backward).  Both merge in a fixed order.
struct GradSums {
  double dy, dy_xc;
};

__device__ Stats merge(const Stats& a, const Stats& b) { return math::chan_merge(a, b); }
__device__ GradSums merge(const GradSums& a, const GradSums& b) { return {a.dy + b.dy, a.dy_xc + b.dy_xc}; }

__device__ Stats shfl_down(const Stats& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.count, off), __shfl_down_sync(0xffffffffu, s.mean, off),
          __shfl_down_sync(0xffffffffu, s.m2, off)};
}
__device__ GradSums shfl_down(const GradSums& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.dy, off), __shfl_down_sync(0xffffffffu, s.dy_xc, off)};
}

// Block-wide merge of a planar block (kBlock threads), fixed tree; result in thread 0.
template <class A>
__device__ A block_merge(A v) {
  __shared__ A warp_vals[kBlock / 32];
  for (int off = 16; off > 0; off >>= 1) v = merge(v, shfl_down(v, off));
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kBlock / 32 ? warp_vals[threadIdx.x] : A{};
    for (int off = 16; off > 0; off >>= 1) v = merge(v, shfl_down(v, off));
  }
  return v;
}

// Per-thread accumulation over a channel's values [j0, j1) of the planar view (outer, inner):
// statistics around a shift (the channel's first value, Note [bn statistics]) or gradient sums.
// Walks a thread's values j0 + tid, j0 + tid + blockDim, ... < j1 of the planar view (outer,
// inner) by stepping (o, i) instead of dividing per value: 64-bit division costs more than the
// load it indexes.
struct PlanarCursor {
  int64_t o, i, inner, step_o, step_i;
  __device__ PlanarCursor(int64_t j, int64_t inner_, int64_t step)
      : o(j / inner_), i(j % inner_), inner(inner_), step_o(step / inner_), step_i(step % inner_) {}
  __device__ void next() {
    o += step_o;
    i += step_i;
    if (i >= inner) {
      i -= inner;
      ++o;
    }
  }
};

template <class S>
__device__ Stats thread_stats(const S* x, const BnShape& s, int64_t c, int64_t j0, int64_t j1,
                              double shift) {
  double n = 0, s1 = 0, s2 = 0;
  PlanarCursor at(j0 + threadIdx.x, s.inner, blockDim.x);
  for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x, at.next()) {
    const double d = ld(x + (at.o * s.channels + c) * s.inner + at.i) - shift;
    n += 1;
    s1 += d;
    s2 += d * d;
  }
  return math::from_shifted_sums(n, shift, s1, s2);
}

template <class S>
__device__ GradSums thread_grad_sums(const S* dy, const S* x, const BnShape& s, int64_t c,
                                     int64_t j0, int64_t j1, double mean) {
  GradSums g{0, 0};
  PlanarCursor at(j0 + threadIdx.x, s.inner, blockDim.x);
  for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x, at.next()) {
    const int64_t k = (at.o * s.channels + c) * s.inner + at.i;
    const double d = ld(dy + k);
    g.dy += d;
    g.dy_xc += d * (ld(x + k) - mean);
  }
  return g;
}

// ---- epilogues: one per channel, run by the last block to finish that channel

struct ForwardEpilogue {
  cpu::BnForwardArgs a;
  double* coeffs;  // per channel: mean, scale, shift (for the elementwise pass)
  __device__ void operator()(int64_t c, const Stats& st) const {
    double mean, var;
    if (a.training) {
      mean = st.mean;
      var = math::biased_var(st);
      if (a.running_mean.data) {
        double rm = ch_get(a.running_mean, c, 0), rv = ch_get(a.running_var, c, 1);
        math::update_running<double>(rm, rv, mean, var, st.count, a.momentum);
        ch_set(a.running_mean, c, rm);
        ch_set(a.running_var, c, rv);
      }
    } else {
      mean = ch_get(a.running_mean, c, 0);
      var = ch_get(a.running_var, c, 1);
    }
    const double invstd = math::inv_std(var, a.eps);
    ch_set(a.save_mean, c, mean);
    ch_set(a.save_invstd, c, invstd);
    coeffs[3 * c] = mean;
    coeffs[3 * c + 1] = math::bn_forward_scale(invstd, ch_get(a.weight, c, 1.0));
    coeffs[3 * c + 2] = ch_get(a.bias, c, 0.0);
  }
};

struct StatsEpilogue {
  cpu::BnStatsArgs a;
  __device__ void operator()(int64_t c, const Stats& st) const {
    ch_set(a.mean, c, st.mean);
    ch_set(a.var, c, math::biased_var(st));
  }
};

struct BackwardEpilogue {
  cpu::BnBackwardArgs a;
  double n;
  double* coeffs;  // per channel: mean, mean_dy, proj, scale
  __device__ void operator()(int64_t c, const GradSums& g) const {
    const double mean = ch_get(a.save_mean, c, 0), invstd = ch_get(a.save_invstd, c, 1);
    ch_set(a.dweight, c, math::bn_dweight(g.dy_xc, invstd));
    ch_set(a.dbias, c, g.dy);
    const auto k = math::bn_backward_coeffs<double>(n, g.dy, g.dy_xc, mean, invstd,
                                                    ch_get(a.weight, c, 1.0));
    coeffs[4 * c] = mean;
    coeffs[4 * c + 1] = k.mean_dy;
    coeffs[4 * c + 2] = k.proj;
    coeffs[4 * c + 3] = k.scale;
  }
};

__device__ Stats volatile_load(const Stats* p) {
  const volatile Stats* v = p;
  return {v->count, v->mean, v->m2};
}
__device__ GradSums volatile_load(const GradSums* p) {
  const volatile GradSums* v = p;
  return {v->dy, v->dy_xc};
}

// Note [last block merges]: each (channel, split) block writes its partial; the block that
// raises the channel's counter to `splits` merges all partials in split order, so the result is
// the same whichever block finishes last.
template <class A, class Epilogue>
__device__ void finish_channel(int64_t c, int splits, int split, const A& mine, A* partials,
                               unsigned* counters, const Epilogue& epi) {
  __shared__ bool last;
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    partials[c * splits + split] = mine;
    __threadfence();
    last = atomicAdd(&counters[c], 1u) == unsigned(splits - 1);
  }
  __syncthreads();
  if (last && threadIdx.x == 0 && threadIdx.y == 0) {
    __threadfence();
    A total = partials[c * splits];
    for (int k = 1; k < splits; ++k) total = merge(total, volatile_load(partials + c * splits + k));
    epi(c, total);
    counters[c] = 0;
  }
}

// ---- planar layout (outer, C, inner), inner > 1: grid (C, splits)

template <class S, class Epilogue>
__global__ void __launch_bounds__(kBlock)
    planar_stats_kernel(const S* x, BnShape s, Stats* partials, unsigned* counters, Epilogue epi) {
  const int64_t c = blockIdx.x, M = s.outer * s.inner;
  const int splits = gridDim.y, split = blockIdx.y;
  const int64_t j0 = M * split / splits, j1 = M * (split + 1) / splits;
  const double shift = ld(x + c * s.inner);
  Stats st = block_merge(thread_stats(x, s, c, j0, j1, shift));
  finish_channel(c, splits, split, st, partials, counters, epi);
}

template <class S>
__global__ void __launch_bounds__(kBlock)
    planar_grad_kernel(const S* dy, const S* x, BnShape s, ChannelArray save_mean,
                       GradSums* partials, unsigned* counters, BackwardEpilogue epi) {
  const int64_t c = blockIdx.x, M = s.outer * s.inner;
  const int splits = gridDim.y, split = blockIdx.y;
  const int64_t j0 = M * split / splits, j1 = M * (split + 1) / splits;
  GradSums g = block_merge(thread_grad_sums(dy, x, s, c, j0, j1, ch_get(save_mean, c, 0)));
  finish_channel(c, splits, split, g, partials, counters, epi);
}

// ---- rows layout (R, C): grid (ceil(C / 32), splits), block (32, 8)

// Merges the row lanes of each channel column in a fixed tree; result in row lane 0.
template <class A>
__device__ A rows_block_merge(A v) {
  __shared__ A vals[kBlock];
  const int x = threadIdx.x, tc = blockDim.x;
  vals[threadIdx.y * tc + x] = v;
  __syncthreads();
  for (int stride = blockDim.y / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.y) < stride) {
      v = merge(v, vals[(threadIdx.y + stride) * tc + x]);
      vals[threadIdx.y * tc + x] = v;
    }
    __syncthreads();
  }
  return v;
}

template <class A, class Epilogue>
__device__ void finish_rows(int64_t C, int splits, int split, const A& mine, A* partials,
                            unsigned* counters, const Epilogue& epi) {
  // One counter per channel tile; the last block of the tile finishes its 32 channels.
  __shared__ bool last;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (threadIdx.y == 0 && c < C) partials[c * splits + split] = mine;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0)
    last = atomicAdd(&counters[blockIdx.x], 1u) == unsigned(splits - 1);
  __syncthreads();
  if (last && threadIdx.y == 0 && c < C) {
    __threadfence();
    A total = partials[c * splits];
    for (int k = 1; k < splits; ++k) total = merge(total, volatile_load(partials + c * splits + k));
    epi(c, total);
  }
  if (last && threadIdx.x == 0 && threadIdx.y == 0) counters[blockIdx.x] = 0;
}

template <class S, class Epilogue>
__global__ void rows_stats_kernel(const S* x, int64_t R, int64_t C, Stats* partials,
                                  unsigned* counters, Epilogue epi) {
  const int splits = gridDim.y, split = blockIdx.y;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = R * split / splits, r1 = R * (split + 1) / splits;
  Stats st{0, 0, 0};
  if (c < C) {
    const double shift = ld(x + c);
    double n = 0, s1 = 0, s2 = 0;
    for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const double d = ld(x + r * C + c) - shift;
      n += 1;
      s1 += d;
      s2 += d * d;
    }
    st = math::from_shifted_sums(n, shift, s1, s2);
  }
  st = rows_block_merge(st);
  finish_rows(C, splits, split, st, partials, counters, epi);
}

template <class S>
__global__ void rows_grad_kernel(const S* dy, const S* x, int64_t R, int64_t C,
                                 ChannelArray save_mean, GradSums* partials, unsigned* counters,
                                 BackwardEpilogue epi) {
  const int splits = gridDim.y, split = blockIdx.y;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = R * split / splits, r1 = R * (split + 1) / splits;
  GradSums g{0, 0};
  if (c < C) {
    const double mean = ch_get(save_mean, c, 0);
    for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const double d = ld(dy + r * C + c);
      g.dy += d;
      g.dy_xc += d * (ld(x + r * C + c) - mean);
    }
  }
  g = rows_block_merge(g);
  finish_rows(C, splits, split, g, partials, counters, epi);
}

// ---- eval mode coefficients (no reduction), and the elementwise passes

__global__ void eval_coeffs_kernel(int64_t C, ForwardEpilogue epi) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) epi(c, Stats{0, 0, 0});
}

// Channel of flat element k; 32-bit division (far cheaper on the GPU) when indices fit.
__device__ __forceinline__ int64_t channel_of(int64_t k, const BnShape& s, bool small) {
  if (small) return int64_t((uint32_t(k) / uint32_t(s.inner)) % uint32_t(s.channels));
  return (k / s.inner) % s.channels;
}

template <class S>
__global__ void normalize_kernel(const S* x, S* y, BnShape s, const double* coeffs, int64_t total) {
  const bool small = total < (int64_t(1) << 32);
  using T = std::conditional_t<std::is_same_v<S, double>, double, float>;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(k, s, small);
    const math::BnForwardCoeffs<T> co{math::split_mean<T>(coeffs[3 * c]), T(coeffs[3 * c + 1]),
                                      T(coeffs[3 * c + 2])};
    y[k] = Narrow<S>::from(math::bn_forward(T(to_float(x[k])), co));
  }
}

template <class S>
__global__ void grad_input_kernel(const S* dy, const S* x, S* dx, BnShape s, const double* coeffs,
                                  int64_t total) {
  const bool small = total < (int64_t(1) << 32);
  using T = std::conditional_t<std::is_same_v<S, double>, double, float>;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(k, s, small);
    const double* q = coeffs + 4 * c;
    math::BnBackwardCoeffs<T> co{math::split_mean<T>(q[0]), T(q[1]), T(q[2]), T(q[3])};
    dx[k] = Narrow<S>::from(math::bn_backward(T(to_float(dy[k])), T(to_float(x[k])), co));
  }
}

__global__ void update_running_kernel(cpu::BnRunningArgs a) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= a.channels) return;
  double rm = ch_get(a.running_mean, c, 0), rv = ch_get(a.running_var, c, 1);
  math::update_running<double>(rm, rv, ch_get(a.mean, c, 0), ch_get(a.var, c, 0), a.count,
                               a.momentum);
  ch_set(a.running_mean, c, rm);
  ch_set(a.running_var, c, rv);
}

// ---- launch geometry

int sm_count() { return device_state().sm_count; }

// Splits per group (a channel, or a rows tile of channels) so the reduction fills at least two
// waves even for small C, while each block keeps a few thousand values to amortize its merge.
// values_per_group counts every value a group's blocks read: for a rows tile, its rows times
// its channels.
int splits_for(int64_t groups, int64_t values_per_group) {
  const int64_t want_blocks = 2LL * sm_count() * 4;
  int64_t splits = (want_blocks + groups - 1) / groups;
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, values_per_group / 4096));
  return int(std::max<int64_t>(1, std::min<int64_t>(splits, 1024)));
}

unsigned elementwise_grid(int64_t total) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((total + kBlock - 1) / kBlock, 8LL * sm_count() * 8)));
}

void count_launch(const char* name) {
  FT_CUDA_CHECK_LAUNCH(name);
  g_launches.fetch_add(1);
}

// The geometry and scratch of one channel reduction: partials per (channel, split) and a
// zeroed counter per channel group (Note [last block merges]), freed in stream order.
template <class A>
struct Reduction {
  bool planar;
  int tile_c;
  int64_t groups;
  int splits;
  std::unique_ptr<Scratch> mem;
  A* partials;
  unsigned* counters;

  Reduction(const BnShape& s, cudaStream_t st) : planar(s.inner > 1) {
    const int64_t C = s.channels;
    tile_c = planar ? 1 : rows_tile_c(C);
    groups = planar ? C : (C + tile_c - 1) / tile_c;
    splits = splits_for(groups, s.per_channel() * std::min<int64_t>(tile_c, C));
    const size_t pbytes = sizeof(A) * size_t(C) * size_t(splits);
    mem = std::make_unique<Scratch>(pbytes + sizeof(unsigned) * size_t(groups), st);
    partials = mem->as<A>();
    counters = reinterpret_cast<unsigned*>(mem->as<char>() + pbytes);
    FT_CUDA_CHECK(cudaMemsetAsync(counters, 0, sizeof(unsigned) * size_t(groups), st));
  }
  dim3 planar_grid(int64_t C) const { return dim3(unsigned(C), unsigned(splits)); }
  dim3 rows_grid() const { return dim3(unsigned(groups), unsigned(splits)); }
  dim3 rows_block() const { return dim3(unsigned(tile_c), unsigned(kBlock / tile_c)); }
};

template <class S, class Epilogue>
void stats_pass(const S* x, const BnShape& s, cudaStream_t st, const Epilogue& epi) {
  Reduction<Stats> r(s, st);
  if (r.planar) {
    planar_stats_kernel<S><<<r.planar_grid(s.channels), kBlock, 0, st>>>(x, s, r.partials, r.counters, epi);
  } else {
    rows_stats_kernel<S><<<r.rows_grid(), r.rows_block(), 0, st>>>(x, s.outer, s.channels,
                                                                   r.partials, r.counters, epi);
  }
  count_launch("bn stats");
}

template <class S>
void forward_typed(const cpu::BnForwardArgs& a, cudaStream_t st) {
  const BnShape& s = a.shape;
  const int64_t total = s.per_channel() * s.channels;
  Scratch coeffs(sizeof(double) * 3 * size_t(s.channels), st);
  ForwardEpilogue epi{a, coeffs.as<double>()};
  if (a.training) {
    stats_pass(static_cast<const S*>(a.x), s, st, epi);
  } else {
    // Eval mode writes save_mean / save_invstd from the running stats even for an empty batch.
    eval_coeffs_kernel<<<unsigned((s.channels + 255) / 256), 256, 0, st>>>(s.channels, epi);
    count_launch("bn eval coeffs");
  }
  if (total == 0) return;
  normalize_kernel<S><<<elementwise_grid(total), kBlock, 0, st>>>(
      static_cast<const S*>(a.x), static_cast<S*>(a.y), s, coeffs.as<double>(), total);
  count_launch("bn normalize");
}

template <class S>
void backward_typed(const cpu::BnBackwardArgs& a, cudaStream_t st) {
  const BnShape& s = a.shape;
  const int64_t C = s.channels;
  Scratch coeffs(sizeof(double) * 4 * size_t(C), st);
  BackwardEpilogue epi{a, double(s.per_channel()), coeffs.as<double>()};
  Reduction<GradSums> r(s, st);
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  if (r.planar) {
    planar_grad_kernel<S><<<r.planar_grid(C), kBlock, 0, st>>>(dy, x, s, a.save_mean, r.partials,
                                                                r.counters, epi);
  } else {
    rows_grad_kernel<S><<<r.rows_grid(), r.rows_block(), 0, st>>>(
        dy, x, s.outer, C, a.save_mean, r.partials, r.counters, epi);
  }
  count_launch("bn grad sums");
  const int64_t total = s.per_channel() * C;
  grad_input_kernel<S><<<elementwise_grid(total), kBlock, 0, st>>>(dy, x, static_cast<S*>(a.dx), s,
                                                                   coeffs.as<double>(), total);
  count_launch("bn grad input");
}

template <template <class> class Fn, class Args>
void by_dtype(const Args& a, cudaStream_t st) {
  switch (a.dtype) {
    case DType::f32: return Fn<float>::run(a, st);
    case DType::f64: return Fn<double>::run(a, st);
    case DType::f16: return Fn<Half>::run(a, st);
    case DType::bf16: return Fn<BFloat16>::run(a, st);
  }
}
template <class S> struct ForwardFn { static void run(const cpu::BnForwardArgs& a, cudaStream_t st) { forward_typed<S>(a, st); } };
template <class S> struct BackwardFn { static void run(const cpu::BnBackwardArgs& a, cudaStream_t st) { backward_typed<S>(a, st); } };
template <class S> struct StatsFn {
  static void run(const cpu::BnStatsArgs& a, cudaStream_t st) {
    stats_pass(static_cast<const S*>(a.x), a.shape, st, StatsEpilogue{a});
  }
};

}  // namespace

void bn_forward(const cpu::BnForwardArgs& a, Stream st) {
  if (a.shape.channels == 0 || (a.training && a.shape.per_channel() == 0)) return;
  by_dtype<ForwardFn>(a, static_cast<cudaStream_t>(st));
}
void bn_backward(const cpu::BnBackwardArgs& a, Stream st) {
  if (a.shape.per_channel() * a.shape.channels == 0) return;
  by_dtype<BackwardFn>(a, static_cast<cudaStream_t>(st));
}
void bn_stats(const cpu::BnStatsArgs& a, Stream st) {
  if (a.shape.per_channel() * a.shape.channels == 0) return;
  by_dtype<StatsFn>(a, static_cast<cudaStream_t>(st));
}

void bn_update_running(const cpu::BnRunningArgs& a, Stream st) {
  if (a.channels == 0) return;
  update_running_kernel<<<unsigned((a.channels + 255) / 256), 256, 0, static_cast<cudaStream_t>(st)>>>(a);
  count_launch("bn update running");
}

}  // namespace ft::cuda
