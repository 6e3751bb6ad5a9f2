// Which vectors each CUDA normalization thread reads (Note [batched walk]): a block split of one
// channel of the planar view, or of the rows under one column vector. Plain index arithmetic on
// the CUDA built-ins, so tests/test_cuda_walks.py compiles it on the host with stand-ins for them.
#pragma once
#include <cstdint>

#include "core/norm_args.h"

namespace ft::cuda {
namespace {

constexpr int kUnroll = 4;  // independent vector loads in flight per thread

// Walks vector indices jv, jv + step, ... of one channel of the planar view, (outer, inner / V),
// by stepping (run, i) instead of dividing per vector: 64-bit division costs more than the load.
// run is the element offset of the channel's run holding the vector ((o * channels + c) * inner
// for run o), i the vector's index in it: the vector's offset is then run + i * V, one add.
struct PlanarWalk {
  int64_t run, i, iv, step_i, run_step, plane;
  // c_run: the channel's first run's offset (c * inner); plane: channels * inner.
  __device__ PlanarWalk(int64_t jv, int64_t iv_, int64_t step, int64_t c_run, int64_t plane_)
      : run(jv / iv_ * plane_ + c_run), i(jv % iv_), iv(iv_), step_i(step % iv_), run_step(step / iv_ * plane_),
        plane(plane_) {}
  __device__ __forceinline__ void next() {
    run += run_step;
    i += step_i;
    if (i >= iv) {
      i -= iv;
      run += plane;
    }
  }
};

// Asks L2 for the line holding p (no registers, no result; the host build has no L2 to ask).
__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(__cvta_generic_to_global(p)));
#else
  (void)p;
#endif
}

// Note [second pass in reverse]: a normalization reads its input twice, in the pass that sums
// it (statistics; dy and x for the gradient sums) and in the elementwise pass after it.  Blocks
// start roughly in the order of their index, and both passes' grids lay their blocks out in
// memory order (a batch-norm split is a range of samples or rows; a channels-last group-norm
// block a range of a sample's rows, samples in grid z), so an elementwise pass in index order
// would first ask for what the pass before it read first: the lines longest in L2, the first
// evicted once the input is larger than L2 (50 MB on an H100/H200: BatchNorm1d 8192 x 1024
// fp32's dy and x are 64 MB, fp32 NHWC 256 x 32 x 56 x 56 is 103 MB a tensor).  So the
// elementwise passes count their blocks from the grid's last (gridDim - 1 - blockIdx in every
// dimension) and start on what the pass before read last, still in L2.  Which block does which
// part changes, not what any part computes: these passes sum nothing across blocks.
// `_C._cuda_row_kernel_options(reverse_second_pass=False)` walks them in index order
// (Note [row kernel switches]).
struct GridPos {
  unsigned x, y, z;
};
__device__ __forceinline__ GridPos grid_pos(bool reverse = false) {
  if (!reverse) return {blockIdx.x, blockIdx.y, blockIdx.z};
  return {gridDim.x - 1 - blockIdx.x, gridDim.y - 1 - blockIdx.y, gridDim.z - 1 - blockIdx.z};
}

// The vector range [j0, j1) of channel `c` that block split `split` of `splits` covers.
__device__ __forceinline__ void split_range(int64_t total, int splits, int split, int64_t& j0, int64_t& j1) {
  j0 = total * split / splits;
  j1 = total * (split + 1) / splits;
}

// Note [batched walk]: a thread walks its vectors of a split kUnroll at a time and loads every
// vector of a batch before it uses any (kUnroll independent loads in flight). A walk gives each
// batch as element offsets, off[u] < 0 for a vector past the split's end; only a walk's last
// batch can hold such, and its first vector is always the split's:
//   while (w.full()) { Batch<true> b; w.next(b); ... }   // kUnroll vectors, no checks
//   if (w.more()) { Batch<false> b; w.next(b); ... }     // the last batch, b.has(u) checked
// Note [full batches]: the rows passes over 2-byte values are bound by the instructions they
// issue, not by DRAM (ncu on an H200: bf16 rows statistics at 19% of DRAM bandwidth, stalled on
// execution dependencies, 124 registers).  Compiled for batches that are known full, a batch
// computes no bounds check, selects no sentinel and branches around no vector; and the walks
// step their offsets by adds instead of forming them by 64-bit multiplies.
// PlanarSplit walks channel x of the planar view in split y (grid (C, splits); x, y the block's
// GridPos); RowsSplit walks one column vector down the rows of an (R, C) array (block (column
// vectors, rows)).
template <bool kFull>
struct Batch {
  int64_t off[kUnroll];
  __device__ __forceinline__ bool has(int u) const { return kFull || off[u] >= 0; }
};

template <int V>
class PlanarSplit {
 public:
  // The split of block b (Note [second pass in reverse]).
  __device__ __forceinline__ explicit PlanarSplit(const BnShape& s, GridPos b = grid_pos())
      : w_(first(s, b.y), s.inner / V, int64_t(blockDim.x), int64_t(b.x) * s.inner, s.channels * s.inner) {}
  __device__ __forceinline__ bool more() const { return jv_ < j1_; }
  // Whether the next batch holds kUnroll vectors (every batch but a walk's last does).
  __device__ __forceinline__ bool full() const { return jv_ + int64_t(kUnroll - 1) * blockDim.x < j1_; }
  template <bool kFull>
  __device__ __forceinline__ void next(Batch<kFull>& b) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      b.off[u] = kFull || jv_ + int64_t(u) * blockDim.x < j1_ ? w_.run + w_.i * V : -1;
      w_.next();
    }
    jv_ += kUnroll * int64_t(blockDim.x);
  }
  template <class S>
  __device__ __forceinline__ void prefetch(const S*) const {}  // only rows walks prefetch

 private:
  // Sets the range of split `split` and returns this thread's first vector index.
  __device__ __forceinline__ int64_t first(const BnShape& s, unsigned split) {
    int64_t j0;
    split_range(s.outer * (s.inner / V), gridDim.y, split, j0, j1_);
    jv_ = j0 + threadIdx.x;
    return jv_;
  }
  int64_t jv_, j1_;
  PlanarWalk w_;
};

// Note [masked planar walk]: a planar channel whose runs of `inner` values are not a whole
// number of vectors (inner = 49 at 7x7) is walked in the V-wide vectors of the array that overlap
// each run, so that it still reads 16 bytes per access instead of one value: vector k of run o
// starts at element (a + k) * V, a the vector holding the run's first value, and holds run values
// in lanes [lo, hi).  Each run gets ceil((inner + V - 1) / V) vector slots; a slot past the run's
// end (a run that starts on a vector boundary needs one fewer) is given as off = -1.  Lanes
// outside [lo, hi) belong to the neighbouring channels: never used or written.
struct Lanes {
  int lo, hi;
};

template <int V>
class PlanarSpanSplit {
 public:
  __device__ __forceinline__ explicit PlanarSpanSplit(const BnShape& s, GridPos b = grid_pos())
      : inner_(s.inner), w_(first(s, b.y), slots(s.inner), int64_t(blockDim.x), int64_t(b.x) * s.inner,
                            s.channels * s.inner) {}
  __device__ __forceinline__ static int64_t slots(int64_t inner) { return (inner + 2 * V - 2) / V; }
  __device__ __forceinline__ bool more() const { return jv_ < j1_; }
  __device__ __forceinline__ void next(int64_t (&off)[kUnroll], Lanes (&lanes)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      off[u] = -1;
      if (jv_ + int64_t(u) * blockDim.x < j1_) {
        const int64_t run = w_.run;
        const int64_t start = (run / V + w_.i) * V;
        const int64_t lo = run - start, hi = run + inner_ - start;
        lanes[u] = {lo > 0 ? int(lo) : 0, hi < V ? int(hi) : V};
        if (lanes[u].lo < lanes[u].hi) off[u] = start;
      }
      w_.next();
    }
    jv_ += kUnroll * int64_t(blockDim.x);
  }

 private:
  __device__ __forceinline__ int64_t first(const BnShape& s, unsigned split) {
    int64_t j0;
    split_range(s.outer * slots(s.inner), gridDim.y, split, j0, j1_);
    jv_ = j0 + threadIdx.x;
    return jv_;
  }
  int64_t inner_, jv_, j1_;
  PlanarWalk w_;
};

class RowsSplit {
 public:
  // The column vector whose first element is column col0 of an (R, C) array, in the rows of
  // split `split` (Note [second pass in reverse]); prefetch: Note [rows walk prefetch].
  __device__ __forceinline__ RowsSplit(int64_t R, int64_t C, int64_t col0, bool prefetch = false,
                                       unsigned split = blockIdx.y)
      : stride_(int64_t(blockDim.y) * C), prefetch_(prefetch) {
    int64_t r0, r1;
    split_range(R, gridDim.y, split, r0, r1);
    r0 += threadIdx.y;
    left_ = r1 - r0;
    off_ = r0 * C + col0;
  }
  __device__ __forceinline__ bool more() const { return left_ > 0; }
  // Whether the next batch holds kUnroll rows (every batch but a walk's last does).
  __device__ __forceinline__ bool full() const { return left_ > int64_t(kUnroll - 1) * blockDim.y; }
  template <bool kFull>
  __device__ __forceinline__ void next(Batch<kFull>& b) {
    peek<kFull>(b.off);
    off_ += kUnroll * stride_;
    left_ -= kUnroll * int64_t(blockDim.y);
  }
  // The offsets the next call of next() gives, without moving on (kFull: where full() holds).
  template <bool kFull = false>
  __device__ __forceinline__ void peek(int64_t (&off)[kUnroll]) const {
    int64_t o = off_;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u, o += stride_) off[u] = kFull || int64_t(u) * blockDim.y < left_ ? o : -1;
  }
  // Note [rows walk prefetch]: a rows pass reads one 16-byte vector per row down a column, a
  // batch of kUnroll rows at a time, and uses a batch only once all of it has arrived; at the one
  // to three blocks per SM its registers allow (bf16: 124-127 registers for the reductions), the
  // loads in flight cannot cover DRAM's latency (ncu on an H200: bf16 rows statistics and
  // gradient sums at 19-49% of DRAM bandwidth, stalled on loads).  Once a batch's loads are
  // issued, each thread asks L2 for the vectors of its next batch where that batch is full (not
  // the last): DRAM works on that batch while this one is summed, and its loads then wait on
  // L2.  One prefetch instruction per vector, a hint that changes no result.  Only rows of
  // 2-byte values prefetch (compiled out for the others): there the address arithmetic fits in
  // the registers the sums already take, while the fp32 passes, at 88-94% of the two-pass
  // bandwidth on the H200, would lose a block per SM to it (gradient sums 80 -> 94 registers).
  template <class S>
  __device__ __forceinline__ void prefetch(const S* a) const {
    if constexpr (sizeof(S) != 2) return;
    if (!prefetch_ || !full()) return;
    int64_t off[kUnroll];
    peek<true>(off);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) prefetch_l2(a + off[u]);
  }

 private:
  int64_t stride_, off_, left_;  // elements between the thread's rows; its next row's; rows left
  bool prefetch_;
};

}  // namespace
}  // namespace ft::cuda
