// The statistics and elementwise loops every normalization's CPU drivers share (batch, layer,
// RMS, group, instance norm), and the two drivers that partition their work; compiled into each
// ISA build (include after cpu/vec.h: Note [vector overloads]).
//
// Two layouts cover every input (BnShape, Note [planar view]):
//   planar  (N, C, S) with S > 1: a channel is N runs of S contiguous values;
//   rows    (R, C): channel varies fastest (channels-last, 2-d input); vectors span channels.
// Note [bn partition]: work is cut into pieces chosen from the shape alone (never the thread
// count), statistics are summed in blocks whose bounds depend only on the piece, and partials
// are merged in piece order, so every result is bitwise identical for any thread count.
// Note [bn hot channel]: in the planar layout a channel whose data fits kHotBytes is one task:
// its values are read from DRAM once for the statistics and normalized while still in L2/L3.
#pragma once
#if !defined(FT_ISA)
#error "cpu/norm_stats.h is compiled once per ISA (FT_ISA)"
#endif
#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/norm_args.h"
#include "core/parallel.h"
#include "cpu/vec.h"
#include "math/batch_norm.h"
#include "math/layer_norm.h"

namespace ft::cpu::FT_ISA {

using Stats = math::BnStats<double>;

constexpr int64_t kHotBytes = 1 << 20;         // per-core L2 plus a share of L3 on current CPUs
constexpr int64_t kBlock = 2048;               // planar block: its second pass reads L1
constexpr int64_t kRowBlock = 128;             // rows block: float32 sums of at most this many
constexpr int64_t kRowPieceElems = 1 << 18;    // rows piece: one task

template <class S> using Cmp = ComputeOf<S>;  // Note [compute type]

// sum dy and sum dy * (x - mean) of a channel's values.
struct GradSums {
  double dy = 0, dy_xc = 0;
};

// The fixed-order merges of partial results (Note [bn partition]).
inline Stats merge(const Stats& a, const Stats& b) { return math::chan_merge(a, b); }
inline GradSums merge(const GradSums& a, const GradSums& b) { return {a.dy + b.dy, a.dy_xc + b.dy_xc}; }
// Partials of several channels at once (a group's), channel by channel; empty is the identity.
template <class A>
std::vector<A> merge(const std::vector<A>& a, const std::vector<A>& b) {
  if (a.empty()) return b;
  std::vector<A> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = merge(a[i], b[i]);
  return out;
}

template <template <class> class Fn, class Args>
void by_dtype(DType d, const Args& a) {
  visit_dtype(d, [&](auto s) { Fn<typename decltype(s)::type>::run(a); });
}

// ---------------------------------------------------------------- planar layout (N, C, S)

// Note [chained sums]: a sum of vectors in one accumulator is one chain of dependent adds, each
// waiting out the add's latency (3-4 cycles) where the core could start one or two a cycle. The
// planar statistics keep kChains accumulators, vector i of a run adding into chain i % kChains,
// totalled pairwise, and lane_sum adds a vector's lanes pairwise: batch norm's forward over
// (256, 64, 14, 14) took 0.53-0.63 ms and takes 0.38-0.43, a layer-norm forward of 16384 rows
// of 192 1.14 ms and 1.00 (one thread). Which chain a value joins depends on its place in its
// run alone, never on threads (Note [bn partition]). The gradient sums keep one chain: with
// four (and the runs found without divisions) a layer-norm backward of rows of 384-768 was
// 30-40% slower, its loads of dy stalling, while rows of 192 gained 5%.
constexpr int kChains = 4;
template <class S>  // the storage type: its vector (VecOf) is the accumulator
struct Chains {
  using V = VecOf<S>;
  V v[kChains] = {};
  template <int K>
  FT_INLINE V& operator[](std::integral_constant<int, K>) {
    static_assert(K >= 0 && K < kChains);
    return v[K];
  }
  FT_INLINE V total() const { return (v[0] + v[1]) + (v[2] + v[3]); }
};
// Calls body(k, i) for each whole vector i of [0, len), k its chain (a compile-time constant);
// returns the index of the first value after them.
template <int64_t W, class F>
FT_INLINE int64_t over_chains(int64_t len, F&& body) {
  using K0 = std::integral_constant<int, 0>;
  int64_t i = 0;
  for (; i + kChains * W <= len; i += kChains * W) {
    body(K0{}, i);
    body(std::integral_constant<int, 1>{}, i + W);
    body(std::integral_constant<int, 2>{}, i + 2 * W);
    body(std::integral_constant<int, 3>{}, i + 3 * W);
  }
  for (; i + W <= len; i += W) body(K0{}, i);
  return i;
}

// Calls vb(i) on vectors covering [0, len) (Note [overlapping last vector]: the last one may
// start before the previous one ends) for an elementwise pass, or sb(i) per value when len < W.
template <int64_t W, class VecBody, class ScalarBody>
FT_INLINE void over_elementwise(int64_t len, VecBody&& vb, ScalarBody&& sb) {
  if (len < W) {
    for (int64_t i = 0; i < len; ++i) sb(i);
    return;
  }
  int64_t i = 0;
  for (; i + W <= len; i += W) vb(i);
  if (i < len) vb(len - W);
}

// Calls f(offset, length) for the contiguous runs holding values [j0, j1) of channel c, where
// value j of a channel is x[j / S, c, j % S].
template <class F>
FT_INLINE void for_runs(const BnShape& s, int64_t c, int64_t j0, int64_t j1, F&& f) {
  const int64_t S = s.inner;
  for (int64_t j = j0; j < j1;) {
    const int64_t n = j / S, i = j - n * S;
    const int64_t len = std::min(S - i, j1 - j);
    f((n * s.channels + c) * S + i, len);
    j += len;
  }
}

// Pieces of one channel: one when it fits kHotBytes (Note [bn hot channel]).
inline int64_t planar_pieces(int64_t per_channel, int64_t bytes_per_value) {
  return std::max<int64_t>(1, (per_channel * bytes_per_value + kHotBytes - 1) / kHotBytes);
}
FT_INLINE int64_t piece_begin(int64_t m, int64_t p, int64_t pieces) { return m * p / pieces; }

// Statistics of values [j0, j1) of channel c: blocks of kBlock values, each summed twice (a
// pass for its approximate mean, a pass around it) and merged in order (Note [bn statistics]).
template <class S>
Stats planar_stats(const S* x, const BnShape& s, int64_t c, int64_t j0, int64_t j1) {
  using C = Cmp<S>;
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  Stats st{0, 0, 0};
  for (int64_t jb = j0; jb < j1; jb += kBlock) {
    const int64_t je = std::min(jb + kBlock, j1);
    Chains<S> acc;
    C tail = 0;
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      const S* p = x + off;
      const int64_t i0 = over_chains<W>(len, [&](auto k, int64_t i) { acc[k] = acc[k] + vload(p + i); });
      for (int64_t i = i0; i < len; ++i) tail += sload(p + i);
    });
    const C shift = C((lane_sum(acc.total()) + double(tail)) / double(je - jb));
    Chains<S> s1, s2;
    double t1 = 0, t2 = 0;
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      const S* p = x + off;
      int64_t i = over_chains<W>(len, [&](auto k, int64_t i) {
        V d = vload(p + i) - shift;
        s1[k] = s1[k] + d;
        s2[k] = s2[k] + d * d;
      });
      for (; i < len; ++i) {
        double d = double(sload(p + i) - shift);
        t1 += d;
        t2 += d * d;
      }
    });
    st = math::chan_merge(st, math::from_shifted_sums<double>(double(je - jb), double(shift),
                                                             lane_sum(s1.total()) + t1, lane_sum(s2.total()) + t2));
  }
  return st;
}

// Note [coefficients by value]: the elementwise passes copy their coefficients first. Read
// through the reference, a float32 coefficient may be the memory a float32 store just wrote, so
// the compiler reloaded every one after each vector stored (four more loads a vector).

// y = bn_forward(x) over one contiguous run of len values.
template <class S, class T>
FT_INLINE void run_normalize(const S* x, S* y, int64_t len, const math::BnForwardCoeffs<T>& coeffs) {
  const math::BnForwardCoeffs<T> co = coeffs;  // Note [coefficients by value]
  over_elementwise<lanes<S>()>(
      len, [&](int64_t i) { vstore(y + i, math::bn_forward(vload(x + i), co)); },
      [&](int64_t i) { sstore(y + i, math::bn_forward(sload(x + i), co)); });
}

template <class S, class T>
void planar_normalize(const S* x, S* y, const BnShape& s, int64_t c, int64_t j0, int64_t j1,
                      const math::BnForwardCoeffs<T>& co) {
  for_runs(s, c, j0, j1, [&](int64_t off, int64_t len) { run_normalize(x + off, y + off, len, co); });
}

// sum dy and sum dy * (x - mean) over values [j0, j1) of channel c; float lanes flushed into
// doubles every kBlock values. Weighted: dy times w[i], i the value's inner index (layer norm's
// weight along the row: Note [norm grad]).
template <bool Weighted = false, class S, class T>
GradSums planar_grad_sums(const S* dy, const S* x, const BnShape& s, int64_t c, int64_t j0,
                          int64_t j1, const math::SplitMean<T>& mean, const T* w = nullptr) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  GradSums g;
  for (int64_t jb = j0; jb < j1; jb += kBlock) {
    const int64_t je = std::min(jb + kBlock, j1);
    V a{}, b{};
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      const T* wr = Weighted ? w + off % s.inner : nullptr;
      int64_t i = 0;
      for (; i + W <= len; i += W) {
        V d = vload(dy + off + i);
        if constexpr (Weighted) d = d * vload(wr + i);
        a = a + d;
        b = b + d * math::centered(vload(x + off + i), mean);
      }
      for (; i < len; ++i) {
        T d = sload(dy + off + i);
        if constexpr (Weighted) d = d * wr[i];
        g.dy += double(d);
        g.dy_xc += double(d * math::centered(sload(x + off + i), mean));
      }
    });
    g.dy += lane_sum(a);
    g.dy_xc += lane_sum(b);
  }
  return g;
}

// The input gradient of each coefficient kind: batch norm's, and layer/group norm's (Note
// [norm grad]).
template <class V, class T>
FT_INLINE V grad_input(V dy, V x, const math::BnBackwardCoeffs<T>& c) { return math::bn_backward(dy, x, c); }
template <class V, class T>
FT_INLINE V grad_input(V dy, V x, const math::NormGradCoeffs<T>& c) { return math::norm_grad_input(dy, x, c); }

// dx over one contiguous run of len values; Weighted: dy times w[i] before the map.
template <bool Weighted = false, class S, class Co, class T = Cmp<S>>
FT_INLINE void run_grad_input(const S* dy, const S* x, S* dx, int64_t len, const Co& coeffs,
                              const T* w = nullptr) {
  const Co co = coeffs;  // Note [coefficients by value]
  over_elementwise<lanes<S>()>(
      len,
      [&](int64_t i) {
        auto g = vload(dy + i);
        if constexpr (Weighted) g = g * vload(w + i);
        vstore(dx + i, grad_input(g, vload(x + i), co));
      },
      [&](int64_t i) {
        auto g = sload(dy + i);
        if constexpr (Weighted) g = g * w[i];
        sstore(dx + i, grad_input(g, sload(x + i), co));
      });
}

// Weighted as planar_grad_sums: dy times w[i] before the map, i the value's inner index.
template <bool Weighted = false, class S, class Co, class T = Cmp<S>>
void planar_grad_input(const S* dy, const S* x, S* dx, const BnShape& s, int64_t c, int64_t j0,
                       int64_t j1, const Co& co, const T* w = nullptr) {
  for_runs(s, c, j0, j1, [&](int64_t off, int64_t len) {
    run_grad_input<Weighted>(dy + off, x + off, dx + off, len, co, Weighted ? w + off % s.inner : nullptr);
  });
}

// Note [planar driver]: one reduction over each of C channels of M values, then one elementwise
// pass. reduce(c, j0, j1) returns the partial (Stats, GradSums, ...) of values [j0, j1) of
// channel c; finish(c, total) runs once per channel on the merged total (saved statistics,
// running stats, coefficients); apply(c, j0, j1) is the elementwise pass. A channel of at most
// kHotBytes (bytes_per_value covering every array the pass reads) is one task, reduced and
// applied while in cache (Note [bn hot channel]); larger ones are cut into pieces whose partials
// merge in piece order.
template <class A, class Reduce, class Finish, class Apply>
void planar_driver(int64_t C, int64_t M, int64_t bytes_per_value, Reduce&& reduce,
                   Finish&& finish, Apply&& apply) {
  const int64_t P = planar_pieces(M, bytes_per_value);
  if (P == 1) {
    parallel_for(C, C * M, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        finish(c, reduce(c, int64_t(0), M));
        apply(c, int64_t(0), M);
      }
    });
    return;
  }
  std::vector<A> part(C * P);
  parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      part[k] = reduce(k / P, piece_begin(M, k % P, P), piece_begin(M, k % P + 1, P));
  });
  for (int64_t c = 0; c < C; ++c) {
    A total{};
    for (int64_t p = 0; p < P; ++p) total = merge(total, part[c * P + p]);
    finish(c, total);
  }
  parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      apply(k / P, piece_begin(M, k % P, P), piece_begin(M, k % P + 1, P));
  });
}

// ---------------------------------------------------------------- rows layout (R, C)

inline int64_t row_pieces(int64_t rows, int64_t channels) {
  const int64_t p = (rows * channels + kRowPieceElems - 1) / kRowPieceElems;
  return std::clamp<int64_t>(p, 1, std::max<int64_t>(rows, 1));
}

// Note [row tiles]: the rows-layout passes walk tiles of kTileRows rows, and within a tile
// kColumnVectors vectors of channels down its rows before the next, so the per-channel state a
// vector needs (shift, partial sums, coefficients) is loaded into registers once a tile where a
// row at a time reloaded it for every vector: the normalize read five vectors (x, the split mean,
// scale and bias) and the sums three and stored two for each vector of x, a channels-last group
// norm forward over (8, 2048, 7, 7) 2.5 times torch's time. Every channel still adds its rows in
// row order, so the sums are those of a row at a time; row blocks (kRowBlock) hold whole tiles.
// A tile spans at most 4 KB of rows: rows a multiple of 4 KB apart share an L1 set, more of them
// than it has ways, and a store to one followed by a load from another shares its address's low
// 12 bits, which the core takes for a dependence (4K aliasing); in 16-row tiles a BatchNorm1d of
// 1024 channels was 6-9% slower. Rows of 4 KB and more go a row at a time, as before; the gain is
// where rows are short (BatchNorm2d channels-last with 64 channels: 1.5x fwd, 1.3x bwd). The cap
// is for rows streamed from memory: a sample the rows driver keeps in cache (`whole`, Note [hot
// samples]) takes whole tiles at any row length, which there cost nothing measurable and saved
// a channels-last group norm over (8, 2048, 7, 7) (rows of 8 KB) a sixth of its time.
constexpr int64_t kTileRows = 16;
constexpr int kColumnVectors = sizeof(VecF) == 64 ? 4 : 2;  // registers: 32 for AVX-512, else 16

// Calls tile(K, c, ra, rb) on K vectors of channels from channel c over rows [ra, rb) (K a
// compile-time constant) and scalar(c, ra, rb) on the channel tail, tile by tile; whole: tiles
// of kTileRows rows whatever their length (Note [row tiles]).
template <class S, class Tile, class Scalar>
FT_INLINE void over_tiles(int64_t C, int64_t r0, int64_t r1, bool whole, Tile&& tile, Scalar&& scalar) {
  constexpr int64_t W = lanes<S>();
  const int64_t tile_rows =
      whole ? kTileRows : std::clamp<int64_t>(4096 / std::max<int64_t>(1, C * int64_t(sizeof(S))), 1, kTileRows);
  for (int64_t ra = r0; ra < r1; ra += tile_rows) {
    const int64_t rb = std::min(ra + tile_rows, r1);
    int64_t c = 0;
    for (; c + kColumnVectors * W <= C; c += kColumnVectors * W)
      tile(std::integral_constant<int, kColumnVectors>{}, c, ra, rb);
    for (; c + W <= C; c += W) tile(std::integral_constant<int, 1>{}, c, ra, rb);
    for (; c < C; ++c) scalar(c, ra, rb);
  }
}

// K vectors of per-channel values from channel c (state a tile keeps in registers).
template <int K, class T>
struct Lanes {
  VecOf<T> v[K];
  FT_INLINE Lanes(const T* p, int64_t c) {
    for (int j = 0; j < K; ++j) v[j] = vload(p + c + j * lanes<T>());
  }
  FT_INLINE void store(T* p, int64_t c) const {
    for (int j = 0; j < K; ++j) vstore(p + c + j * lanes<T>(), v[j]);
  }
  FT_INLINE VecOf<T>& operator[](int j) { return v[j]; }
  FT_INLINE const VecOf<T>& operator[](int j) const { return v[j]; }
};

// Statistics of rows [r0, r1) per channel into out[0..C). The piece's first block is summed
// twice to find each channel's approximate mean; every block is then summed once around that
// shift, in float32 lanes flushed into doubles per block (Note [bn statistics]: stable while the
// shift stays within a few std of the mean). A Chan merge per block would cost two divisions per
// channel per block, more than the sums themselves when C is wide.
template <class S>
void rows_stats(const S* x, int64_t C, int64_t r0, int64_t r1, bool hot, Stats* out) {
  using T = Cmp<S>;
  constexpr int64_t W = lanes<S>();
  std::vector<T> shift(C, T(0)), s1(C), s2(C);
  std::vector<double> t1(C, 0.0), t2(C, 0.0);
  const int64_t first = std::min(r0 + kRowBlock, r1);
  over_tiles<S>(
      C, r0, first, hot,
      [&](auto k, int64_t c, int64_t ra, int64_t rb) {
        constexpr int K = decltype(k)::value;
        Lanes<K, T> sum(shift.data(), c);
        for (int64_t r = ra; r < rb; ++r)
          for (int j = 0; j < K; ++j) sum[j] = sum[j] + vload(x + r * C + c + j * W);
        sum.store(shift.data(), c);
      },
      [&](int64_t c, int64_t ra, int64_t rb) {
        for (int64_t r = ra; r < rb; ++r) shift[c] += sload(x + r * C + c);
      });
  for (int64_t c = 0; c < C; ++c) shift[c] = shift[c] / T(first - r0);
  for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
    const int64_t b1 = std::min(b0 + kRowBlock, r1);
    std::fill(s1.begin(), s1.end(), T(0));
    std::fill(s2.begin(), s2.end(), T(0));
    over_tiles<S>(
        C, b0, b1, hot,
        [&](auto k, int64_t c, int64_t ra, int64_t rb) {
          constexpr int K = decltype(k)::value;
          const Lanes<K, T> sh(shift.data(), c);
          Lanes<K, T> a(s1.data(), c), q(s2.data(), c);
          for (int64_t r = ra; r < rb; ++r)
            for (int j = 0; j < K; ++j) {
              const auto d = vload(x + r * C + c + j * W) - sh[j];
              a[j] = a[j] + d;
              q[j] = q[j] + d * d;
            }
          a.store(s1.data(), c);
          q.store(s2.data(), c);
        },
        [&](int64_t c, int64_t ra, int64_t rb) {
          for (int64_t r = ra; r < rb; ++r) {
            T d = sload(x + r * C + c) - shift[c];
            s1[c] += d;
            s2[c] += d * d;
          }
        });
    for (int64_t c = 0; c < C; ++c) {
      t1[c] += double(s1[c]);
      t2[c] += double(s2[c]);
    }
  }
  for (int64_t c = 0; c < C; ++c)
    out[c] = math::from_shifted_sums<double>(double(r1 - r0), double(shift[c]), t1[c], t2[c]);
}

template <class S>
void rows_grad_sums(const S* dy, const S* x, int64_t C, int64_t r0, int64_t r1, bool hot,
                    const Cmp<S>* hi, const Cmp<S>* lo, GradSums* out) {
  using T = Cmp<S>;
  constexpr int64_t W = lanes<S>();
  std::vector<T> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) out[c] = GradSums{};
  for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
    const int64_t b1 = std::min(b0 + kRowBlock, r1);
    std::fill(a.begin(), a.end(), T(0));
    std::fill(b.begin(), b.end(), T(0));
    over_tiles<S>(
        C, b0, b1, hot,
        [&](auto k, int64_t c, int64_t ra, int64_t rb) {
          constexpr int K = decltype(k)::value;
          const Lanes<K, T> h(hi, c), l(lo, c);
          Lanes<K, T> sa(a.data(), c), sb(b.data(), c);
          for (int64_t r = ra; r < rb; ++r)
            for (int j = 0; j < K; ++j) {
              const auto d = vload(dy + r * C + c + j * W);
              sa[j] = sa[j] + d;
              sb[j] = sb[j] + d * ((vload(x + r * C + c + j * W) - h[j]) - l[j]);
            }
          sa.store(a.data(), c);
          sb.store(b.data(), c);
        },
        [&](int64_t c, int64_t ra, int64_t rb) {
          for (int64_t r = ra; r < rb; ++r) {
            T d = sload(dy + r * C + c);
            a[c] += d;
            b[c] += d * ((sload(x + r * C + c) - hi[c]) - lo[c]);
          }
        });
    for (int64_t c = 0; c < C; ++c) {
      out[c].dy += double(a[c]);
      out[c].dy_xc += double(b[c]);
    }
  }
}

// Per-channel coefficient vectors for the rows layout, so a SIMD vector of channels loads them:
// the split mean (hi, lo) and the two or three values of a coefficient struct (a, b, d).
template <class T>
struct ChannelCoeffs {
  std::vector<T> hi, lo, a, b, d;
  explicit ChannelCoeffs(int64_t C) : hi(C), lo(C), a(C), b(C), d(C) {}
  void set_mean(int64_t c, const math::SplitMean<T>& m) {
    hi[c] = m.hi;
    lo[c] = m.lo;
  }
  void set_forward(int64_t c, const math::BnForwardCoeffs<T>& co) {  // a: scale, b: bias
    set_mean(c, co.mean);
    a[c] = co.scale;
    b[c] = co.bias;
  }
  template <class Co>
  void set_grad(int64_t c, const Co& co) {  // Bn/NormGradCoeffs: mean and three values
    set_mean(c, co.mean);
    std::tie(a[c], b[c], d[c]) = values(co);
  }
  static auto values(const math::BnBackwardCoeffs<T>& co) { return std::tuple{co.mean_dy, co.proj, co.scale}; }
  static auto values(const math::NormGradCoeffs<T>& co) { return std::tuple{co.dy_scale, co.proj, co.shift}; }
};

// Note [vector template arguments]: GCC drops the may_alias attribute of the intrinsic vector
// types (__m512, ...) where one is a template argument, here of the coefficient structs, and
// warns.  The attribute lets a vector pointer read memory of another type; these structs hold
// vectors as values and no pointer to them is cast, so nothing depends on it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
template <class S, class T>
void rows_normalize(const S* x, S* y, int64_t C, int64_t r0, int64_t r1, bool hot,
                    const ChannelCoeffs<T>& k) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  over_tiles<S>(
      C, r0, r1, hot,
      [&](auto kc, int64_t c, int64_t ra, int64_t rb) {
        constexpr int K = decltype(kc)::value;
        math::BnForwardCoeffs<V> co[K];
        for (int j = 0; j < K; ++j) {
          const int64_t i = c + j * W;
          co[j] = {{vload(&k.hi[i]), vload(&k.lo[i])}, vload(&k.a[i]), vload(&k.b[i])};
        }
        for (int64_t r = ra; r < rb; ++r)
          for (int j = 0; j < K; ++j) {
            const int64_t i = r * C + c + j * W;
            vstore(y + i, math::bn_forward(vload(x + i), co[j]));
          }
      },
      [&](int64_t c, int64_t ra, int64_t rb) {
        const math::BnForwardCoeffs<T> co{{k.hi[c], k.lo[c]}, k.a[c], k.b[c]};
        for (int64_t r = ra; r < rb; ++r) sstore(y + r * C + c, math::bn_forward(sload(x + r * C + c), co));
      });
}

// Co: the coefficient template (math::BnBackwardCoeffs or math::NormGradCoeffs) set_grad filled.
template <template <class> class Co, class S, class T>
void rows_grad_input(const S* dy, const S* x, S* dx, int64_t C, int64_t r0, int64_t r1, bool hot,
                     const ChannelCoeffs<T>& k) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  over_tiles<S>(
      C, r0, r1, hot,
      [&](auto kc, int64_t c, int64_t ra, int64_t rb) {
        constexpr int K = decltype(kc)::value;
        Co<V> co[K];
        for (int j = 0; j < K; ++j) {
          const int64_t i = c + j * W;
          co[j] = {{vload(&k.hi[i]), vload(&k.lo[i])}, vload(&k.a[i]), vload(&k.b[i]), vload(&k.d[i])};
        }
        for (int64_t r = ra; r < rb; ++r)
          for (int j = 0; j < K; ++j) {
            const int64_t i = r * C + c + j * W;
            vstore(dx + i, grad_input(vload(dy + i), vload(x + i), co[j]));
          }
      },
      [&](int64_t c, int64_t ra, int64_t rb) {
        const Co<T> co{{k.hi[c], k.lo[c]}, k.a[c], k.b[c], k.d[c]};
        for (int64_t r = ra; r < rb; ++r) {
          const int64_t i = r * C + c;
          sstore(dx + i, grad_input(sload(dy + i), sload(x + i), co));
        }
      });
}
#pragma GCC diagnostic pop  // Note [vector template arguments]

// Note [rows driver]: `samples` stacked (R, C) blocks (one for batch norm, N for channels-last
// group norm), each cut into row pieces. reduce(n, r0, r1, hot, out) writes the C partials of
// rows [r0, r1) of block n; finish(n, total) gets the C totals of block n, merged in piece order;
// apply(n, r0, r1, hot) is the elementwise pass. hot: the rows are the whole block, reduced and
// applied by one task (Note [hot samples]).
// Note [hot samples]: a block of one piece (at most kRowPieceElems values) is one task, reduce,
// finish and apply, so the elementwise pass reads it from L2 where the statistics just left it,
// as a hot channel of the planar layout (Note [bn hot channel]); finish then runs for different
// blocks at once, on outputs of its own block. Its partials are the same piece's either way, so
// the results are too. A channels-last group norm over (8, 2048, 7, 7), whose samples had all
// been reduced before the first was applied, from L3: forward 165 -> 133 us, backward 269 ->
// 233 (2 threads), before whole tiles (Note [row tiles]).
template <class A, class Reduce, class Finish, class Apply>
void rows_driver(int64_t samples, int64_t R, int64_t C, Reduce&& reduce, Finish&& finish,
                 Apply&& apply) {
  const int64_t P = row_pieces(R, C);
  std::vector<A> part(samples * P * C);
  if (P == 1) {  // Note [hot samples]
    parallel_for(samples, samples * R * C, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        reduce(n, int64_t(0), R, true, &part[n * C]);
        finish(n, &part[n * C]);
        apply(n, int64_t(0), R, true);
      }
    });
    return;
  }
  parallel_for(samples * P, samples * R * C, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      reduce(t / P, piece_begin(R, t % P, P), piece_begin(R, t % P + 1, P), false, &part[t * C]);
  });
  std::vector<A> total(C);
  for (int64_t n = 0; n < samples; ++n) {
    std::fill(total.begin(), total.end(), A{});
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) total[c] = merge(total[c], part[(n * P + p) * C + c]);
    finish(n, total.data());
  }
  parallel_for(samples * P, samples * R * C, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      apply(t / P, piece_begin(R, t % P, P), piece_begin(R, t % P + 1, P), false);
  });
}

// Statistics of every channel of a planar or rows view, merged in piece order.
template <class S>
std::vector<Stats> channel_stats(const S* x, const BnShape& s) {
  const int64_t C = s.channels, M = s.per_channel();
  std::vector<Stats> out(C, Stats{0, 0, 0});
  if (M == 0) return out;
  auto keep = [&](int64_t c, const Stats& st) { out[c] = st; };
  if (s.inner > 1) {
    planar_driver<Stats>(
        C, M, sizeof(S), [&](int64_t c, int64_t j0, int64_t j1) { return planar_stats(x, s, c, j0, j1); },
        keep, [](int64_t, int64_t, int64_t) {});
  } else {
    rows_driver<Stats>(
        1, s.outer, C, [&](int64_t, int64_t r0, int64_t r1, bool hot, Stats* o) { rows_stats(x, C, r0, r1, hot, o); },
        [&](int64_t, const Stats* t) { std::copy(t, t + C, out.begin()); },
        [](int64_t, int64_t, int64_t, bool) {});
  }
  return out;
}

}  // namespace ft::cpu::FT_ISA
