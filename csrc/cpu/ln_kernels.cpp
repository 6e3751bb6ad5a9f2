// Layer, RMS, group and instance norm CPU drivers, compiled once per ISA. Their statistics are
// batch norm's (csrc/cpu/norm_stats.h) on the planar view of Note [planar view]: a layer-norm row
// is channel r of (1, rows, cols); a group of NCHW input is channel n * G + g of
// (1, N * G, C / G * HW), normalized as the channels n * C + c of (1, N * C, HW); channels-last
// input is N stacked (HW, C) blocks of the rows layout whose channels merge into groups.
// The math is csrc/math/batch_norm.h and csrc/math/layer_norm.h.
#include "cpu/vec.h"

#include "cpu/ln_kernels.h"
#include "cpu/norm_stats.h"

#define FT_STR_(x) #x
#define FT_STR(x) FT_STR_(x)

namespace ft::cpu::FT_ISA {
namespace {

// Layer norm's weight and bias as compute-type rows, 1 and 0 where absent: read by SIMD vectors.
template <class T>
std::vector<T> row_of(const ChannelArray& a, int64_t n, double absent) {
  std::vector<T> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = T(a.get(i, absent));
  return out;
}

// ---------------------------------------------------------------- layer and RMS norm

template <class T>
struct RowCoeffs {
  math::SplitMean<T> mean;
  T rstd;
};

template <class S, class T>
void ln_normalize(const S* x, S* y, int64_t j0, int64_t j1, const RowCoeffs<T>& co, const T* w,
                  const T* b) {
  over_elementwise<lanes<S>()>(
      j1 - j0,
      [&](int64_t i) {
        i += j0;
        vstore(y + i, math::ln_forward(vload(x + i), co.mean, co.rstd, vload(w + i), vload(b + i)));
      },
      [&](int64_t i) {
        i += j0;
        sstore(y + i, math::ln_forward(sload(x + i), co.mean, co.rstd, w[i], b[i]));
      });
}

template <class S>
void ln_forward_typed(const LnForwardArgs& a) {
  using T = Cmp<S>;
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t R = a.rows, H = a.cols;
  const BnShape s{1, R, H};  // Note [planar view]
  const std::vector<T> w = row_of<T>(a.weight, H, 1.0), b = row_of<T>(a.bias, H, 0.0);
  std::vector<RowCoeffs<T>> co(R);
  planar_driver<Stats>(
      R, H, sizeof(S), [&](int64_t r, int64_t j0, int64_t j1) { return planar_stats(x, s, r, j0, j1); },
      [&](int64_t r, const Stats& st) {
        const double mean = a.rms ? 0.0 : st.mean;
        const double rstd = math::inv_std(a.rms ? math::mean_square(st) : math::biased_var(st), a.eps);
        a.mean.set(r, mean);
        a.rstd.set(r, rstd);
        co[r] = {math::split_mean<T>(mean), T(rstd)};
      },
      [&](int64_t r, int64_t j0, int64_t j1) {
        ln_normalize(x + r * H, y + r * H, j0, j1, co[r], w.data(), b.data());
      });
}

// dweight += dy * xhat and dbias += dy over one row, in float lanes the caller flushes.
template <class S, class T>
void ln_param_grads(const S* dy, const S* x, int64_t H, const RowCoeffs<T>& co, T* dw, T* db) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  int64_t i = 0;
  for (; i + W <= H; i += W) {
    const V d = vload(dy + i);
    vstore(dw + i, vload(dw + i) + d * (math::centered(vload(x + i), co.mean) * co.rstd));
    if (db) vstore(db + i, vload(db + i) + d);
  }
  for (; i < H; ++i) {
    const T d = sload(dy + i);
    dw[i] += d * (math::centered(sload(x + i), co.mean) * co.rstd);
    if (db) db[i] += d;
  }
}

// Note [layer norm backward]: tasks are row pieces fixed by the shape. A row's sums (of
// g = w * dy and g * (x - mean): Note [norm grad]), its dx and its share of dweight / dbias are
// computed while the row is in cache; a piece sums dweight / dbias in float lanes flushed into
// doubles every kRowBlock rows, and pieces merge in order. The pieces' column sums are capped at
// kColumnValues doubles, so a wide row gets fewer, longer pieces. Below kSmallPieces pieces of
// the rows layout's size, the pieces shrink down to kSmallPieceValues values, so an activation of
// a few hundred thousand values (a layer of 256 tokens x 768) is still shared among threads; the
// cut depends on the shape alone, so the results do not depend on the thread count.
constexpr int64_t kColumnValues = 1 << 20;
constexpr int64_t kSmallPieceValues = 1 << 15;
constexpr int64_t kSmallPieces = 8;

int64_t ln_backward_pieces(int64_t R, int64_t H) {
  const int64_t small = std::min(kSmallPieces, (R * H + kSmallPieceValues - 1) / kSmallPieceValues);
  const int64_t p = std::min(R, std::max(row_pieces(R, H), small));
  return std::max<int64_t>(1, std::min(p, kColumnValues / H));
}

template <class S>
void ln_backward_typed(const LnBackwardArgs& a) {
  using T = Cmp<S>;
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  S* dx = static_cast<S*>(a.dx);
  const int64_t R = a.rows, H = a.cols;
  const BnShape s{1, R, H};
  const std::vector<T> w = row_of<T>(a.weight, H, 1.0);
  const bool params = a.dweight.present(), bias = a.dbias.present();
  const int64_t P = ln_backward_pieces(R, H);
  std::vector<double> col_w(params ? P * H : 0), col_b(bias ? P * H : 0);
  parallel_for(P, R * H, [&](int64_t pb, int64_t pe) {
    std::vector<T> fw(params ? H : 0), fb(bias ? H : 0);
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t r0 = piece_begin(R, p, P), r1 = piece_begin(R, p + 1, P);
      for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
        std::fill(fw.begin(), fw.end(), T(0));
        std::fill(fb.begin(), fb.end(), T(0));
        for (int64_t r = rb; r < std::min(rb + kRowBlock, r1); ++r) {
          const double mean = a.rms ? 0.0 : a.mean.get(r), rstd = a.rstd.get(r);
          const RowCoeffs<T> rc{math::split_mean<T>(mean), T(rstd)};
          const GradSums g = planar_grad_sums<true>(dy, x, s, r, 0, H, rc.mean, w.data());
          const auto co = math::norm_grad_coeffs<T>(double(H), a.rms ? 0.0 : g.dy, g.dy_xc, mean, rstd, 1.0);
          planar_grad_input<true>(dy, x, dx, s, r, 0, H, co, w.data());
          if (params) ln_param_grads(dy + r * H, x + r * H, H, rc, fw.data(), bias ? fb.data() : nullptr);
        }
        for (int64_t i = 0; params && i < H; ++i) col_w[p * H + i] += double(fw[i]);
        for (int64_t i = 0; bias && i < H; ++i) col_b[p * H + i] += double(fb[i]);
      }
    }
  });
  if (!params) return;
  // Piece by piece over whole rows of column sums: every column still adds its pieces in piece
  // order, but the adds of one piece are independent (a column at a time, the loop waited on
  // each add's latency: 25 us at 32 pieces of 512 columns).
  std::vector<double> tw(col_w.begin(), col_w.begin() + H), tb(bias ? H : 0);
  if (bias) std::copy(col_b.begin(), col_b.begin() + H, tb.begin());
  for (int64_t p = 1; p < P; ++p) {
    for (int64_t i = 0; i < H; ++i) tw[i] += col_w[p * H + i];
    for (int64_t i = 0; bias && i < H; ++i) tb[i] += col_b[p * H + i];
  }
  for (int64_t i = 0; i < H; ++i) {
    a.dweight.set(i, tw[i]);
    if (bias) a.dbias.set(i, tb[i]);
  }
}

// ---------------------------------------------------------------- group and instance norm

// Calls f(c, lo, hi) for each channel c = first + i of a group (channels of hw values, one after
// the other, the group's first channel `first` of the view (1, N * C, hw)) that values [j0, j1)
// of the group touch, with the channel's own value range [lo, hi): values c * hw + [lo, hi).
template <class F>
void for_group_channels(int64_t first, int64_t hw, int64_t j0, int64_t j1, F&& f) {
  for (int64_t i = j0 / hw; i * hw < j1; ++i)
    f(first + i, std::max(j0, i * hw) - i * hw, std::min(j1, (i + 1) * hw) - i * hw);
}

// A channel vector read once into doubles: get(c, absent) as ChannelArray's, without a dtype
// switch per channel and sample (5% of a channels-last group norm forward; the backward's
// coefficients read the weight twice per channel and sample).
struct ChannelValues {
  std::vector<double> v;
  ChannelValues(const ChannelArray& a, int64_t n, double absent) : v(n) { a.get_run(0, n, v.data(), absent); }
  double get(int64_t c, double) const { return v[c]; }
};

// Forward bookkeeping of one group k = n * G + g: its mean and rstd (from its statistics, or
// instance norm's running statistics), saved; instance statistics kept for the running update.
struct GroupForward {
  const GnForwardArgs& a;
  std::vector<double> inst;  // use_input_stats with running stats: Note [group sums]
  const ChannelValues weight, bias;

  explicit GroupForward(const GnForwardArgs& args)
      : a(args), weight(args.weight, args.shape.c, 1.0), bias(args.bias, args.shape.c, 0.0) {
    if (a.use_input_stats && a.running_mean.present()) inst.resize(2 * a.shape.n * a.shape.groups);
  }
  // Calls set(c, coefficients) for each channel c of the group.
  template <class T, class Set>
  void finish(int64_t k, const Stats& st, Set&& set) {
    const GnShape& g = a.shape;
    double mean, var;
    if (a.use_input_stats) {
      mean = st.mean;
      var = math::biased_var(st);
      if (!inst.empty()) {
        inst[2 * k] = mean;
        inst[2 * k + 1] = var;
      }
    } else {  // instance norm (G == C) normalizing with its running statistics
      mean = a.running_mean.get(k % g.c);
      var = a.running_var.get(k % g.c);
    }
    const double rstd = math::inv_std(var, a.eps);
    a.mean.set(k, mean);
    a.rstd.set(k, rstd);
    const int64_t cg = g.per_group_channels(), c0 = (k % g.groups) * cg;
    for (int64_t c = c0; c < c0 + cg; ++c)
      set(c, math::bn_forward_coeffs<T>(mean, rstd, weight.v[c], bias.v[c]));
  }
  // Instance norm's running statistics (Note [group sums]).
  void update_running() const {
    for (int64_t c = 0; !inst.empty() && c < a.shape.c; ++c) math::instance_running_update(a, inst.data(), c);
  }
};

// Note [short channels]: NCHW group norm over small maps (7x7 to 32x32) has channels of a few
// vectors each, and a channel at a time its backward spent more on each channel's horizontal
// sums, scalar tail and group bookkeeping than on its values: at (8, 2048, 7, 7) twice torch's
// time. Where a channel is at least a vector and at most a float block (W <= HW <= kBlock) and a
// group fits kHotBytes, tasks take whole groups, a chunk of kShortChunkValues values at a time:
// the sums of a vector's worth of channels reduce together (Note [transposed lane sums]) into
// the saved sums, each channel's last vector overlapping (Note [overlapping last vector]), then
// the chunk's coefficients, then its dx while the chunk is in cache. The forward over groups of
// few values takes chunks the same way (gn_forward_short). A channel's sums are its own,
// whichever chunk or task it falls in, so results stay the same for any thread count.
constexpr int64_t kShortChunkValues = 1 << 14;

bool short_channels(const GnShape& g, int64_t lanes, int64_t bytes_per_value) {
  return !g.channels_last && g.hw >= lanes && g.hw <= kBlock &&
         planar_pieces(g.per_group(), bytes_per_value) == 1;
}

// Two sums per channel c of [c0, c1) into sums[2 (c - c0)] and sums[2 (c - c0) + 1] (Note
// [short channels]): add(c, i, keep, a, b) adds the terms of values i .. i + W of channel c, each
// through keep, to the vectors a and b. The sums of a vector's worth of channels reduce together
// (Note [transposed lane sums]); a channel's last vector overlaps the one before it, keep zeroing
// the lanes already counted.
template <class S, class Add>
void short_channel_sums(int64_t hw, int64_t c0, int64_t c1, Add&& add, double* sums) {
  using V = VecOf<S>;
  constexpr int64_t W = lanes<S>();
  const int64_t tail = hw % W;
  const auto all = [](V v) { return v; };
  const auto last = [tail](V v) { return last_lanes(v, tail); };
  V first[W], second[W];
  for (int64_t cb = c0; cb < c1; cb += W) {
    const int64_t nb = std::min(W, c1 - cb);
    for (int64_t j = 0; j < W; ++j) {
      V a{}, b{};
      if (j < nb) {
        int64_t i = 0;
        for (; i + W <= hw; i += W) add(cb + j, i, all, a, b);
        if (tail) add(cb + j, hw - W, last, a, b);
      }
      first[j] = a;
      second[j] = b;
    }
    const V ta = lane_sums(first), tb = lane_sums(second);
    for (int64_t j = 0; j < nb; ++j) {
      sums[2 * (cb + j - c0)] = double(ta[j]);
      sums[2 * (cb + j - c0) + 1] = double(tb[j]);
    }
  }
}

// The forward of NCHW groups of short channels (Note [short channels]), a chunk of groups at a
// time: each channel's sum, the group's shift (its mean, as a block's in planar_stats), each
// channel's sums around it, the group's statistics and coefficients, then the chunk's y. Only
// for groups of at most kShortGroupValues: a group a channel at a time cost more in its own
// bookkeeping than in its values (instance norm over (8, 256, 7, 7): 64 us against torch's 36,
// now 35), while larger groups go faster through planar_stats' blocks, which stay in L1
// ((8, 2048, 7, 7), groups of 3136 values: 82 us that way, 115 this way).
constexpr int64_t kShortGroupValues = 512;
template <class S>
void gn_forward_short(const GnForwardArgs& a, GroupForward& gf) {
  using T = Cmp<S>;
  const GnShape& g = a.shape;
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t K = g.n * g.groups, cg = g.per_group_channels(), HW = g.hw, M = g.per_group();
  const int64_t per_chunk = std::max<int64_t>(1, kShortChunkValues / M);
  parallel_for(K, K * M, [&](int64_t kb, int64_t ke) {
    std::vector<double> sums(2 * per_chunk * cg);
    std::vector<T> shift(per_chunk * cg);  // per channel: its group's
    std::vector<math::BnForwardCoeffs<T>> co(per_chunk * cg);
    for (int64_t k0 = kb; k0 < ke; k0 += per_chunk) {
      const int64_t k1 = std::min(ke, k0 + per_chunk), c0 = k0 * cg, c1 = k1 * cg;
      short_channel_sums<S>(
          HW, c0, c1, [&](int64_t c, int64_t i, auto keep, auto& sum, auto&) { sum = sum + keep(vload(x + c * HW + i)); },
          sums.data());
      for (int64_t k = k0; k < k1; ++k) {
        double total = 0;
        for (int64_t c = k * cg; c < (k + 1) * cg; ++c) total += sums[2 * (c - c0)];
        std::fill_n(&shift[(k - k0) * cg], cg, T(total / double(M)));
      }
      short_channel_sums<S>(
          HW, c0, c1,
          [&](int64_t c, int64_t i, auto keep, auto& s1, auto& s2) {
            const auto d = vload(x + c * HW + i) - shift[c - c0];
            s1 = s1 + keep(d);
            s2 = s2 + keep(d * d);
          },
          sums.data());
      for (int64_t k = k0; k < k1; ++k) {
        double s1 = 0, s2 = 0;
        for (int64_t c = k * cg; c < (k + 1) * cg; ++c) {
          s1 += sums[2 * (c - c0)];
          s2 += sums[2 * (c - c0) + 1];
        }
        const Stats st = math::from_shifted_sums<double>(double(M), double(shift[(k - k0) * cg]), s1, s2);
        const int64_t first = (k % g.groups) * cg;  // the group's first channel of its sample
        gf.finish<T>(k, st, [&](int64_t c, const auto& k_co) { co[(k - k0) * cg + c - first] = k_co; });
      }
      for (int64_t c = c0; c < c1; ++c) run_normalize(x + c * HW, y + c * HW, HW, co[c - c0]);
    }
  });
}

template <class S>
void gn_forward_typed(const GnForwardArgs& a) {
  using T = Cmp<S>;
  const GnShape& g = a.shape;
  const S* x = static_cast<const S*>(a.x);
  S* y = static_cast<S*>(a.y);
  const int64_t N = g.n, C = g.c, G = g.groups, cg = g.per_group_channels(), HW = g.hw;
  GroupForward gf(a);
  if (a.use_input_stats && g.per_group() <= kShortGroupValues && short_channels(g, lanes<S>(), sizeof(S))) {
    gn_forward_short<S>(a, gf);
  } else if (!g.channels_last || HW == 1) {
    const BnShape stat{1, N * G, g.per_group()};
    std::vector<math::BnForwardCoeffs<T>> co(N * C);
    planar_driver<Stats>(
        N * G, g.per_group(), sizeof(S),
        [&](int64_t k, int64_t j0, int64_t j1) {
          return a.use_input_stats ? planar_stats(x, stat, k, j0, j1) : Stats{0, 0, 0};
        },
        [&](int64_t k, const Stats& st) {
          gf.finish<T>(k, st, [&](int64_t c, const auto& k_co) { co[k / G * C + c] = k_co; });
        },
        [&](int64_t k, int64_t j0, int64_t j1) {
          for_group_channels(k * cg, HW, j0, j1, [&](int64_t c, int64_t lo, int64_t hi) {
            run_normalize(x + c * HW + lo, y + c * HW + lo, hi - lo, co[c]);
          });
        });
  } else {  // channels last: per sample, the rows layout (HW, C)
    std::vector<ChannelCoeffs<T>> co(N, ChannelCoeffs<T>(C));  // a: scale, b: bias
    rows_driver<Stats>(
        N, HW, C,
        [&](int64_t n, int64_t r0, int64_t r1, bool hot, Stats* out) {
          if (a.use_input_stats) rows_stats(x + n * HW * C, C, r0, r1, hot, out);
        },
        [&](int64_t n, const Stats* st) {
          for (int64_t gi = 0; gi < G; ++gi) {
            const Stats group = math::merge_all(st + gi * cg, cg);
            gf.finish<T>(n * G + gi, group, [&](int64_t c, const auto& k_co) { co[n].set_forward(c, k_co); });
          }
        },
        [&](int64_t n, int64_t r0, int64_t r1, bool hot) {
          rows_normalize(x + n * HW * C, y + n * HW * C, C, r0, r1, hot, co[n]);
        });
  }
  gf.update_running();
}

// Backward of group k from its channels' sums of dy and dy * (x - mean) (sums[0..cg)): keeps
// them for dweight / dbias (Note [group sums]) and calls set(c, coefficients) per channel.
template <class T, class Set>
void group_grad(const GnBackwardArgs& a, const ChannelValues& weight, int64_t k, const GradSums* sums,
                std::vector<double>& kept, Set&& set) {
  const GnShape& g = a.shape;
  const int64_t cg = g.per_group_channels(), first = k / g.groups * g.c + k % g.groups * cg;
  for (int64_t i = 0; i < cg; ++i) {
    kept[2 * (first + i)] = sums[i].dy;
    kept[2 * (first + i) + 1] = sums[i].dy_xc;
  }
  math::group_grad_coeffs<T>(a, weight, kept.data(), k, [&](int64_t i, const auto& co) { set(i % g.c, co); });
}

using ChannelSums = std::vector<GradSums>;  // a group's, one per channel

template <class S>
void gn_backward_short(const GnBackwardArgs& a, const ChannelValues& weight, std::vector<double>& kept) {
  using T = Cmp<S>;
  const GnShape& g = a.shape;
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  S* dx = static_cast<S*>(a.dx);
  const int64_t K = g.n * g.groups, cg = g.per_group_channels(), HW = g.hw, M = g.per_group();
  const int64_t per_chunk = std::max<int64_t>(1, kShortChunkValues / M);
  parallel_for(K, K * M, [&](int64_t kb, int64_t ke) {
    // The chunk's channels: their group means and input-gradient coefficients.
    std::vector<math::SplitMean<T>> means(per_chunk * cg);
    std::vector<math::NormGradCoeffs<T>> co(per_chunk * cg);
    for (int64_t k0 = kb; k0 < ke; k0 += per_chunk) {
      const int64_t k1 = std::min(ke, k0 + per_chunk);
      for (int64_t k = k0; k < k1; ++k)
        std::fill_n(&means[(k - k0) * cg], cg, math::split_mean<T>(a.mean.get(k)));
      // Sums of dy and dy * (x - mean), mean the channel's group's.
      short_channel_sums<S>(
          HW, k0 * cg, k1 * cg,
          [&](int64_t c, int64_t i, auto keep, auto& sum_dy, auto& sum_dy_xc) {
            const auto g = vload(dy + c * HW + i);
            sum_dy = sum_dy + keep(g);
            sum_dy_xc = sum_dy_xc + keep(g * math::centered(vload(x + c * HW + i), means[c - k0 * cg]));
          },
          kept.data() + 2 * k0 * cg);
      for (int64_t k = k0; k < k1; ++k)
        math::group_grad_coeffs<T>(a, weight, kept.data(), k, [&](int64_t c, const auto& k_co) { co[c - k0 * cg] = k_co; });
      for (int64_t c = k0 * cg; c < k1 * cg; ++c)
        run_grad_input(dy + c * HW, x + c * HW, dx + c * HW, HW, co[c - k0 * cg]);
    }
  });
}

// dweight and dbias of every channel (math::group_param_grads, each channel's samples in order),
// samples outer: a channel at a time read each sample's rstd through its dtype switch and strode
// over the sums, 20 us of a 140 us backward over (8, 2048, 7, 7).
void param_grads(const GnBackwardArgs& a, const double* sums) {
  const GnShape& g = a.shape;
  const int64_t cg = g.per_group_channels();
  std::vector<double> dw(g.c, 0.0), db(g.c, 0.0);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const double rstd = a.rstd.get(n * g.groups + gi, 0.0);
      for (int64_t c = gi * cg; c < (gi + 1) * cg; ++c) math::add_param_terms(sums, g.c, n, c, rstd, dw[c], db[c]);
    }
  a.dweight.set_run(0, g.c, dw.data());
  a.dbias.set_run(0, g.c, db.data());
}

template <class S>
void gn_backward_typed(const GnBackwardArgs& a) {
  using T = Cmp<S>;
  const GnShape& g = a.shape;
  const S* dy = static_cast<const S*>(a.dy);
  const S* x = static_cast<const S*>(a.x);
  S* dx = static_cast<S*>(a.dx);
  const int64_t N = g.n, C = g.c, G = g.groups, cg = g.per_group_channels(), HW = g.hw;
  std::vector<double> kept(2 * N * C);
  const ChannelValues weight(a.weight, C, 1.0);
  if (short_channels(g, lanes<S>(), 2 * sizeof(S))) {
    gn_backward_short<S>(a, weight, kept);
  } else if (!g.channels_last || HW == 1) {
    const BnShape stat{1, N * G, g.per_group()}, norm{1, N * C, HW};
    std::vector<math::NormGradCoeffs<T>> co(N * C);
    planar_driver<ChannelSums>(
        N * G, g.per_group(), 2 * sizeof(S),
        [&](int64_t k, int64_t j0, int64_t j1) {
          ChannelSums out(cg);
          const auto mean = math::split_mean<T>(a.mean.get(k));
          for_group_channels(k * cg, HW, j0, j1, [&](int64_t c, int64_t lo, int64_t hi) {
            out[c - k * cg] = planar_grad_sums(dy, x, norm, c, lo, hi, mean);
          });
          return out;
        },
        [&](int64_t k, const ChannelSums& sums) {
          group_grad<T>(a, weight, k, sums.data(), kept, [&](int64_t c, const auto& k_co) { co[k / G * C + c] = k_co; });
        },
        [&](int64_t k, int64_t j0, int64_t j1) {
          for_group_channels(k * cg, HW, j0, j1, [&](int64_t c, int64_t lo, int64_t hi) {
            run_grad_input(dy + c * HW + lo, x + c * HW + lo, dx + c * HW + lo, hi - lo, co[c]);
          });
        });
  } else {
    std::vector<ChannelCoeffs<T>> co(N, ChannelCoeffs<T>(C));  // hi, lo: the group's mean
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) co[n].set_mean(c, math::split_mean<T>(a.mean.get(n * G + c / cg)));
    rows_driver<GradSums>(
        N, HW, C,
        [&](int64_t n, int64_t r0, int64_t r1, bool hot, GradSums* out) {
          rows_grad_sums(dy + n * HW * C, x + n * HW * C, C, r0, r1, hot, co[n].hi.data(), co[n].lo.data(), out);
        },
        [&](int64_t n, const GradSums* sums) {
          for (int64_t gi = 0; gi < G; ++gi)
            group_grad<T>(a, weight, n * G + gi, sums + gi * cg, kept,
                              [&](int64_t c, const auto& k_co) { co[n].set_grad(c, k_co); });
        },
        [&](int64_t n, int64_t r0, int64_t r1, bool hot) {
          const int64_t off = n * HW * C;
          rows_grad_input<math::NormGradCoeffs>(dy + off, x + off, dx + off, C, r0, r1, hot, co[n]);
        });
  }
  if (a.dweight.present()) param_grads(a, kept.data());
}

template <class S> struct LnForwardFn { static void run(const LnForwardArgs& a) { ln_forward_typed<S>(a); } };
template <class S> struct LnBackwardFn { static void run(const LnBackwardArgs& a) { ln_backward_typed<S>(a); } };
template <class S> struct GnForwardFn { static void run(const GnForwardArgs& a) { gn_forward_typed<S>(a); } };
template <class S> struct GnBackwardFn { static void run(const GnBackwardArgs& a) { gn_backward_typed<S>(a); } };

// Empty inputs: no rows (samples) means nothing to normalize; parameter grads are sums of nothing.
void layer_forward(const LnForwardArgs& a) {
  if (a.rows > 0) by_dtype<LnForwardFn>(a.dtype, a);
}
void layer_backward(const LnBackwardArgs& a) { by_dtype<LnBackwardFn>(a.dtype, a); }
void group_forward(const GnForwardArgs& a) {
  if (a.shape.n > 0) by_dtype<GnForwardFn>(a.dtype, a);
}
void group_backward(const GnBackwardArgs& a) { by_dtype<GnBackwardFn>(a.dtype, a); }

const LnKernels& ln_kernels() {
  static const LnKernels k = {FT_STR(FT_ISA), &layer_forward, &layer_backward, &group_forward,
                              &group_backward};
  return k;
}
const bool registered = IsaTables<LnKernels>::add(&ln_kernels);  // Note [isa tables]

}  // namespace
}  // namespace ft::cpu::FT_ISA
