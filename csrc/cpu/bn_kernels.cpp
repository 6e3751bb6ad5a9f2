// Batch-norm CPU drivers (forward, backward, statistics), compiled once per ISA; the math is in
// csrc/math/batch_norm.h, the vectors in csrc/cpu/vec.h (Note [vector overloads]).
//
// Two layouts cover every input (BnShape):
//   planar  (N, C, S) with S > 1: a channel is N runs of S contiguous values;
//   rows    (R, C): channel varies fastest (channels-last, 2-d input); vectors span channels.
// Note [bn partition]: work is cut into pieces chosen from the shape alone (never the thread
// count), statistics are summed in blocks whose bounds depend only on the piece, and partials
// are merged in piece order, so every result is bitwise identical for any thread count.
// Note [bn hot channel]: in the planar layout a channel whose data fits kHotBytes is one task:
// its values are read from DRAM once for the statistics and normalized while still in L2/L3.
#include "cpu/vec.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "cpu/bn_kernels.h"
#include "math/batch_norm.h"

#define FT_STR_(x) #x
#define FT_STR(x) FT_STR_(x)

namespace ft::cpu::FT_ISA {
namespace {

using Stats = math::BnStats<double>;

constexpr int64_t kHotBytes = 1 << 20;         // per-core L2 plus a share of L3 on current CPUs
constexpr int64_t kBlock = 2048;               // planar block: its second pass reads L1
constexpr int64_t kRowBlock = 128;             // rows block: float32 sums of at most this many
constexpr int64_t kRowPieceElems = 1 << 18;    // rows piece: one task

// Note [compute type]
template <class S> struct ComputeOf { using type = float; };
template <> struct ComputeOf<double> { using type = double; };
template <class S> using Cmp = typename ComputeOf<S>::type;
template <class S> using VecOf = std::conditional_t<std::is_same_v<S, double>, VecD, VecF>;
template <class S> constexpr int64_t lanes() { return std::is_same_v<S, double> ? kLanesD : kLanesF; }

// Lanes summed into a double in lane order.
template <class V> FT_INLINE double hsum(const V& v) {
  constexpr int n = int(sizeof(V) / sizeof(v[0]));
  double t = 0;
  for (int i = 0; i < n; ++i) t += double(v[i]);
  return t;
}

// ---------------------------------------------------------------- planar layout (N, C, S)

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
int64_t planar_pieces(int64_t per_channel, int64_t bytes_per_value) {
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
    V acc{};
    C tail = 0;
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      const S* p = x + off;
      int64_t i = 0;
      for (; i + W <= len; i += W) acc = acc + vload(p + i);
      for (; i < len; ++i) tail += sload(p + i);
    });
    const C shift = C((hsum(acc) + double(tail)) / double(je - jb));
    V s1{}, s2{};
    double t1 = 0, t2 = 0;
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      const S* p = x + off;
      int64_t i = 0;
      for (; i + W <= len; i += W) {
        V d = vload(p + i) - shift;
        s1 = s1 + d;
        s2 = s2 + d * d;
      }
      for (; i < len; ++i) {
        double d = double(sload(p + i) - shift);
        t1 += d;
        t2 += d * d;
      }
    });
    st = math::chan_merge(st, math::from_shifted_sums<double>(double(je - jb), double(shift),
                                                             hsum(s1) + t1, hsum(s2) + t2));
  }
  return st;
}

template <class S, class T>
void planar_normalize(const S* x, S* y, const BnShape& s, int64_t c, int64_t j0, int64_t j1,
                      const math::BnForwardCoeffs<T>& co) {
  constexpr int64_t W = lanes<S>();
  for_runs(s, c, j0, j1, [&](int64_t off, int64_t len) {
    const S* p = x + off;
    S* q = y + off;
    int64_t i = 0;
    for (; i + W <= len; i += W) vstore(q + i, math::bn_forward(vload(p + i), co));
    for (; i < len; ++i) sstore(q + i, math::bn_forward(sload(p + i), co));
  });
}

struct GradSums {
  double dy = 0, dy_xc = 0;
};

// sum dy and sum dy * (x - mean) over values [j0, j1) of channel c; float lanes flushed into
// doubles every kBlock values.
template <class S, class T>
GradSums planar_grad_sums(const S* dy, const S* x, const BnShape& s, int64_t c, int64_t j0,
                          int64_t j1, const math::SplitMean<T>& mean) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  GradSums g;
  for (int64_t jb = j0; jb < j1; jb += kBlock) {
    const int64_t je = std::min(jb + kBlock, j1);
    V a{}, b{};
    for_runs(s, c, jb, je, [&](int64_t off, int64_t len) {
      int64_t i = 0;
      for (; i + W <= len; i += W) {
        V d = vload(dy + off + i);
        a = a + d;
        b = b + d * math::centered(vload(x + off + i), mean);
      }
      for (; i < len; ++i) {
        T d = sload(dy + off + i);
        g.dy += double(d);
        g.dy_xc += double(d * math::centered(sload(x + off + i), mean));
      }
    });
    g.dy += hsum(a);
    g.dy_xc += hsum(b);
  }
  return g;
}

template <class S, class T>
void planar_grad_input(const S* dy, const S* x, S* dx, const BnShape& s, int64_t c, int64_t j0,
                       int64_t j1, const math::BnBackwardCoeffs<T>& co) {
  constexpr int64_t W = lanes<S>();
  for_runs(s, c, j0, j1, [&](int64_t off, int64_t len) {
    int64_t i = off, end = off + len;
    for (; i + W <= end; i += W) vstore(dx + i, math::bn_backward(vload(dy + i), vload(x + i), co));
    for (; i < end; ++i) sstore(dx + i, math::bn_backward(sload(dy + i), sload(x + i), co));
  });
}

// ---------------------------------------------------------------- rows layout (R, C)

int64_t row_pieces(int64_t rows, int64_t channels) {
  const int64_t p = (rows * channels + kRowPieceElems - 1) / kRowPieceElems;
  return std::clamp<int64_t>(p, 1, std::max<int64_t>(rows, 1));
}

// Calls vb(row, r, c) on vectors of channels and sb(row, r, c) on the channel tail, row by row.
template <class S, class VecBody, class ScalarBody>
FT_INLINE void over_rows(const S* x, int64_t C, int64_t r0, int64_t r1, VecBody&& vb,
                         ScalarBody&& sb) {
  constexpr int64_t W = lanes<S>();
  for (int64_t r = r0; r < r1; ++r) {
    const S* row = x + r * C;
    int64_t c = 0;
    for (; c + W <= C; c += W) vb(row, r, c);
    for (; c < C; ++c) sb(row, r, c);
  }
}

// Statistics of rows [r0, r1) per channel into out[0..C). The piece's first block is summed
// twice to find each channel's approximate mean; every block is then summed once around that
// shift, in float32 lanes flushed into doubles per block (Note [bn statistics]: stable while the
// shift stays within a few std of the mean). A Chan merge per block would cost two divisions per
// channel per block, more than the sums themselves when C is wide.
template <class S>
void rows_stats(const S* x, int64_t C, int64_t r0, int64_t r1, Stats* out) {
  using T = Cmp<S>;
  using V = VecOf<S>;
  std::vector<T> shift(C, T(0)), s1(C), s2(C);
  std::vector<double> t1(C, 0.0), t2(C, 0.0);
  const int64_t first = std::min(r0 + kRowBlock, r1);
  over_rows<S>(
      x, C, r0, first,
      [&](const S* row, int64_t, int64_t c) { vstore(&shift[c], vload(&shift[c]) + vload(row + c)); },
      [&](const S* row, int64_t, int64_t c) { shift[c] += sload(row + c); });
  for (int64_t c = 0; c < C; ++c) shift[c] = shift[c] / T(first - r0);
  for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
    const int64_t b1 = std::min(b0 + kRowBlock, r1);
    std::fill(s1.begin(), s1.end(), T(0));
    std::fill(s2.begin(), s2.end(), T(0));
    over_rows<S>(
        x, C, b0, b1,
        [&](const S* row, int64_t, int64_t c) {
          V d = vload(row + c) - vload(&shift[c]);
          vstore(&s1[c], vload(&s1[c]) + d);
          vstore(&s2[c], vload(&s2[c]) + d * d);
        },
        [&](const S* row, int64_t, int64_t c) {
          T d = sload(row + c) - shift[c];
          s1[c] += d;
          s2[c] += d * d;
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
void rows_grad_sums(const S* dy, const S* x, int64_t C, int64_t r0, int64_t r1,
                    const Cmp<S>* hi, const Cmp<S>* lo, GradSums* out) {
  using T = Cmp<S>;
  using V = VecOf<S>;
  const int64_t rb = kRowBlock;
  std::vector<T> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) out[c] = GradSums{};
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t b1 = std::min(b0 + rb, r1);
    std::fill(a.begin(), a.end(), T(0));
    std::fill(b.begin(), b.end(), T(0));
    over_rows<S>(
        x, C, b0, b1,
        [&](const S* row, int64_t r, int64_t c) {
          V d = vload(dy + r * C + c);
          V xc = (vload(row + c) - vload(hi + c)) - vload(lo + c);
          vstore(&a[c], vload(&a[c]) + d);
          vstore(&b[c], vload(&b[c]) + d * xc);
        },
        [&](const S* row, int64_t r, int64_t c) {
          T d = sload(dy + r * C + c);
          a[c] += d;
          b[c] += d * ((sload(row + c) - hi[c]) - lo[c]);
        });
    for (int64_t c = 0; c < C; ++c) {
      out[c].dy += double(a[c]);
      out[c].dy_xc += double(b[c]);
    }
  }
}

// Per-channel coefficient vectors for the rows layout, so a SIMD vector of channels loads them.
template <class T>
struct ChannelCoeffs {
  std::vector<T> hi, lo, a, b, d;
  explicit ChannelCoeffs(int64_t C) : hi(C), lo(C), a(C), b(C), d(C) {}
};

// ---------------------------------------------------------------- shared statistics

// Statistics of every channel: by the hot-channel path's pieces in the planar layout, by row
// pieces in the rows layout; merged in piece order.
template <class S>
std::vector<Stats> channel_stats(const S* x, const BnShape& s) {
  const int64_t C = s.channels, M = s.per_channel();
  std::vector<Stats> out(C, Stats{0, 0, 0});
  if (M == 0) return out;
  if (s.inner > 1) {
    const int64_t P = planar_pieces(M, sizeof(S));
    std::vector<Stats> part(C * P);
    parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t c = k / P, p = k % P;
        part[k] = planar_stats(x, s, c, piece_begin(M, p, P), piece_begin(M, p + 1, P));
      }
    });
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p) out[c] = math::chan_merge(out[c], part[c * P + p]);
  } else {
    const int64_t R = s.outer, P = row_pieces(R, C);
    std::vector<Stats> part(C * P);
    parallel_for(P, R * C, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        rows_stats(x, C, piece_begin(R, p, P), piece_begin(R, p + 1, P), &part[p * C]);
    });
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) out[c] = math::chan_merge(out[c], part[p * C + c]);
  }
  return out;
}

// The two layouts the drivers know. Note [empty batch norm]: an input without values per channel
// is rows (0, C), whatever its spatial dims: every loop over it is empty and only the per-channel
// outputs are written. A single channel of a rows-layout input is one contiguous run: planar
// (1, 1, R). Everything else is planar when inner > 1 and rows when inner == 1.
BnShape canonical(BnShape s) {
  if (s.per_channel() == 0) return BnShape{0, s.channels, 1};
  if (s.inner == 1 && s.channels == 1 && s.outer > 1) return BnShape{1, 1, s.outer};
  return s;
}

// ---------------------------------------------------------------- forward

// Saves the channel's statistics, updates its running stats, and returns its coefficients.
template <class T>
math::BnForwardCoeffs<T> forward_channel(const BnForwardArgs& a, int64_t c, const Stats& st) {
  double mean, var;
  if (a.training) {
    mean = st.mean;
    var = math::biased_var(st);
    if (a.running_mean.present()) {
      double rm = a.running_mean.get(c), rv = a.running_var.get(c);
      math::update_running<double>(rm, rv, mean, var, st.count, a.momentum);
      a.running_mean.set(c, rm);
      a.running_var.set(c, rv);
    }
  } else {
    mean = a.running_mean.get(c);
    var = a.running_var.get(c);
  }
  const double invstd = math::inv_std(var, a.eps);
  a.save_mean.set(c, mean);
  a.save_invstd.set(c, invstd);
  return math::bn_forward_coeffs<T>(mean, invstd, a.weight.get(c, 1.0), a.bias.get(c, 0.0));
}

template <class S>
void forward_typed(const BnForwardArgs& a) {
  using T = Cmp<S>;
  using V = VecOf<S>;
  const BnShape s = canonical(a.shape);
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t C = s.channels, M = s.per_channel();
  if (s.inner > 1) {
    const int64_t P = planar_pieces(M, sizeof(S));
    if (P == 1) {  // Note [bn hot channel]
      parallel_for(C, C * M, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          Stats st = a.training ? planar_stats(x, s, c, 0, M) : Stats{0, 0, 0};
          planar_normalize(x, y, s, c, 0, M, forward_channel<T>(a, c, st));
        }
      });
      return;
    }
    std::vector<Stats> st = a.training ? channel_stats(x, s) : std::vector<Stats>(C);
    std::vector<math::BnForwardCoeffs<T>> co(C);
    for (int64_t c = 0; c < C; ++c) co[c] = forward_channel<T>(a, c, st[c]);
    parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t c = k / P, p = k % P;
        planar_normalize(x, y, s, c, piece_begin(M, p, P), piece_begin(M, p + 1, P), co[c]);
      }
    });
    return;
  }
  std::vector<Stats> st = a.training ? channel_stats(x, s) : std::vector<Stats>(C);
  ChannelCoeffs<T> k(C);  // a: scale, b: bias
  for (int64_t c = 0; c < C; ++c) {
    auto co = forward_channel<T>(a, c, st[c]);
    k.hi[c] = co.mean.hi;
    k.lo[c] = co.mean.lo;
    k.a[c] = co.scale;
    k.b[c] = co.bias;
  }
  const int64_t R = s.outer, P = row_pieces(R, C);
  parallel_for(P, R * C, [&](int64_t b, int64_t e) {
    over_rows<S>(
        x, C, piece_begin(R, b, P), piece_begin(R, e, P),
        [&](const S* row, int64_t r, int64_t c) {
          math::BnForwardCoeffs<V> co{{vload(&k.hi[c]), vload(&k.lo[c])}, vload(&k.a[c]), vload(&k.b[c])};
          vstore(y + r * C + c, math::bn_forward(vload(row + c), co));
        },
        [&](const S* row, int64_t r, int64_t c) {
          math::BnForwardCoeffs<T> co{{k.hi[c], k.lo[c]}, k.a[c], k.b[c]};
          sstore(y + r * C + c, math::bn_forward(sload(row + c), co));
        });
  });
}

// ---------------------------------------------------------------- backward

template <class T>
math::BnBackwardCoeffs<T> backward_channel(const BnBackwardArgs& a, int64_t c, double n,
                                           const GradSums& g) {
  const double mean = a.save_mean.get(c), invstd = a.save_invstd.get(c);
  a.dweight.set(c, math::bn_dweight(g.dy_xc, invstd));
  a.dbias.set(c, g.dy);
  return math::bn_backward_coeffs<T>(n, g.dy, g.dy_xc, mean, invstd, a.weight.get(c, 1.0));
}

template <class S>
void backward_typed(const BnBackwardArgs& a) {
  using T = Cmp<S>;
  using V = VecOf<S>;
  const BnShape s = canonical(a.shape);
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  S* dx = static_cast<S*>(a.dx);
  const int64_t C = s.channels, M = s.per_channel();
  if (s.inner > 1) {
    const int64_t P = planar_pieces(M, 2 * sizeof(S));
    if (P == 1) {  // Note [bn hot channel], with dy and x both hot
      parallel_for(C, C * M, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const auto mean = math::split_mean<T>(a.save_mean.get(c));
          GradSums g = planar_grad_sums(dy, x, s, c, 0, M, mean);
          planar_grad_input(dy, x, dx, s, c, 0, M, backward_channel<T>(a, c, double(M), g));
        }
      });
      return;
    }
    std::vector<GradSums> part(C * P);
    parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t c = k / P, p = k % P;
        const auto mean = math::split_mean<T>(a.save_mean.get(c));
        part[k] = planar_grad_sums(dy, x, s, c, piece_begin(M, p, P), piece_begin(M, p + 1, P), mean);
      }
    });
    std::vector<math::BnBackwardCoeffs<T>> co(C);
    for (int64_t c = 0; c < C; ++c) {
      GradSums g;
      for (int64_t p = 0; p < P; ++p) {
        g.dy += part[c * P + p].dy;
        g.dy_xc += part[c * P + p].dy_xc;
      }
      co[c] = backward_channel<T>(a, c, double(M), g);
    }
    parallel_for(C * P, C * M, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t c = k / P, p = k % P;
        planar_grad_input(dy, x, dx, s, c, piece_begin(M, p, P), piece_begin(M, p + 1, P), co[c]);
      }
    });
    return;
  }
  const int64_t R = s.outer, P = row_pieces(R, C);
  ChannelCoeffs<T> k(C);  // a: mean_dy, b: proj, d: scale
  for (int64_t c = 0; c < C; ++c) {
    const auto m = math::split_mean<T>(a.save_mean.get(c));
    k.hi[c] = m.hi;
    k.lo[c] = m.lo;
  }
  std::vector<GradSums> part(C * P);
  parallel_for(P, R * C, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      rows_grad_sums(dy, x, C, piece_begin(R, p, P), piece_begin(R, p + 1, P), k.hi.data(),
                     k.lo.data(), &part[p * C]);
  });
  for (int64_t c = 0; c < C; ++c) {
    GradSums g;
    for (int64_t p = 0; p < P; ++p) {
      g.dy += part[p * C + c].dy;
      g.dy_xc += part[p * C + c].dy_xc;
    }
    auto co = backward_channel<T>(a, c, double(R), g);
    k.a[c] = co.mean_dy;
    k.b[c] = co.proj;
    k.d[c] = co.scale;
  }
  parallel_for(P, R * C, [&](int64_t b, int64_t e) {
    over_rows<S>(
        x, C, piece_begin(R, b, P), piece_begin(R, e, P),
        [&](const S* row, int64_t r, int64_t c) {
          math::BnBackwardCoeffs<V> co{{vload(&k.hi[c]), vload(&k.lo[c])}, vload(&k.a[c]),
                                       vload(&k.b[c]), vload(&k.d[c])};
          vstore(dx + r * C + c, math::bn_backward(vload(dy + r * C + c), vload(row + c), co));
        },
        [&](const S* row, int64_t r, int64_t c) {
          math::BnBackwardCoeffs<T> co{{k.hi[c], k.lo[c]}, k.a[c], k.b[c], k.d[c]};
          sstore(dx + r * C + c, math::bn_backward(sload(dy + r * C + c), sload(row + c), co));
        });
  });
}

// ---------------------------------------------------------------- statistics, merge, running

template <class S>
void stats_typed(const BnStatsArgs& a) {
  const BnShape s = canonical(a.shape);
  std::vector<Stats> st = channel_stats(static_cast<const S*>(a.x), s);
  for (int64_t c = 0; c < s.channels; ++c) {
    a.mean.set(c, st[c].mean);
    a.var.set(c, math::biased_var(st[c]));
  }
}

template <template <class> class Fn, class Args>
void by_dtype(DType d, const Args& a) {
  switch (d) {
    case DType::f32: return Fn<float>::run(a);
    case DType::f64: return Fn<double>::run(a);
    case DType::f16: return Fn<Half>::run(a);
    case DType::bf16: return Fn<BFloat16>::run(a);
  }
}
template <class S> struct ForwardFn { static void run(const BnForwardArgs& a) { forward_typed<S>(a); } };
template <class S> struct BackwardFn { static void run(const BnBackwardArgs& a) { backward_typed<S>(a); } };
template <class S> struct StatsFn { static void run(const BnStatsArgs& a) { stats_typed<S>(a); } };

void forward(const BnForwardArgs& a) { by_dtype<ForwardFn>(a.dtype, a); }
void backward(const BnBackwardArgs& a) { by_dtype<BackwardFn>(a.dtype, a); }
void stats(const BnStatsArgs& a) { by_dtype<StatsFn>(a.dtype, a); }

void merge(const BnMergeArgs& a) {
  const int64_t C = a.channels;
  for (int64_t c = 0; c < C; ++c) {
    Stats st{0, 0, 0};
    for (size_t k = 0; k < a.counts.size(); ++k) {
      const double n = a.counts[k];
      st = math::chan_merge(st, Stats{n, a.means.get(int64_t(k) * C + c),
                                      a.vars.get(int64_t(k) * C + c) * n});
    }
    a.mean.set(c, st.mean);
    a.var.set(c, math::biased_var(st));
  }
}

void update_running(const BnRunningArgs& a) {
  for (int64_t c = 0; c < a.channels; ++c) {
    double rm = a.running_mean.get(c), rv = a.running_var.get(c);
    math::update_running<double>(rm, rv, a.mean.get(c), a.var.get(c), a.count, a.momentum);
    a.running_mean.set(c, rm);
    a.running_var.set(c, rv);
  }
}

}  // namespace

const BnKernels& bn_kernels() {
  static const BnKernels k = {FT_STR(FT_ISA), &forward, &backward, &stats, &merge, &update_running};
  return k;
}

}  // namespace ft::cpu::FT_ISA
