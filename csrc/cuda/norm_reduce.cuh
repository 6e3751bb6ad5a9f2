// The pieces of a CUDA channel reduction every normalization shares (batch, layer, RMS, group,
// instance norm): vector loads (Pack), per-thread shifted sums (StatSums, GradAccum), warp, block
// and row-lane merges, the batches of a walk (Note [batched walk], cuda/norm_walk.cuh), the
// planar statistics and gradient-sum kernels (Note [planar view]), the rows statistics and
// gradient-sum kernels, launch geometry, and the split reduction with its finalize launch
// (Reduction, Note [split merges]).  Written for batch norm (csrc/cuda/bn_kernels.cu); the math
// is csrc/math/batch_norm.h.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "core/half.h"
#include "core/norm_args.h"
#include "cuda/check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_state.h"
#include "cuda/norm_walk.cuh"
#include "cuda/row_kernel_options.h"
#include "math/batch_norm.h"

namespace ft::cuda {

extern std::atomic<uint64_t> g_launches;

namespace {

using Stats = math::BnStats<double>;

constexpr int kBlock = 256;  // threads per block, every kernel

// The block's dynamic shared memory (the launch's third argument), as T.
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
#ifdef FT_EMU_DYNAMIC_SHARED  // the host emulation's stand-in (tests/cuda_emu)
  return static_cast<T*>(FT_EMU_DYNAMIC_SHARED());
#else
  extern __shared__ __align__(16) unsigned char ft_dynamic_shared[];
  return reinterpret_cast<T*>(ft_dynamic_shared);
#endif
}

// Note [next-row prefetch]: a kernel that strides over rows reads a row, merges its sums across
// the row's threads and only then writes, so each block's loads come in bursts with gaps between
// them, and at the one to three blocks per SM that the row kernels' registers allow, DRAM idles
// in those gaps (ncu on an H200: layer-norm backward at 31-43% of DRAM bandwidth, stalled on
// loads).  Asking L2 for the block's next row when a row starts keeps a second row in flight
// through the gaps; the loads of that row then wait on L2, not DRAM.  A prefetch is a hint: it
// reads nothing into registers and changes no result.  sm_90 has it as one bulk instruction per
// row and array (16-byte aligned, a multiple of 16 bytes: the row kernels' vector rows are);
// before sm_90 it would be a loop of line prefetches, which took the fp32 rows-of-8192 forward
// from 90 to 188 registers, so older GPUs and the host emulation go without.
template <class S>
__device__ __forceinline__ void prefetch_row_l2(const S* row, int64_t cols) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(__cvta_generic_to_global(row)),
                 "r"(uint32_t(cols * int64_t(sizeof(S))))
                 : "memory");
#elif defined(FT_EMU_PREFETCH_L2)  // the host emulation checks the instruction's alignment rules
  if (threadIdx.x == 0) FT_EMU_PREFETCH_L2(row, cols * int64_t(sizeof(S)));
#else
  (void)row;
  (void)cols;
#endif
}

// Note [async row copy]: a 16-byte copy from global to shared memory that the thread issues and
// goes on (sm_80's cp.async, L2 to shared, bypassing L1), complete only after its
// copy_async_wait(); the thread's own later reads of the destination then see it. The host
// emulation defers each copy to that wait, so a read before it sees the 0xFF fill of unset
// shared memory, as a GPU's would see stale bytes; devices before sm_80 copy at once.
__device__ __forceinline__ void copy_async_16(void* dst_shared, const void* src_global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(uint32_t(__cvta_generic_to_shared(dst_shared))),
               "l"(__cvta_generic_to_global(src_global))
               : "memory");
#elif defined(FT_EMU_COPY_ASYNC)
  FT_EMU_COPY_ASYNC(dst_shared, src_global, 16);
#else
  *static_cast<uint4*>(dst_shared) = *static_cast<const uint4*>(src_global);
#endif
}
// Waits for every copy_async_16 this thread issued.
__device__ __forceinline__ void copy_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#elif defined(FT_EMU_COPY_ASYNC)
  FT_EMU_COPY_WAIT();
#endif
}

// Lets Kernel take `bytes` of dynamic shared memory past the 48 KB a launch gets without asking;
// once per device (the attribute is the device context's).
template <auto Kernel>
void allow_dynamic_shared(size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::atomic<uint64_t> done{0};  // bit d: set on device d
  const int d = device_state().device;
  const uint64_t bit = d < 64 ? uint64_t(1) << d : 0;
  if (bit && (done.load() & bit)) return;
  FT_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  done.fetch_or(bit);
}

// Note [pass occupancy]: ptxas picks a kernel's registers for its own schedule, blind to how
// many blocks of kBlock threads an SM then holds: one register past a step (80 -> 81) costs a
// block per SM, a quarter or a third of the loads in flight.  The normalization passes over
// 16-byte vectors whose registers grew past a step when their batches became full batches with
// whole-vector stores (Note [full batches], Note [vector stores]) are compiled for the blocks per
// SM they ran at before (__launch_bounds__' second argument: at most 65536 / (blocks * kBlock)
// registers), where that needs no spill: rows gradient sums 3 (2-byte values 2), planar
// normalize 4, layer norm rows forward of 4 vectors 4, its backward without column
// sums of 4 or more vectors 3.  The planar input gradient holds 3, one fewer: at 4 it spilled.
// The layer norm rows forward of 8 vectors (every fp32 row from 1024 to 8192 values) goes from 2
// blocks to 3: it took 81-83 registers, 3 below the step (ncu on an H200: 25% occupancy, stalled
// on loads), and takes 78 with the bound, without a spill.
// A bound is a ceiling ptxas then fills, so narrower vectors, a rarer path, are left to ptxas.
template <class S, int V>
constexpr int vector_pass_blocks(int blocks) { return V * int(sizeof(S)) == 16 ? blocks : 0; }

// Compute type of storage S (Note [compute type]).
template <class S> using ComputeT = std::conditional_t<std::is_same_v<S, double>, double, float>;
// ---- V consecutive elements as one access of V * sizeof(S) bytes

template <int Bytes> struct RawVec;
template <> struct RawVec<2> { using type = unsigned short; };
template <> struct RawVec<4> { using type = unsigned; };
template <> struct RawVec<8> { using type = uint2; };
template <> struct RawVec<16> { using type = uint4; };

// Note [vector stores]: a pack is stored as one access of its V * sizeof(S) bytes.  Written as a
// copy of the raw vector, the compiler kept that only for the first few stores of a long
// unrolled block and split the later ones into one store per 4 (or 2) bytes: the layer norm
// rows kernels of 4 and 8 vectors per thread and the full batches of the planar passes (Note
// [full batches]) issued 4-8x the store instructions, each writing a quarter of every sector it
// touches.  __stwb is a single store instruction of the whole vector (default caching), which
// the compiler does not split.
template <class S, int V>
struct Pack {
  alignas(sizeof(S) * V) S v[V];  // the raw vector's alignment, wherever the pack lives
  __device__ __forceinline__ void load(const S* p) {
    using R = typename RawVec<sizeof(S) * V>::type;
    *reinterpret_cast<R*>(v) = *reinterpret_cast<const R*>(p);
  }
  // Value e in the compute type.  Note [bf16 pairs]: a bf16 value is the high half of a float, so
  // the one in the high half of a 32-bit word of the pack converts by masking the word (one
  // instruction) where extracting the 16-bit value first and shifting it back took two.
  __device__ __forceinline__ ComputeT<S> get(int e) const {
    if constexpr (std::is_same_v<S, BFloat16> && V >= 2) {
      uint32_t w;
      std::memcpy(&w, &v[e & ~1], sizeof w);
      return f32_from_bits(e & 1 ? w & 0xFFFF0000u : w << 16);
    } else {
      return ComputeT<S>(to_float(v[e]));
    }
  }
  __device__ __forceinline__ void store(S* p) const {
    using R = typename RawVec<sizeof(S) * V>::type;
#if defined(__CUDA_ARCH__)
    if constexpr (sizeof(R) >= 4) return __stwb(reinterpret_cast<R*>(p), *reinterpret_cast<const R*>(v));  // Note [vector stores]
#endif
    *reinterpret_cast<R*>(p) = *reinterpret_cast<const R*>(v);
  }
};

// The vector width for an extent (inner, or C for rows) and the arrays read or written with it:
// the widest of 16 bytes, 8 bytes or one element that divides the extent and fits the alignment.
template <class S>
int vec_width(int64_t extent, std::initializer_list<const void*> ptrs) {
  constexpr int vmax = int(16 / sizeof(S));
  for (int v : {vmax, vmax / 2}) {
    if (v <= 1 || extent % v != 0) continue;
    bool aligned = true;
    for (const void* p : ptrs) aligned = aligned && reinterpret_cast<uintptr_t>(p) % (v * sizeof(S)) == 0;
    if (aligned) return v;
  }
  return 1;
}

// Calls f.template operator()<V>() with V the compile-time twin of the run-time width.
template <class S, class F>
void with_width(int v, F&& f) {
  constexpr int vmax = int(16 / sizeof(S));
  if (v == vmax) return f(std::integral_constant<int, vmax>{});
  if constexpr (vmax / 2 > 1) {
    if (v == vmax / 2) return f(std::integral_constant<int, vmax / 2>{});
  }
  f(std::integral_constant<int, 1>{});
}

// Whether the planar view takes the masked walk (Note [masked planar walk], norm_walk.cuh) at the
// widest vector: when its runs do not split into those vectors but are long enough (4 vectors or
// more) that the few lanes read for nothing cost less than reading one value per access, and
// every array is 16-byte aligned.
template <class S>
bool masked_planar(int64_t inner, int v, std::initializer_list<const void*> ptrs) {
  constexpr int vmax = int(16 / sizeof(S));
  if (vmax <= 1 || v == vmax || inner < 4 * vmax) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Calls f(V, M) for a planar launch: M (std::true_type) the masked walk at the widest V, or the
// plain walk at width v.
template <class S, class F>
void with_planar_width(int v, bool masked, F&& f) {
  constexpr int vmax = int(16 / sizeof(S));
  if constexpr (vmax > 1) {
    if (masked) return f(std::integral_constant<int, vmax>{}, std::true_type{});
  }
  with_width<S>(v, [&](auto V) { f(V, std::false_type{}); });
}

// ---- what a channel reduction accumulates, and its fixed-order merges

struct GradSums {
  double dy, dy_xc;
};

// Note [shared shift]: every thread that sums a channel's values shifts them by the same value,
// the channel's first, so the threads' shifted sums merge by adding (count, s1, s2) in a fixed
// order, where merging their statistics takes a Chan step, a double division, per merge.  A
// block's reduction then turns into statistics once per channel (stats()), the partial its
// finalize merges by Chan's rule.
struct ShiftedSums {
  double n, s1, s2;
  __device__ Stats stats(double shift) const { return math::from_shifted_sums(n, shift, s1, s2); }
};

__device__ Stats merge(const Stats& a, const Stats& b) { return math::chan_merge(a, b); }
__device__ GradSums merge(const GradSums& a, const GradSums& b) { return {a.dy + b.dy, a.dy_xc + b.dy_xc}; }
__device__ ShiftedSums merge(const ShiftedSums& a, const ShiftedSums& b) {
  return {a.n + b.n, a.s1 + b.s1, a.s2 + b.s2};
}

__device__ Stats shfl_down(const Stats& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.count, off), __shfl_down_sync(0xffffffffu, s.mean, off),
          __shfl_down_sync(0xffffffffu, s.m2, off)};
}
__device__ GradSums shfl_down(const GradSums& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.dy, off), __shfl_down_sync(0xffffffffu, s.dy_xc, off)};
}
__device__ ShiftedSums shfl_down(const ShiftedSums& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.n, off), __shfl_down_sync(0xffffffffu, s.s1, off),
          __shfl_down_sync(0xffffffffu, s.s2, off)};
}

// Per-thread sums of one channel's values: shifted sums for statistics (Note [bn statistics]),
// dy and dy * (x - mean) for the backward.  Each vector's V values are summed in the compute type
// first (a handful of centered values: no digits lost), then into doubles.  A run opens with
// start() (its first value: a walk's batch always has one) and closes with fold(); the count of
// values is the caller's, one for all the channels it sums at once.
template <class T>
struct StatSums {
  T shift = 0;
  double s1 = 0, s2 = 0;
  T f1 = 0, f2 = 0;  // the open run, in the compute type
  __device__ __forceinline__ void open() { f1 = f2 = 0; }  // a run whose first value may be absent
  __device__ __forceinline__ void start(T x) {
    const T d = x - shift;
    f1 = d;
    f2 = d * d;
  }
  __device__ __forceinline__ void add(T x) {
    const T d = x - shift;
    f1 += d;
    f2 += d * d;
  }
  // Closes the open run into the double sums.
  __device__ __forceinline__ void fold() {
    s1 += double(f1);
    s2 += double(f2);
  }
  __device__ ShiftedSums sums(double n) const { return {n, s1, s2}; }  // Note [shared shift]
};

template <class T>
struct GradAccum {
  math::SplitMean<T> mean{0, 0};
  double dy = 0, dy_xc = 0;
  T f1 = 0, f2 = 0;
  __device__ __forceinline__ void open() { f1 = f2 = 0; }
  __device__ __forceinline__ void start(T d, T x) {
    f1 = d;
    f2 = d * math::centered(x, mean);
  }
  __device__ __forceinline__ void add(T d, T x) {
    f1 += d;
    f2 += d * math::centered(x, mean);
  }
  __device__ __forceinline__ void fold() {
    dy += double(f1);
    dy_xc += double(f2);
  }
  __device__ GradSums result() const { return {dy, dy_xc}; }
};

// Note [split merges]: a channel reduction is two launches.  Every (group, split) block writes
// its partial of each of its channels; then one warp per channel merges that channel's partials
// in a fixed order (lane l takes splits l, l + 32, ... in turn, then a fixed shuffle tree) and
// runs the epilogue.  The result does not depend on which block ran when, and every channel's
// merge runs in parallel with the others'.
// A partial may be stored narrower than it merges (widen: what it merges as; itself by default).
template <class A>
__device__ __forceinline__ A widen(const A& a) { return a; }
template <class P, class Epilogue>
__global__ void __launch_bounds__(kBlock)
    finalize_kernel(const P* partials, int64_t C, int splits, Epilogue epi) {
  grid_dependency();
  using A = decltype(widen(*partials));
  const int lane = threadIdx.x % 32;
  const int64_t c = (int64_t(blockIdx.x) * kBlock + threadIdx.x) / 32;
  if (c >= C) return;
  const P* p = partials + c * splits;
  A acc = lane < splits ? widen(p[lane]) : A{};
  for (int j = lane + 32; j < splits; j += 32) acc = merge(acc, widen(p[j]));
  for (int off = 16; off > 0; off >>= 1) acc = merge(acc, shfl_down(acc, off));
  if (lane == 0) epi(c, acc);
}

// ---- planar layout (outer, C, inner): grid (C, splits), one channel per block row

// Hands each batch of a walk over one array (or two) to use(batch, packs[, packs]) (Note [batched
// walk]): the full batches, then the last one.
template <class S, int V, class Walk, class Use>
__device__ __forceinline__ void walk_batches(Walk w, const S* a, Use use) {
  auto batch = [&](auto full) {
    Batch<decltype(full)::value> b;
    w.next(b);
    Pack<S, V> pa[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (b.has(u)) pa[u].load(a + b.off[u]);
    w.prefetch(a);
    use(b, pa);
  };
  while (w.full()) batch(std::true_type{});
  if (w.more()) batch(std::false_type{});
}
template <class S, int V, class Walk, class Use>
__device__ __forceinline__ void walk_batches(Walk w, const S* a, const S* b, Use use) {
  auto batch = [&](auto full) {
    Batch<decltype(full)::value> bt;
    w.next(bt);
    Pack<S, V> pa[kUnroll], pb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (bt.has(u)) {
        pa[u].load(a + bt.off[u]);
        pb[u].load(b + bt.off[u]);
      }
    }
    w.prefetch(a);
    w.prefetch(b);
    use(bt, pa, pb);
  };
  while (w.full()) batch(std::true_type{});
  if (w.more()) batch(std::false_type{});
}

// out = f(e, a[, b]) for each value of a walk's vectors (Note [batched walk]; e: the value's
// lane in its vector; values in the compute type).
template <class S, int V, class Walk, class F>
__device__ __forceinline__ void map_walk(Walk w, const S* a, S* out, F f) {
  using T = ComputeT<S>;
  walk_batches<S, V>(w, a, [&](const auto& bt, const auto& pa) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (!bt.has(u)) continue;
      Pack<S, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = Narrow<S>::from(f(e, pa[u].get(e)));
      o.store(out + bt.off[u]);
    }
  });
}
template <class S, int V, class Walk, class F>
__device__ __forceinline__ void map_walk(Walk w, const S* a, const S* b, S* out, F f) {
  using T = ComputeT<S>;
  walk_batches<S, V>(w, a, b, [&](const auto& bt, const auto& pa, const auto& pb) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (!bt.has(u)) continue;
      Pack<S, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = Narrow<S>::from(f(e, pa[u].get(e), pb[u].get(e)));
      o.store(out + bt.off[u]);
    }
  });
}

// Loads the lanes [lo, hi) of the vector at element off: one access, or lane by lane where the
// vector would run past the array's `limit` elements (the last run of the last channel).
template <class S, int V>
__device__ __forceinline__ void load_lanes(Pack<S, V>& p, const S* a, int64_t off, Lanes l, int64_t limit) {
  if (off + V <= limit) return p.load(a + off);
#pragma unroll
  for (int e = 0; e < V; ++e)
    if (e >= l.lo && e < l.hi) p.v[e] = a[off + e];
}

// walk_batches for the masked walk (Note [masked planar walk]): use(off, lanes, packs[, packs]).
template <class S, int V, class Use>
__device__ __forceinline__ void span_batches(PlanarSpanSplit<V> w, int64_t limit, const S* a, Use use) {
  while (w.more()) {
    int64_t off[kUnroll];
    Lanes ln[kUnroll];
    w.next(off, ln);
    Pack<S, V> pa[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (off[u] >= 0) load_lanes(pa[u], a, off[u], ln[u], limit);
    use(off, ln, pa);
  }
}
template <class S, int V, class Use>
__device__ __forceinline__ void span_batches(PlanarSpanSplit<V> w, int64_t limit, const S* a, const S* b, Use use) {
  while (w.more()) {
    int64_t off[kUnroll];
    Lanes ln[kUnroll];
    w.next(off, ln);
    Pack<S, V> pa[kUnroll], pb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (off[u] >= 0) {
        load_lanes(pa[u], a, off[u], ln[u], limit);
        load_lanes(pb[u], b, off[u], ln[u], limit);
      }
    }
    use(off, ln, pa, pb);
  }
}

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

// Adds each batch of a walk to acc[Lanes] (Note [batched walk]): value e of a vector goes to
// acc[e % Lanes], n counts the values each accumulator took. One accumulator per channel: Lanes =
// 1 in the planar view, where a vector holds one channel's values; Lanes = V down rows, where it
// spans V channels.  A batch's first vector is always there (Note [batched walk]) and opens each
// run.
// A batch's first vector: value e opens the run of accumulator e where e < Lanes, else adds to it.
template <int Lanes, class A, class... X>
__device__ __forceinline__ void first_vector_value(A (&acc)[Lanes], int e, X... x) {
  if (e < Lanes)
    acc[e % Lanes].start(x...);
  else
    acc[e % Lanes].add(x...);
}

template <class S, int V, int Lanes, class Walk, class T>
__device__ __forceinline__ void accumulate(Walk w, const S* x, StatSums<T> (&acc)[Lanes], double& n) {
  walk_batches<S, V>(w, x, [&](const auto& bt, const auto& p) {
    int count = V / Lanes;
#pragma unroll
    for (int e = 0; e < V; ++e) first_vector_value(acc, e, p[0].get(e));
#pragma unroll
    for (int u = 1; u < kUnroll; ++u) {
      if (!bt.has(u)) continue;
      count += V / Lanes;
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e % Lanes].add(p[u].get(e));
    }
    n += count;
#pragma unroll
    for (int l = 0; l < Lanes; ++l) acc[l].fold();
  });
}
template <class S, int V, int Lanes, class Walk, class T>
__device__ __forceinline__ void accumulate(Walk w, const S* dy, const S* x, GradAccum<T> (&acc)[Lanes]) {
  walk_batches<S, V>(w, dy, x, [&](const auto& bt, const auto& g, const auto& p) {
#pragma unroll
    for (int e = 0; e < V; ++e) first_vector_value(acc, e, g[0].get(e), p[0].get(e));
#pragma unroll
    for (int u = 1; u < kUnroll; ++u) {
      if (!bt.has(u)) continue;
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e % Lanes].add(g[u].get(e), p[u].get(e));
    }
#pragma unroll
    for (int l = 0; l < Lanes; ++l) acc[l].fold();
  });
}

// accumulate() over the masked walk: only lanes [lo, hi) of each vector are the channel's.
template <class S, int V, class T>
__device__ __forceinline__ void accumulate_span(const BnShape& s, const S* x, StatSums<T>& acc, double& n) {
  span_batches<S, V>(PlanarSpanSplit<V>(s), s.outer * s.channels * s.inner, x,
                     [&](const auto& off, const auto& ln, const auto& p) {
    int count = 0;
    acc.open();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (off[u] < 0) continue;
      count += ln[u].hi - ln[u].lo;
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (e >= ln[u].lo && e < ln[u].hi) acc.add(p[u].get(e));
    }
    n += count;
    acc.fold();
  });
}
template <class S, int V, class T>
__device__ __forceinline__ void accumulate_span(const BnShape& s, const S* dy, const S* x, GradAccum<T>& acc) {
  span_batches<S, V>(PlanarSpanSplit<V>(s), s.outer * s.channels * s.inner, dy, x,
                     [&](const auto& off, const auto& ln, const auto& g, const auto& p) {
    acc.open();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (off[u] < 0) continue;
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (e >= ln[u].lo && e < ln[u].hi) acc.add(g[u].get(e), p[u].get(e));
    }
    acc.fold();
  });
}

// kMasked: the masked walk (Note [masked planar walk]).
template <class S, int V, bool kMasked = false>
__global__ void __launch_bounds__(kBlock)
    planar_stats_kernel(const S* x, BnShape s, Stats* partials) {
  grid_dependency();
  using T = ComputeT<S>;
  const int64_t c = blockIdx.x;
  StatSums<T> acc[1];
  acc[0].shift = T(to_float(x[c * s.inner]));  // Note [shared shift]
  double n = 0;
  if constexpr (kMasked)
    accumulate_span<S, V>(s, x, acc[0], n);
  else
    accumulate<S, V>(PlanarSplit<V>(s), x, acc, n);
  const ShiftedSums sums = block_merge(acc[0].sums(n));
  if (threadIdx.x == 0) partials[c * gridDim.y + blockIdx.y] = sums.stats(double(acc[0].shift));
}

template <class S, int V, bool kMasked = false>
__global__ void __launch_bounds__(kBlock)
    planar_grad_kernel(const S* dy, const S* x, BnShape s, ChannelArray save_mean,
                       GradSums* partials) {
  grid_dependency();
  using T = ComputeT<S>;
  const int64_t c = blockIdx.x;
  GradAccum<T> acc[1];
  acc[0].mean = math::split_mean<T>(save_mean.get(c, 0));
  if constexpr (kMasked)
    accumulate_span<S, V>(s, dy, x, acc[0]);
  else
    accumulate<S, V>(PlanarSplit<V>(s), dy, x, acc);
  const GradSums sums = block_merge(acc[0].result());
  if (threadIdx.x == 0) partials[c * gridDim.y + blockIdx.y] = sums;
}

// ---- rows layout (R, C): grid (column tiles, splits), block (tile_c, kBlock / tile_c); each
// thread owns V consecutive channels (one vector) and walks rows

// Merges the row lanes of each column in a fixed tree, one channel of the vector at a time;
// result in row lane 0.
template <class A>
__device__ A rows_merge_lane(A v) {
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

// Note [rows merge]: the V channels of every column of a rows block, merged over the block's row
// lanes in one go: first the row lanes a warp holds (tile_c < 32: 32 / tile_c of them) by a
// shuffle tree, then the warps' (or, for tile_c >= 32, the row lanes') results from shared
// memory, each (column, channel) by one thread in group order.  Two barrier-free steps and one
// barrier, where a tree per channel through shared memory takes V * (log2(rows) + 1) barriers:
// with 8 bf16 channels per vector those dominated a block's reduction of 16K values.  The order
// is fixed, so the result is the same on every run.  out(x, e, merged) is called once for each
// column x of the block and channel e of its vector.
template <class S, class A, int V, class Out>
__device__ __forceinline__ void rows_merge(A (&v)[V], Out out) {
  const int tc = blockDim.x, x = threadIdx.x, y = threadIdx.y;
  const int t = y * tc + x;
  if (tc < 32) {
    for (int off = 16; off >= tc; off >>= 1)
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = merge(v[e], shfl_down(v[e], off));
  }
  const int per_warp = tc < 32 ? 32 / tc : 1;  // row lanes of one warp
  const int groups = int(blockDim.y) / per_warp;
  // At most 8 groups of tile_c * V channels, tile_c * V * sizeof(S) <= 128 bytes (Geometry).
  __shared__ A vals[8 * 128 / sizeof(S)];
  if (y % per_warp == 0) {
#pragma unroll
    for (int e = 0; e < V; ++e) vals[((y / per_warp) * V + e) * tc + x] = v[e];
  }
  __syncthreads();
  if (t < tc * V) {
    const int e = t / tc, col = t % tc;
    A acc = vals[e * tc + col];
    for (int g = 1; g < groups; ++g) acc = merge(acc, vals[(g * V + e) * tc + col]);
    out(col, e, acc);
  }
}

// Rows [r0, r1) of this block split; this thread's rows start at r0 + threadIdx.y.
__device__ __forceinline__ void rows_range(int64_t R, int64_t& r0, int64_t& r1) {
  split_range(R, gridDim.y, blockIdx.y, r0, r1);
}

// Note [view batches]: the rows kernels take grid z as a view index: view z of the same (R, C)
// shape at element offset z * view_stride, its channels' partials after those of the views
// before it (and its per-channel inputs at z * C); one launch covers every sample of group
// norm's channels-last input.
template <class S, int V>
__global__ void __launch_bounds__(kBlock)
    rows_stats_kernel(const S* x, int64_t R, int64_t C, Stats* partials, bool prefetch, int64_t view_stride) {
  grid_dependency();
  using T = ComputeT<S>;
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // vector column
  const bool ok = col * V < C;
  x += int64_t(blockIdx.z) * view_stride;  // Note [view batches]
  partials += int64_t(blockIdx.z) * C * gridDim.y;
  StatSums<T> acc[V];
  double n = 0;  // values of each of the thread's channels
  if (ok) {
    Pack<S, V> first;  // each channel's shift: its value in row 0 (Note [shared shift])
    first.load(x + col * V);
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e].shift = first.get(e);
    accumulate<S, V>(RowsSplit(R, C, col * V, prefetch), x, acc, n);
  }
  ShiftedSums sums[V];
#pragma unroll
  for (int e = 0; e < V; ++e) sums[e] = ok ? acc[e].sums(n) : ShiftedSums{0, 0, 0};
  rows_merge<S>(sums, [&](int tx, int e, const ShiftedSums& m) {  // Note [rows merge]
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + tx) * V + e;
    if (c < C) partials[c * gridDim.y + blockIdx.y] = m.stats(double(T(to_float(x[c]))));
  });
}

template <class S, int V>
__global__ void __launch_bounds__(kBlock, sizeof(S) == 2 ? vector_pass_blocks<S, V>(2) : 3)  // Note [pass occupancy]
    rows_grad_kernel(const S* dy, const S* x, int64_t R, int64_t C, ChannelArray save_mean,
                     GradSums* partials, bool prefetch, int64_t view_stride) {
  grid_dependency();
  using T = ComputeT<S>;
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool ok = col * V < C;
  const int64_t view = blockIdx.z;  // Note [view batches]
  dy += view * view_stride;
  x += view * view_stride;
  partials += view * C * gridDim.y;
  GradAccum<T> acc[V];
  if (ok) {
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e].mean = math::split_mean<T>(save_mean.get(view * C + col * V + e, 0));
    accumulate<S, V>(RowsSplit(R, C, col * V, prefetch), dy, x, acc);
  }
  GradSums sums[V];
#pragma unroll
  for (int e = 0; e < V; ++e) sums[e] = ok ? acc[e].result() : GradSums{0, 0};
  rows_merge<S>(sums, [&](int tx, int e, const GradSums& m) {  // Note [rows merge]
    const int64_t c = (int64_t(blockIdx.x) * blockDim.x + tx) * V + e;
    if (c < C) partials[c * gridDim.y + blockIdx.y] = m;
  });
}

// ---- launch geometry

void count_launch(const char* name) {
  FT_CUDA_CHECK_LAUNCH(name);
  g_launches.fetch_add(1);
}

// One pass over x (or dy and x) in one layout: the grid, block and vector width every kernel of
// the pass uses.  Planar: grid (C, splits), one channel per block row.  Rows: column tiles of
// tile_c threads, each thread V channels; tile_c is the smallest power of two covering C / V, at
// most one 128-byte line of a row, so a warp reads whole lines of consecutive rows (a narrow C
// still fills the warp) and a wide C is cut into many tiles.
struct Geometry {
  bool planar;
  int vec;         // elements per access
  int tile_c = 1;  // rows: vector columns per block
  int64_t groups;  // planar: channels; rows: column tiles (one reduction counter each)
  int splits;

  // values_per_block: the work one block should at least get before the grid grows.
  Geometry(const BnShape& s, int v, size_t esize, int64_t want_blocks, int64_t values_per_block) {
    planar = s.inner > 1;
    vec = v;
    const int64_t C = s.channels;
    int64_t per_group;
    if (planar) {
      groups = C;
      per_group = s.per_channel();
    } else {
      const int64_t cols = C / v;
      const int64_t line = std::max<int64_t>(1, 128 / (int64_t(v) * int64_t(esize)));
      while (tile_c < line && tile_c < cols) tile_c *= 2;
      groups = (cols + tile_c - 1) / tile_c;
      per_group = s.outer * std::min<int64_t>(C, int64_t(tile_c) * v);
    }
    int64_t sp = (want_blocks + groups - 1) / groups;
    sp = std::min<int64_t>(sp, std::max<int64_t>(1, per_group / values_per_block));
    splits = int(std::max<int64_t>(1, std::min<int64_t>(sp, 65535)));
  }
  dim3 grid() const { return dim3(unsigned(groups), unsigned(splits)); }
  dim3 block() const { return planar ? dim3(kBlock) : dim3(unsigned(tile_c), unsigned(kBlock / tile_c)); }
};

int sm_count() { return device_state().sm_count; }

// Reductions: 4 blocks per SM where the data allows, each at least 16K values, so the partials
// a channel's finalize merges stay few.
template <class S>
Geometry reduction_geometry(const BnShape& s, int v) {
  return Geometry(s, v, sizeof(S), 4LL * sm_count(), 16384);
}
// Elementwise passes: blocks of about 8K values (32 per thread), as many as that makes, so even
// a 6M-value tensor spreads over several blocks per SM.
template <class S>
Geometry elementwise_geometry(const BnShape& s, int v) {
  return Geometry(s, v, sizeof(S), int64_t(1) << 30, 8192);
}

// Scratch of one channel reduction: partials per (channel, split), freed in stream order; and
// its second launch (Note [split merges]). A: a partial as stored.
template <class A>
struct Reduction {
  Scratch mem;
  A* partials;
  int64_t C;
  int splits;
  Reduction(const Geometry& g, int64_t channels, cudaStream_t st) : Reduction(g.splits, channels, st) {}
  Reduction(int splits_, int64_t channels, cudaStream_t st)
      : mem(sizeof(A) * size_t(channels) * size_t(splits_), st), C(channels), splits(splits_) {
    partials = mem.as<A>();
  }
  template <class Epilogue>
  void finalize(const Epilogue& epi, cudaStream_t st) const {
    const unsigned blocks = unsigned((C * 32 + kBlock - 1) / kBlock);
    launch_kernel(finalize_kernel<A, Epilogue>, blocks, kBlock, 0, st, partials, C, splits, epi);
    count_launch("bn finalize");
  }
};

// Fn<S>::run(a, st) with S the storage type of a.dtype.
template <template <class> class Fn, class Args>
void by_dtype(const Args& a, cudaStream_t st) {
  visit_dtype(a.dtype, [&](auto s) { Fn<typename decltype(s)::type>::run(a, st); });
}

}  // namespace
}  // namespace ft::cuda
