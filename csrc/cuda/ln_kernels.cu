// Layer and RMS norm on CUDA: the row statistics, layer norm's row sums of weight * dy and its
// column sums for dweight / dbias, and the elementwise passes over the (rows, cols) matrix (the
// shared passes: norm_matrix.cuh, Note [cuda norm passes]).  The math is csrc/math/layer_norm.h.
#include "cuda/normalization_kernels.h"
#include "cuda/norm_matrix.cuh"
#include "cuda/row_kernel_options.h"
#include "math/layer_norm.h"

namespace ft::cuda {
namespace {

// A row's mean and rstd from its statistics.
struct MeanRstd {
  double mean, rstd;
};
__device__ MeanRstd row_coeffs(const LnForwardArgs& a, const Stats& st) {
  return {a.rms ? 0.0 : st.mean, math::inv_std(a.rms ? math::mean_square(st) : math::biased_var(st), a.eps)};
}
__device__ void store_row_coeffs(const LnForwardArgs& a, int64_t r, const MeanRstd& c) {
  a.mean.set(r, c.mean);
  a.rstd.set(r, c.rstd);
}

struct RowStatsEpilogue {
  LnForwardArgs a;
  double* coeffs;  // per row: mean, rstd
  __device__ void operator()(int64_t r, const Stats& st) const {
    const MeanRstd c = row_coeffs(a, st);
    store_row_coeffs(a, r, c);
    coeffs[2 * r] = c.mean;
    coeffs[2 * r + 1] = c.rstd;
  }
};

// ---- Note [register rows]: a row of at most 256 * 32 values in 16-byte vectors is read once into the
// registers of the TPR = blockDim.x threads of a row slot (threadIdx.y; kBlock / TPR slots per
// block, grid-striding over rows), thread x holding vectors x, x + TPR, ... (K of them). The
// forward normalizes from those registers (x read once, y written once); the backward sums the
// row, then computes dx from the same registers (rows of more than 4 vectors per thread read dy
// and x again, from L1 or L2: Note [held row]), and adds each of its columns' dweight / dbias
// terms to registers or shared memory, merged over the block's slots in a fixed chain and over
// blocks by Reduction: dy and x cross device memory once.  Wider or unaligned rows take the
// planar passes below.

// The values of each row slot's threads merged in a fixed order (lanes by shuffle tree, then the
// slot's warps in index order); the result is in thread x == 0 of the slot.
template <class A>
__device__ A row_slot_merge(A v) {
  __shared__ A warp_vals[kBlock / 32];
  for (int off = 16; off > 0; off >>= 1) v = merge(v, shfl_down(v, off));
  const int warps = int(blockDim.x) / 32;  // TPR is a multiple of 32: a warp is in one slot
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.y * warps + threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < warps; ++w) v = merge(v, warp_vals[threadIdx.y * warps + w]);
  return v;
}

// A row's shifted sums, merged by adding (Note [shared shift], norm_reduce.cuh: every thread of a
// row shifts by the row's first value); no count, which is the row's length.
struct RowSums {
  double s1, s2;
};
__device__ RowSums merge(const RowSums& a, const RowSums& b) { return {a.s1 + b.s1, a.s2 + b.s2}; }
__device__ RowSums shfl_down(const RowSums& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.s1, off), __shfl_down_sync(0xffffffffu, s.s2, off)};
}
__device__ RowSums shfl_xor(const RowSums& s, int mask) {
  return {__shfl_xor_sync(0xffffffffu, s.s1, mask), __shfl_xor_sync(0xffffffffu, s.s2, mask)};
}
__device__ GradSums shfl_xor(const GradSums& s, int mask) {
  return {__shfl_xor_sync(0xffffffffu, s.dy, mask), __shfl_xor_sync(0xffffffffu, s.dy_xc, mask)};
}

// A row's coefficients, make(merged sums of the slot), in every thread of the slot (Co{} where
// `row` is false). A slot of one warp merges by butterfly, each lane computing the same sums
// (plain additions commute exactly), with no barrier: its warp runs on without waiting for the
// block's other rows. A wider slot merges through row_slot_merge and shares shared memory.
template <class Co, class A, class Make>
__device__ __forceinline__ Co slot_coeffs(A v, bool row, Make&& make) {
  if (blockDim.x == 32) {
    for (int m = 16; m > 0; m >>= 1) v = merge(v, shfl_xor(v, m));
    return row ? make(v) : Co{};
  }
  __shared__ Co coeffs[kBlock / 32];
  v = row_slot_merge(v);
  if (threadIdx.x == 0 && row) coeffs[threadIdx.y] = make(v);
  __syncthreads();
  return row ? coeffs[threadIdx.y] : Co{};
}

struct RowsPlan {
  int tpr = 0, k = 0;  // threads per row, vectors per thread (a power of two); tpr 0: no plan
  unsigned grid = 0;
  dim3 block() const { return dim3(unsigned(tpr), unsigned(kBlock / tpr)); }
  // A block per row slot of `rows`, at most blocks_per_sm per SM (the blocks stride over rows).
  unsigned grid_for(int64_t rows, int blocks_per_sm) const {
    const int64_t slots = kBlock / tpr;
    return unsigned(std::min<int64_t>((rows + slots - 1) / slots, int64_t(blocks_per_sm) * sm_count()));
  }
};
// About `per_thread` vectors per thread (at most 32 values), 32 to 256 threads per row; none for a
// row of other than 16-byte vectors or of more than 32 values per thread (fp32 8192, fp16 / bf16
// 8192, fp64 4096).
// ptrs: the arrays read or written as vectors (a weight or bias stored as the input is).
// blocks_per_sm: the grid's size in blocks per SM.
template <class S>
RowsPlan rows_plan(int64_t rows, int64_t cols, std::initializer_list<const void*> ptrs, int per_thread,
                   int blocks_per_sm) {
  constexpr int vmax = int(16 / sizeof(S));
  RowsPlan p;
  if (rows == 0 || cols == 0 || vec_width<S>(cols, ptrs) != vmax) return p;
  const int64_t nvec = cols / vmax;
  per_thread = std::min(per_thread, 32 / vmax);
  int tpr = 32;
  while (tpr < kBlock && int64_t(tpr) * per_thread < nvec) tpr *= 2;
  const int64_t k = (nvec + tpr - 1) / tpr;
  if (k > 8 || k * vmax > 32) return p;  // registers: 32 columns per thread at most (no spills)
  p.tpr = tpr;
  p.k = k <= 1 ? 1 : k <= 2 ? 2 : k <= 4 ? 4 : 8;
  p.grid = p.grid_for(rows, blocks_per_sm);
  return p;
}
// f(K) for a plan's k; a 2-byte row holds at most 4 vectors per thread (32 values), so its
// kernels of 8 are not compiled.
template <class S, class F>
void with_k(int k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default:
      if constexpr (16 / sizeof(S) * 8 <= 32) return f(std::integral_constant<int, 8>{});
  }
}

// Columns [c, c + V) of a per-column weight or bias in the compute type, read each row from L1
// rather than held in registers (they would take 2 * K * V of them): one vector load when it is
// stored as the input (`same`; rows_plan checked its alignment), else value by value.
template <class S, int V, class T>
__device__ __forceinline__ void load_columns(const ChannelArray& p, bool same, int64_t c, double absent,
                                             T (&out)[V]) {
  if (!p.present()) {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = T(absent);
  } else if (same) {
    Pack<S, V> v;
    v.load(static_cast<const S*>(p.data) + c);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = v.get(e);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = T(p.get(c + e, absent));
  }
}

// A per-column array's pointer where rows_plan must check its alignment for vector loads.
const void* vector_read(const ChannelArray& p, DType dtype) {
  return p.present() && p.dtype == dtype ? p.data : nullptr;
}

template <class S, int K>
__global__ void __launch_bounds__(kBlock, K == 4 ? 4 : K == 8 ? 3 : 0)  // Note [pass occupancy]
    ln_rows_forward_kernel(LnForwardArgs a, bool prefetch) {
  grid_dependency();
  using T = ComputeT<S>;
  constexpr int V = int(16 / sizeof(S));
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t nvec = a.cols / V;
  const bool w_same = a.weight.dtype == a.dtype, b_same = a.bias.dtype == a.dtype;
  for (int64_t r0 = int64_t(blockIdx.x) * blockDim.y; r0 < a.rows; r0 += int64_t(gridDim.x) * blockDim.y) {
    const int64_t r = r0 + threadIdx.y;  // the loop is uniform over the block: it has barriers
    const bool row = r < a.rows;
    const S* xr = x + (row ? r : 0) * a.cols;
    // Note [next-row prefetch]; not for narrower rows, where its address arithmetic took the
    // kernel past 64 registers (a block per SM fewer).
    if constexpr (K * V >= 32) {
      if (const int64_t next = r + int64_t(gridDim.x) * blockDim.y; prefetch && next < a.rows)
        prefetch_row_l2(x + next * a.cols, a.cols);
    }
    Pack<S, V> p[K];
    StatSums<T> acc;
    acc.shift = row ? T(to_float(xr[0])) : T(0);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
      if (row && j < nvec) p[k].load(xr + j * V);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (!row || threadIdx.x + int64_t(k) * blockDim.x >= nvec) continue;
      acc.start(p[k].get(0));
#pragma unroll
      for (int e = 1; e < V; ++e) acc.add(p[k].get(e));
      acc.fold();
    }
    const double shift = double(acc.shift);
    const MeanRstd c = slot_coeffs<MeanRstd>(RowSums{acc.s1, acc.s2}, row, [&](const RowSums& sums) {
      return row_coeffs(a, math::from_shifted_sums(double(a.cols), shift, sums.s1, sums.s2));
    });
    if (!row) continue;
    if (threadIdx.x == 0) store_row_coeffs(a, r, c);
    const auto mean = math::split_mean<T>(c.mean);
    const T rstd = T(c.rstd);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
      if (j >= nvec) continue;
      T w[V], b[V];
      load_columns<S, V>(a.weight, w_same, j * V, 1.0, w);
      load_columns<S, V>(a.bias, b_same, j * V, 0.0, b);
      Pack<S, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e)
        out.v[e] = Narrow<S>::from(math::ln_forward(p[k].get(e), mean, rstd, w[e], b[e]));
      out.store(y + r * a.cols + j * V);
    }
  }
}

// Note [held row]: a thread's vectors of a row of dy and x, loaded KB at a time (all KB loads
// issued before any is used). Where they are one batch (K <= 4: every 2-byte row, fp32 to 4096),
// the backward's second pass takes them from the registers the first pass loaded, instead of
// reading dy and x again. The second read was meant to hit L1, but with three blocks' column sums
// in shared memory an SM's L1 is smaller than the rows its blocks hold (bf16 8192: 96 KB of dy
// and x beside 192 KB of sums), so it went to L2, at L2's latency, in the pass that writes dx.
// Holding costs registers: at the 80 of three blocks per SM, ptxas spills a few of the loop's
// invariants in the 2-byte kernel of 4 vectors with shared column sums (8 words, about ten
// 4-byte loads a row, where 8 16-byte reloads of dy and x go). Rows of 8 vectors (fp32 8192)
// reload: holding half of them spilled 64 bytes. dx may alias dy: each value is still read, in
// the first pass, before its own thread writes it.
//
// Note [staged row]: a held row's loads start only when the row does, after the previous row's
// merge and dx, so each row slot waits out a full DRAM latency per row with nothing in flight
// (the L2 prefetch of Note [next-row prefetch] shortens the wait to L2's). Staged, a thread copies
// its vectors of its next row into its own part of shared memory (Note [async row copy]) as soon
// as the first pass has used the current row, and the copy lands while the slot merges and
// writes dx; the next row then starts from shared memory. No register holds the copy in flight:
// 2 * K 16-byte slots a thread, K * 8 KB a block, beside the column sums where the SM still holds
// as many blocks (not layer norm's bf16 8192: 96 KB a block at three per SM; RMS norm's, with one
// sum a column, Note [one column sum], takes 64 KB). Each thread reads back only what it copied,
// so no barrier guards the stage; a copy is issued after the first pass has consumed every value
// read from the slot it overwrites. The values are the same, so is every bit of the result.
// sm_90: the staged kernels keep the registers of the unstaged ones (the frozen kernels of 1 and 2
// vectors by their launch bounds), with no spill but in the 2-byte kernel of 4 vectors (RMS norm
// 8192: 20 bytes stored, 52 loaded, as its unstaged layer norm twin's 32 and 48).
template <class S, int V, int K>
struct RowStage {
  uint4* base;  // this thread's first slot; slot i is kBlock vectors on; null: not staged
  __device__ explicit RowStage(uint4* block_stage)
      : base(block_stage ? block_stage + threadIdx.y * blockDim.x + threadIdx.x : nullptr) {}
  // Starts the copies of this thread's vectors of dy and x of the row at element offset `off`.
  __device__ __forceinline__ void issue(const LnBackwardArgs& a, int64_t off) const {
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int64_t j = threadIdx.x + int64_t(u) * blockDim.x;
      if (j < a.cols / V) {
        copy_async_16(base + (2 * u) * kBlock, static_cast<const S*>(a.dy) + off + j * V);
        copy_async_16(base + (2 * u + 1) * kBlock, static_cast<const S*>(a.x) + off + j * V);
      }
    }
  }
  __device__ __forceinline__ void take(int u, Pack<S, V>& g, Pack<S, V>& p) const {
    g.load(reinterpret_cast<const S*>(base + (2 * u) * kBlock));
    p.load(reinterpret_cast<const S*>(base + (2 * u + 1) * kBlock));
  }
};
// A block's stage for rows of K vectors per thread; 0 where rows are not held (Note [held row]).
template <int K>
constexpr size_t row_stage_bytes() { return K <= 4 ? size_t(2 * K * 16 * kBlock) : 0; }

template <class S, int V, int K, bool kStaged = false>
struct RowBatches {
  static constexpr int KB = K < 4 ? K : 4;
  static constexpr bool kHeld = K == KB;
  using T = ComputeT<S>;
  using Batch = Pack<S, V>[KB];
  const LnBackwardArgs& a;
  bool w_same;
  int64_t off;  // the row's element offset
  const RowStage<S, V, K>& stage;  // Note [staged row]: held rows only
  Batch g, p;   // the held batch (kHeld); left uninitialized, as a loaded batch is
  __device__ RowBatches(const LnBackwardArgs& a, bool w_same, int64_t off, const RowStage<S, V, K>& stage)
      : a(a), w_same(w_same), off(off), stage(stage) {}

  // Calls f(k, j, g, p, w) for the thread's vectors (vector j of the row is its k-th, Note
  // [register rows]); w: the weight's columns.
  template <bool kSecond, class F>
  __device__ __forceinline__ void each(F&& f) {
    if constexpr (kHeld) {
      if constexpr (!kSecond) load(0, g, p);
      visit(0, g, p, f);
    } else {
#pragma unroll
      for (int k0 = 0; k0 < K; k0 += KB) {
        Batch gb, pb;
        load(k0, gb, pb);
        visit(k0, gb, pb, f);
      }
    }
  }

 private:
  __device__ __forceinline__ void load(int k0, Batch& gb, Batch& pb) const {
    if constexpr (kStaged) copy_async_wait();
#pragma unroll
    for (int u = 0; u < KB; ++u) {
      const int64_t j = threadIdx.x + int64_t(k0 + u) * blockDim.x;
      if (j < a.cols / V) {
        if constexpr (kStaged) {
          stage.take(u, gb[u], pb[u]);
        } else {
          gb[u].load(static_cast<const S*>(a.dy) + off + j * V);
          pb[u].load(static_cast<const S*>(a.x) + off + j * V);
        }
      }
    }
  }
  template <class F>
  __device__ __forceinline__ void visit(int k0, const Batch& gb, const Batch& pb, F& f) const {
#pragma unroll
    for (int u = 0; u < KB; ++u) {
      const int64_t j = threadIdx.x + int64_t(k0 + u) * blockDim.x;
      if (j >= a.cols / V) continue;
      T w[V];
      load_columns<S, V>(a.weight, w_same, j * V, 1.0, w);
      f(k0 + u, j, gb[u], pb[u], w);
    }
  }
};

// Note [column sums in shared memory]: the backward's dweight / dbias terms of a thread's K * V
// columns, summed over the rows it walks. In registers (kShared false) they take 2 * K * V
// values; from 32 registers' worth on (16 fp32 columns, 8 fp64: bf16 rows of 1024 and wider,
// fp32 of 4096, fp64 of 2048) that left room for one or two blocks per SM, and ncu on an H200
// showed those kernels latency-bound, stalled on loads at 12-25% occupancy. In dynamic shared
// memory (one value per thread in each of 2 * K * V rows of kBlock, so a warp's accesses fall in
// distinct banks) they leave the registers to the loads, for three blocks per SM, at one shared
// load and store per term, where an SM's shared memory holds three such blocks (an H100's 228 KB
// does for the 64 KB of 32 columns; an SM of 100 KB keeps those in registers). Either way the
// slots' sums are merged in one fixed order (slot 0 + (slot 1 + (...))): deterministic, as Note
// [cuda norm passes] asks. A backward asked for no weight gradients (`weight_grads=False`: frozen
// affine parameters) keeps no column sums at all, and its registers go to the loads.
enum class ColumnSumsIn { none, registers, shared };
// kN: the sums a column keeps, 2 (dweight, dbias) or 1 (dweight alone).
// Note [one column sum]: a backward with no dbias to write (every RMS norm; a layer norm asked
// for none, `bias_grads=False`) keeps no dbias sums: half the registers or shared memory, and half
// the shared loads and stores per term. dweight's sums, and so its bits, are the same.
template <class T, int K, int V, ColumnSumsIn kIn, int kN>
struct ColumnSums {
  T sum[kN][K][V];  // [0]: dweight, [1]: dbias
  __device__ explicit ColumnSums(T*) {
#pragma unroll
    for (int i = 0; i < kN; ++i)
#pragma unroll
      for (int k = 0; k < K; ++k)
#pragma unroll
        for (int e = 0; e < V; ++e) sum[i][k][e] = T(0);
  }
  __device__ __forceinline__ void add(int k, int e, T w, T b) {
    sum[0][k][e] += w;
    if constexpr (kN == 2) sum[1][k][e] += b;
  }
  // dweight and dbias (0 where kN is 1) of column (k, e) merged over the block's slots, in thread
  // (x, slot 0).
  template <class Out>
  __device__ void merge_slots(Out out) {
    // Chained from the last slot to slot 0 (several slots only when TPR <= 128, so K <= 4).
    if constexpr (K <= 4) {
      __shared__ T chain[kN * 4 * (kBlock / 2) * V];
      for (int src = int(blockDim.y) - 1; src > 0; --src) {
        if (int(threadIdx.y) == src) {
#pragma unroll
          for (int k = 0; k < K; ++k)
#pragma unroll
            for (int e = 0; e < V; ++e)
#pragma unroll
              for (int i = 0; i < kN; ++i) chain[(kN * (k * V + e) + i) * blockDim.x + threadIdx.x] = sum[i][k][e];
        }
        __syncthreads();
        if (int(threadIdx.y) == src - 1) {
#pragma unroll
          for (int k = 0; k < K; ++k)
#pragma unroll
            for (int e = 0; e < V; ++e)
#pragma unroll
              for (int i = 0; i < kN; ++i) sum[i][k][e] += chain[(kN * (k * V + e) + i) * blockDim.x + threadIdx.x];
        }
        __syncthreads();
      }
    }
    if (threadIdx.y != 0) return;
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int e = 0; e < V; ++e) out(k, e, sum[0][k][e], kN == 2 ? sum[kN - 1][k][e] : T(0));  // [1] if any
  }
};
template <class T, int K, int V, int kN>
struct ColumnSums<T, K, V, ColumnSumsIn::none, kN> {
  __device__ explicit ColumnSums(T*) {}
  __device__ __forceinline__ void add(int, int, T, T) {}
  template <class Out>
  __device__ void merge_slots(Out) {}
};
template <class T, int K, int V, int kN>
struct ColumnSums<T, K, V, ColumnSumsIn::shared, kN> {
  T* s;  // kN * K * V rows of kBlock values (the launch's dynamic shared memory)
  int t;
  __device__ explicit ColumnSums(T* shared) : s(shared), t(int(threadIdx.y * blockDim.x + threadIdx.x)) {
#pragma unroll
    for (int j = 0; j < kN * K * V; ++j) s[j * kBlock + t] = T(0);
  }
  __device__ __forceinline__ void add(int k, int e, T w, T b) {
    s[(kN * (k * V + e)) * kBlock + t] += w;
    if constexpr (kN == 2) s[(kN * (k * V + e) + 1) * kBlock + t] += b;
  }
  template <class Out>
  __device__ void merge_slots(Out out) {
    __syncthreads();
    if (threadIdx.y != 0) return;
    const int x = int(threadIdx.x), tc = int(blockDim.x), last = int(blockDim.y) - 1;
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const T* c = s + (kN * (k * V + e)) * kBlock + x;
        T v[kN];
#pragma unroll
        for (int i = 0; i < kN; ++i) v[i] = c[i * kBlock + last * tc];
        for (int y = last - 1; y >= 0; --y)
#pragma unroll
          for (int i = 0; i < kN; ++i) v[i] = c[i * kBlock + y * tc] + v[i];
        out(k, e, v[0], kN == 2 ? v[kN - 1] : T(0));
      }
  }
};
template <class T, int K, int V, int kN>
__host__ __device__ constexpr size_t column_sums_bytes() { return sizeof(T) * kN * K * V * kBlock; }
// The dynamic shared memory a block's column sums in kIn take; the stage follows them.
template <class S, int K, ColumnSumsIn kIn, int kN>
__host__ __device__ constexpr size_t dynamic_sums_bytes() {
  return kIn == ColumnSumsIn::shared ? column_sums_bytes<ComputeT<S>, K, int(16 / sizeof(S)), kN>() : 0;
}

// Note [column partials]: a block's merged column sums, one partial per (column, block) for
// Reduction, stored in the compute type they were summed in and widened to double by the
// finalize (exact: the same bits as storing doubles), with no dbias where kN is 1. The partials
// are 2 * 8 bytes a column per block, 3 blocks per SM: at hidden 8192 on an H200 52 MB written
// and read again, beside the 805 MB of a bf16 16384-row backward; as floats, 26 MB, and an RMS
// norm's 13 MB.
template <class T, int kN>
struct ColumnPartial {
  T dw, db;
};
template <class T>
struct ColumnPartial<T, 1> {
  T dw;
};
template <class T>
__device__ __forceinline__ GradSums widen(const ColumnPartial<T, 2>& p) { return {double(p.db), double(p.dw)}; }
template <class T>
__device__ __forceinline__ GradSums widen(const ColumnPartial<T, 1>& p) { return {0.0, double(p.dw)}; }

// The rows backward's blocks per SM for __launch_bounds__ (Note [pass occupancy]); 0: ptxas's
// choice. Shared column sums: 3 (Note [column sums in shared memory]); no column sums: 3 from 4
// vectors on, and a staged kernel the blocks its unstaged twin takes (48 and 64 registers at 1
// and 2 vectors: 5 and 4 blocks), where ptxas gave it 7-16 registers more (Note [staged row]).
template <int K, ColumnSumsIn kSums, bool kStaged>
constexpr int rows_backward_blocks() {
  if (kSums == ColumnSumsIn::shared || (kSums == ColumnSumsIn::none && K >= 4)) return 3;
  if (kSums == ColumnSumsIn::none && kStaged) return K == 1 ? 5 : 4;
  return 0;
}

// Shared column sums: Note [column sums in shared memory].
template <class S, int K, ColumnSumsIn kSums, int kN, bool kStaged>
__global__ void __launch_bounds__(kBlock, rows_backward_blocks<K, kSums, kStaged>())
    ln_rows_backward_kernel(LnBackwardArgs a, ColumnPartial<ComputeT<S>, kN>* partials, bool prefetch) {
  grid_dependency();
  using T = ComputeT<S>;
  constexpr int V = int(16 / sizeof(S));
  S* dx = static_cast<S*>(a.dx);
  const bool w_same = a.weight.dtype == a.dtype;
  ColumnSums<T, K, V, kSums, kN> cols(kSums == ColumnSumsIn::shared ? dynamic_shared<T>() : nullptr);
  static_assert(!kStaged || RowBatches<S, V, K>::kHeld, "only held rows are staged");
  const RowStage<S, V, K> stage(
      kStaged ? reinterpret_cast<uint4*>(dynamic_shared<unsigned char>() + dynamic_sums_bytes<S, K, kSums, kN>())
              : nullptr);
  if constexpr (kStaged) {
    if (const int64_t first = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; first < a.rows)
      stage.issue(a, first * a.cols);
  }
  for (int64_t r0 = int64_t(blockIdx.x) * blockDim.y; r0 < a.rows; r0 += int64_t(gridDim.x) * blockDim.y) {
    const int64_t r = r0 + threadIdx.y;  // uniform loop (barriers)
    const bool row = r < a.rows;
    const int64_t off = (row ? r : 0) * a.cols;
    const int64_t next = r + int64_t(gridDim.x) * blockDim.y;
    if (prefetch && next < a.rows) {
      prefetch_row_l2(static_cast<const S*>(a.dy) + next * a.cols, a.cols);  // Note [next-row prefetch]
      prefetch_row_l2(static_cast<const S*>(a.x) + next * a.cols, a.cols);
    }
    const double mean = a.rms || !row ? 0.0 : a.mean.get(r, 0.0), rstd = row ? a.rstd.get(r, 0.0) : 0.0;
    const auto m = math::split_mean<T>(mean);
    const T rs = T(rstd);
    GradSums sums{0, 0};
    RowBatches<S, V, K, kStaged> rb{a, w_same, off, stage};  // Note [held row]
    if (row) {
      rb.template each<false>([&](int k, int64_t, const Pack<S, V>& g, const Pack<S, V>& p, const T (&w)[V]) {
        T f1 = 0, f2 = 0;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const T d = g.get(e), xc = math::centered(p.get(e), m);
          const T gw = d * w[e];
          f1 += gw;
          f2 += gw * xc;
          cols.add(k, e, d * (xc * rs), d);
        }
        sums.dy += double(f1);
        sums.dy_xc += double(f2);
      });
      if constexpr (kStaged) {
        if (next < a.rows) stage.issue(a, next * a.cols);  // Note [staged row]
      }
    }
    const auto co = slot_coeffs<math::NormGradCoeffs<T>>(sums, row, [&](const GradSums& s) {
      return math::norm_grad_coeffs<T>(double(a.cols), a.rms ? 0.0 : s.dy, s.dy_xc, mean, rstd, 1.0);
    });
    if (!row) continue;
    rb.template each<true>([&](int, int64_t j, const Pack<S, V>& g, const Pack<S, V>& p, const T (&w)[V]) {
      Pack<S, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e)
        out.v[e] = Narrow<S>::from(math::norm_grad_input(g.get(e) * w[e], p.get(e), co));
      out.store(dx + off + j * V);
    });
  }
  if (kSums == ColumnSumsIn::none) return;
  // Slot 0's sums are this block's split of each column.
  cols.merge_slots([&](int k, int e, T dw, T db) {
    const int64_t c = (threadIdx.x + int64_t(k) * blockDim.x) * V + e;
    if (c >= a.cols) return;
    if constexpr (kN == 2) {
      partials[c * gridDim.x + blockIdx.x] = {dw, db};  // Note [column partials]
    } else {
      partials[c * gridDim.x + blockIdx.x] = {dw};
    }
  });
}

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
      out.v[e] = Narrow<S>::from(math::ln_forward(in.get(e), mean, rstd,
                                                  T(p.weight.get(c + e, 1.0)), T(p.bias.get(c + e, 0.0))));
    out.store(static_cast<S*>(p.y) + r * p.cols + c);
  }
};

template <class S>
void ln_forward_typed(const LnForwardArgs& a, cudaStream_t st) {
  const auto* x = static_cast<const S*>(a.x);
  // Up to 32 values per thread, so a row of up to 1024 values (512 for fp64) is one warp's
  // and merges without a barrier (slot_coeffs).
  if (const RowsPlan p = rows_plan<S>(a.rows, a.cols, {a.x, a.y, vector_read(a.weight, a.dtype),
                                                       vector_read(a.bias, a.dtype)}, 8, 16); p.tpr) {
    const bool prefetch = row_kernel_options().l2_prefetch;  // Note [row kernel switches]
    with_k<S>(p.k, [&](auto K) {
      launch_kernel(ln_rows_forward_kernel<S, decltype(K)::value>, p.grid, p.block(), 0, st, a, prefetch);
    });
    count_launch("ln rows forward");
    return;
  }
  Scratch coeffs(sizeof(double) * 2 * size_t(a.rows), st);
  planar_stats_pass(x, BnShape{1, a.rows, a.cols}, st, RowStatsEpilogue{a, coeffs.as<double>()});
  launch_matrix<S, LnApply>(a.rows, a.cols, {a.x, a.y},
                            LnApplyParams{a.x, a.y, a.cols, coeffs.as<double>(), a.weight, a.bias},
                            st, "ln normalize");
}

// One block per row (striding over rows): sums of g = weight * dy and g * (x - mean) over the
// row in a fixed order, then the row's input-gradient coefficients (Note [norm grad]).
template <class S, int V>
__global__ void __launch_bounds__(kBlock)
    row_grad_kernel(const S* dy, const S* x, LnBackwardArgs a, math::NormGradCoeffs<ComputeT<S>>* co) {
  grid_dependency();
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
        const T gw = g.get(e) * T(a.weight.get(c + e, 1.0));
        s.dy += double(gw);
        s.dy_xc += double(gw * math::centered(p.get(e), m));
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
  grid_dependency();
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

// The rows backward of K vectors per thread with kN sums a column in kIn, staged (Note [staged
// row]) where the switch is on and the SM holds the stages of its resident blocks beside their
// column sums (compiled where an SM of 228 KB, an H100's, does): the registers kernel's grid has 2
// blocks per SM, the others the blocks of their launch bounds.
template <class S, int K, ColumnSumsIn kIn, int kN>
void launch_rows_backward(const LnBackwardArgs& a, dim3 block, unsigned grid,
                          ColumnPartial<ComputeT<S>, kN>* partials,
                          const RowKernelOptions& options, cudaStream_t st) {
  constexpr size_t sums = dynamic_sums_bytes<S, K, kIn, kN>();
  constexpr size_t stage = row_stage_bytes<K>();
  constexpr size_t need = size_t(kIn == ColumnSumsIn::registers ? 2 : rows_backward_blocks<K, kIn, true>()) *
                          (sums + stage + 4096);
  if constexpr (stage > 0 && need <= (228u << 10)) {
    if (options.staged_rows && device_state().shared_per_sm >= need) {
      allow_dynamic_shared<ln_rows_backward_kernel<S, K, kIn, kN, true>>(sums + stage);
      launch_kernel(ln_rows_backward_kernel<S, K, kIn, kN, true>, grid, block, sums + stage, st, a, partials,
                    options.l2_prefetch);
      return;
    }
  }
  allow_dynamic_shared<ln_rows_backward_kernel<S, K, kIn, kN, false>>(sums);
  launch_kernel(ln_rows_backward_kernel<S, K, kIn, kN, false>, grid, block, sums, st, a, partials,
                options.l2_prefetch);
}

// The rows backward with column sums, kN of them a column (Note [one column sum]). Few blocks per
// SM: each block's column sums are one split of the dweight reduction. The sums take kN * K * V
// values in registers, or where both sums would take 32 registers or more, in shared memory, for
// three blocks per SM where the SM holds three blocks' worth (Note [column sums in shared
// memory]); the place does not depend on kN, so one sum only frees room.
template <class S, int K, int kN>
void rows_backward_with_sums(const LnBackwardArgs& a, const RowsPlan& p, const RowKernelOptions& options,
                             cudaStream_t st) {
  using T = ComputeT<S>;
  constexpr int V = int(16 / sizeof(S));
  constexpr bool kWide = column_sums_bytes<T, K, V, 2>() >= 128 * kBlock;
  const bool shared = kWide && options.shared_column_sums &&
                      device_state().shared_per_sm >= 3 * (column_sums_bytes<T, K, V, kN>() + 4096);
  const unsigned grid = shared ? p.grid_for(a.rows, 3) : p.grid;
  Reduction<ColumnPartial<T, kN>> r(int(grid), a.cols, st);
  if constexpr (kWide) {
    if (shared) launch_rows_backward<S, K, ColumnSumsIn::shared, kN>(a, p.block(), grid, r.partials, options, st);
  }
  if (!shared) launch_rows_backward<S, K, ColumnSumsIn::registers, kN>(a, p.block(), grid, r.partials, options, st);
  count_launch("ln rows backward");
  r.finalize(ParamGradEpilogue{a.dweight, a.dbias}, st);
}

template <class S>
void ln_backward_typed(const LnBackwardArgs& a, cudaStream_t st) {
  using T = ComputeT<S>;
  const auto* dy = static_cast<const S*>(a.dy);
  const auto* x = static_cast<const S*>(a.x);
  // Two vectors per thread (Note [register rows]).
  if (const RowsPlan p = rows_plan<S>(a.rows, a.cols, {a.dy, a.x, a.dx, vector_read(a.weight, a.dtype)}, 2, 2);
      p.tpr) {
    const RowKernelOptions options = row_kernel_options();  // Note [row kernel switches]
    with_k<S>(p.k, [&](auto K) {
      constexpr int k = decltype(K)::value;
      if (!a.dweight.present()) {
        // No column sums: no splits to keep few, a grid as the forward's.
        launch_rows_backward<S, k, ColumnSumsIn::none, 1>(a, p.block(), p.grid_for(a.rows, 16), nullptr, options, st);
        count_launch("ln rows backward");
      } else if (a.dbias.present()) {
        rows_backward_with_sums<S, k, 2>(a, p, options, st);
      } else {
        rows_backward_with_sums<S, k, 1>(a, p, options, st);
      }
    });
    return;
  }
  if (a.rows > 0) {
    Scratch co(sizeof(math::NormGradCoeffs<T>) * size_t(a.rows), st);
    auto* cop = co.as<math::NormGradCoeffs<T>>();
    const int v = vec_width<S>(a.cols, {dy, x});
    const unsigned blocks = unsigned(std::min<int64_t>(a.rows, 65535LL * 16));
    with_width<S>(v, [&](auto V) {
      launch_kernel(row_grad_kernel<S, decltype(V)::value>, blocks, kBlock, 0, st, dy, x, a, cop);
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
    launch_kernel(col_grad_kernel<S>, dim3(unsigned(tiles), unsigned(sp)), dim3(kColTile, kBlock / kColTile), 0,
                  st, dy, x, a, r.partials);
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
