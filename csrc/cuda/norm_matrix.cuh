// The passes layer, RMS, group and instance norm share on CUDA (ln_kernels.cu, gn_kernels.cu):
// elementwise maps over a (rows, cols) matrix with coefficients per row or per (sample,
// channel), one-thread-per-item loops, and planar statistics.  Statistics and per-channel
// gradient sums are batch norm's kernels (norm_reduce.cuh) on the planar views of Note [planar
// view] (a layer-norm row that does not fit Note [register rows] is channel r of (1, rows, cols);
// a group of NCHW input is channel n * G + g of (1, N * G, C / G * HW)), or on the rows of each
// sample of channels-last input, (HW, C), per channel and then merged per group.
//
// Note [cuda norm passes]: every kernel of these files is a grid-stride loop or one block
// (warp) per row or group with a fixed merge order, so results do not depend on scheduling; a
// reduction over many blocks goes through Reduction (Note [split merges]).
#pragma once
#include "cuda/norm_reduce.cuh"

namespace ft::cuda {
namespace {

// ---- elementwise passes over a (rows, cols) matrix

// Block (tx, ty): tx threads over vectors of V columns, ty rows; grid (column tiles, row tiles),
// striding over row tiles. op.apply(r, c) maps columns [c, c + V) of row r.
template <int V, class Op>
__global__ void __launch_bounds__(kBlock) matrix_kernel(int64_t rows, int64_t cols, Op op) {
  grid_dependency();
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= cols) return;
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += int64_t(gridDim.y) * blockDim.y)
    op.apply(r, c);
}

// The input-gradient map of an elementwise pass: dx = f(e, dy, x) for the V columns at element
// offset `off` (e: the column within the vector; dy and x in the compute type).
template <class S, int V, class F>
__device__ __forceinline__ void grad_pack(const void* dy, const void* x, void* dx, int64_t off, F f) {
  using T = ComputeT<S>;
  Pack<S, V> g, in, out;
  g.load(static_cast<const S*>(dy) + off);
  in.load(static_cast<const S*>(x) + off);
#pragma unroll
  for (int e = 0; e < V; ++e) out.v[e] = Narrow<S>::from(f(e, g.get(e), in.get(e)));
  out.store(static_cast<S*>(dx) + off);
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
    launch_kernel(matrix_kernel<W, Op<S, W>>, grid, dim3(tx, ty), 0, st, rows, cols, Op<S, W>{p});
  });
  count_launch(name);
}

// Calls f(i) for i in [0, n) on the device, one thread each (f: a functor of the few per-channel
// or per-group loops below).
template <class F>
__global__ void each_kernel(int64_t n, F f) {
  grid_dependency();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}
template <class F>
void launch_each(int64_t n, const F& f, cudaStream_t st, const char* name) {
  if (n == 0) return;
  launch_kernel(each_kernel<F>, unsigned((n + 255) / 256), 256, 0, st, n, f);
  count_launch(name);
}

// Splits of a planar reduction (as Geometry's: about 4 blocks per SM, at least 16K values each).
int planar_splits(int64_t channels, int64_t per_channel) {
  int64_t sp = (4LL * sm_count() + channels - 1) / channels;
  sp = std::min<int64_t>(sp, std::max<int64_t>(1, per_channel / 16384));
  return int(std::max<int64_t>(1, std::min<int64_t>(sp, 65535)));
}

// Calls launch(first, views) for the launches that cover `count` views of a rows kernel, grid z
// of each launch indexing `views` of them from view `first` (Note [view batches]; 65535 is grid
// z's limit).
template <class F>
void each_view_batch(int64_t count, F&& launch) {
  constexpr int64_t kMaxViews = 65535;
  for (int64_t first = 0; first < count; first += kMaxViews)
    launch(first, unsigned(std::min(count - first, kMaxViews)));
}

// Statistics of the channels of the planar view s of x, merged and handed to epi (Note [split
// merges]).
template <class S, class Epilogue>
void planar_stats_pass(const S* x, const BnShape& s, cudaStream_t st, const Epilogue& epi) {
  const int v = vec_width<S>(s.inner, {x});
  const int splits = planar_splits(s.channels, s.per_channel());
  Reduction<Stats> r(splits, s.channels, st);
  with_width<S>(v, [&](auto V) {
    launch_kernel(planar_stats_kernel<S, decltype(V)::value>, dim3(unsigned(s.channels), unsigned(splits)),
                  kBlock, 0, st, x, s, r.partials);
  });
  count_launch("norm stats");
  r.finalize(epi, st);
}

}  // namespace
}  // namespace ft::cuda
