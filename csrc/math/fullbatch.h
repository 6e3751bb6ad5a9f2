// The elementwise passes of the full-batch methods (L-BFGS, nonlinear conjugate gradient, their
// line-search trial points) and the schedule of the L-BFGS two-loop recursion, written once for
// CPU SIMD lanes, CPU scalars and CUDA threads.
//
// A pass visits every element of every tensor of a call once.  Per tensor it sees up to kMaxSlots
// arrays ("slots"); each pass struct says
//   kRead, kWrite   the slot masks it loads and stores;
//   kParamSlots     the slots stored in the param dtype (params and user grads of float16/bfloat16
//                   params); every other slot is in the compute dtype (Note [compute type]);
//   kSums, kMax     how many dot products it returns, and whether it returns max |v[0]|;
//   Coeffs<T>       its scalars in the compute type T;
//   element(c, v, sum, mx)  the math on values V (a scalar T or a SIMD vector of T): v[] holds the
//                   loaded slots and receives the stored ones; sum[k] += the k-th dot's term.
// Note [pass reductions]: backends accumulate the sums in the compute type over blocks of a fixed
// number of elements, then in double, block after block and chunk after chunk in index order:
// results are bitwise identical for any thread count (Note [fixed chunking]).
#pragma once
#include <cstdint>
#include "core/macros.h"
#include "math/scalar_ops.h"

namespace ft::math::fb {

constexpr int kMaxSlots = 5;
constexpr int kMaxSums = 3;

template <class V> FT_HD FT_INLINE void take_abs_max(V& mx, const V& v) { mx = ft_max(mx, ft_abs(v)); }

// The L-BFGS curvature pair of one iteration, written into a free history slot:
//   y = g - g_prev;  s = t * d;  g_prev = g;  d = q = -g;   sums: y's, y'y, s'q.
// torch.optim.LBFGS: `y = flat_grad.sub(prev_flat_grad); s = d.mul(t); ys = y.dot(s)`,
// H_diag = ys / y.dot(y); its `prev_flat_grad.copy_(flat_grad)` is folded in (nothing reads
// g_prev between the two).  Note [first pass folded]: the two-loop recursion's first pass
// (TwoLoopKind::First: q = -g, then s_{k-1}'q) is folded in too, for when this pair is the
// newest one the recursion reads (it is unless y's is too small to keep it): d = -g is written
// here, in the same bits as that pass's (-1) * g, and sum 2 is its dot, the same products added
// in the same order, so two_loop given it skips that pass (one read of g and s and one write of
// d fewer) and computes the same direction bit for bit.  Slots: 0 g, 1 g_prev, 2 d, 3 s, 4 y.
struct History {
  static constexpr int kRead = 0b00111, kWrite = 0b11110, kParamSlots = 0;
  static constexpr int kSums = 3;
  static constexpr bool kMax = false;
  template <class T> struct Coeffs { T t; };
  template <class V, class T>
  FT_HD FT_INLINE static void element(const Coeffs<T>& c, V* v, V* sum, V&) {
    const V y = v[0] - v[1];
    const V s = v[2] * c.t;
    const V q = T(-1) * v[0];
    v[1] = v[0];
    v[2] = q;
    v[3] = s;
    v[4] = y;
    sum[0] = sum[0] + y * s;
    sum[1] = sum[1] + y * y;
    sum[2] = sum[2] + s * q;
  }
};

// v = (keep ? a*v + c*x : c*x) * h, then the dot w'v and max |v|; with kCopy also x is copied
// into slot 3.  Every step of the two-loop recursion is one of these (TwoLoopStep below), and so
// is the conjugate-gradient direction d = beta*d - g (copying g into g_prev).
// Slots: 0 v, 1 x, 2 w, 3 copy of x.
template <bool kKeep, bool kCopy>
struct Combine {
  static constexpr int kRead = 0b00110 | (kKeep ? 1 : 0), kWrite = 0b00001 | (kCopy ? 0b01000 : 0);
  static constexpr int kParamSlots = 0;
  static constexpr int kSums = 1;
  static constexpr bool kMax = true;
  template <class T> struct Coeffs { T a, c, h; bool scale; };
  template <class V, class T>
  FT_HD FT_INLINE static void element(const Coeffs<T>& k, V* v, V* sum, V& mx) {
    V r;
    if constexpr (kKeep) r = k.a * v[0] + k.c * v[1];
    else r = k.c * v[1];
    if (k.scale) r = r * k.h;  // a uniform branch: h != 1 only at the recursion's turn
    if constexpr (kCopy) v[3] = v[1];
    v[0] = r;
    sum[0] = sum[0] + v[2] * r;
    take_abs_max(mx, r);
  }
};

// Up to three dot products of x with other lists in one pass: sum[j] = x'v[j+1].  (The
// conjugate-gradient coefficients g'g, g'g_prev, g'd.)  Slots: 0 x, 1..n the others.
template <int kN>
struct Dots {
  static constexpr int kRead = (1 << (kN + 1)) - 1, kWrite = 0, kParamSlots = 0;
  static constexpr int kSums = kN;
  static constexpr bool kMax = false;
  template <class T> struct Coeffs { int unused; };
  template <class V, class T>
  FT_HD FT_INLINE static void element(const Coeffs<T>&, V* v, V* sum, V&) {
    for (int j = 0; j < kN; ++j) sum[j] = sum[j] + v[0] * v[j + 1];
  }
};

// A gradient widened into our own buffer: out = g (from the param dtype), with kDot also g'd.
// A line-search trial's `flat_grad = cat(grads); gtd_new = g_new.dot(d)` in torch.optim.LBFGS.
// Slots: 0 g, 1 out, 2 d.
template <bool kDot>
struct GradCopy {
  static constexpr int kRead = kDot ? 0b00101 : 0b00001, kWrite = 0b00010, kParamSlots = 0b00001;
  static constexpr int kSums = kDot ? 1 : 0;
  static constexpr bool kMax = false;
  template <class T> struct Coeffs { int unused; };
  template <class V, class T>
  FT_HD FT_INLINE static void element(const Coeffs<T>&, V* v, V* sum, V&) {
    v[1] = v[0];
    if constexpr (kDot) sum[0] = sum[0] + v[0] * v[2];
  }
};

// Moves the params along d.  Note [line-search base]: torch evaluates a trial point as
// `p += t*d; closure(); p = x` and ends with `p += t*d`; we keep x (the base) and write
// p = x + t*d for every trial, which is the same arithmetic without the restoring pass.
enum class StepMode : int {
  Add = 0,       // p = p + t*d
  SaveBase = 1,  // x = p; p = x + t*d   (the first move from a base)
  FromBase = 2,  // p = x + t*d
  Restore = 3,   // p = x                (a failed step puts the params back)
};

// Slots: 0 p (param dtype), 1 d, 2 x.
template <StepMode kMode>
struct ParamStep {
  static constexpr int kRead = kMode == StepMode::Add        ? 0b011
                               : kMode == StepMode::SaveBase ? 0b011
                               : kMode == StepMode::FromBase ? 0b110
                                                             : 0b100;
  static constexpr int kWrite = kMode == StepMode::SaveBase ? 0b101 : 0b001;
  static constexpr int kParamSlots = 0b001;
  static constexpr int kSums = 0;
  static constexpr bool kMax = false;
  template <class T> struct Coeffs { T t; };
  template <class V, class T>
  FT_HD FT_INLINE static void element(const Coeffs<T>& c, V* v, V*, V&) {
    if constexpr (kMode == StepMode::SaveBase) v[2] = v[0];
    if constexpr (kMode == StepMode::Add) v[0] = v[0] + c.t * v[1];
    else if constexpr (kMode == StepMode::Restore) v[0] = v[2];
    else v[0] = v[2] + c.t * v[1];
  }
};

// ---- the two-loop recursion (Nocedal & Wright Algorithm 7.4), as torch.optim.LBFGS orders it:
//   q = -g
//   for i = k-1 .. 0:  al_i = ro_i * s_i'q;  q -= al_i * y_i
//   r = H * q
//   for i = 0 .. k-1:  be_i = ro_i * y_i'r;  r += (al_i - be_i) * s_i
//   d = r
// Note [fused two-loop]: a dot product needs the whole of the vector that the previous update
// wrote, so each update pass also takes the dot that the next coefficient needs: the pass that
// applies entry i computes s_{i-1}'q (first loop) or y_{i+1}'r (second loop).  One pass per
// history entry and loop, 2k + 1 in all, each reading q, two history rows and writing q; the
// last also returns g'd (the line search's directional derivative) and max |d|.
//
// Note [two reads of the history]: any L-BFGS iteration reads the history at least twice.  The
// direction is a combination of every pair whose coefficients depend on the new gradient's dots
// with every pair, so one pass must finish those dots before another can form d.  The fused
// recursion reads each row twice too (as x in one pass, as w in the next), and q stays in
// cache beside the streamed rows, so once the history exceeds the caches an iteration costs
// two reads of it.  The compact form (the recursion run on coefficients from the Gram matrix of
// the pairs, then d in one combination pass) reads the same rows, only in two passes instead
// of 2k+1; it measured slower (rows of 200 tensors, history 10 and 100: 18 and 140 ms against
// 14 and 125 ms on a 2-core EPYC), since its passes stream many rows at once, and no faster
// when each pass walks 512 KB column blocks four rows at a time (history 10: 14.7 ms against
// 14.1-15.2 ms for the recursion's passes, one core).  bench/bench_fullbatch_cpu.py reports
// the floor of the least traffic (these two reads, the new pair, the gradient and the params)
// at the measured bandwidth.
enum class TwoLoopKind : int {
  Only = 0,   // k == 0:   v = -g * H;                     dot g'v
  First = 1,  //           v = -g;                         dot s_{k-1}'v
  Down = 2,   // entry i:  v -= al_i y_i;                  dot s_{i-1}'v
  Turn = 3,   // entry 0:  v = (v - al_0 y_0) * H;         dot y_0'v
  Up = 4,     // entry i:  v += (al_i - be_i) s_i;         dot y_{i+1}'v
  Last = 5,   // entry k-1 as Up;                          dot g'v
};

struct TwoLoopStep {
  TwoLoopKind kind;
  int entry;  // history entry (0 oldest) whose coefficient this pass applies; -1 for Only/First
  int x;      // history row read as x (-1: the grads, negated)
  int w;      // history row dotted with the result (-1: the grads)
};

// History rows of slot j: s at 2j, y at 2j + 1.
FT_HD FT_INLINE int s_row(int slot) { return 2 * slot; }
FT_HD FT_INLINE int y_row(int slot) { return 2 * slot + 1; }

// The 2k+1 passes for history entries held in `slots` (oldest first); out has room for 2k+1.
inline int two_loop_schedule(const int* slots, int k, TwoLoopStep* out) {
  if (k == 0) {
    out[0] = {TwoLoopKind::Only, -1, -1, -1};
    return 1;
  }
  int n = 0;
  out[n++] = {TwoLoopKind::First, -1, -1, s_row(slots[k - 1])};
  for (int i = k - 1; i >= 1; --i) out[n++] = {TwoLoopKind::Down, i, y_row(slots[i]), s_row(slots[i - 1])};
  out[n++] = {TwoLoopKind::Turn, 0, y_row(slots[0]), y_row(slots[0])};
  for (int i = 0; i + 1 < k; ++i) out[n++] = {TwoLoopKind::Up, i, s_row(slots[i]), y_row(slots[i + 1])};
  out[n++] = {TwoLoopKind::Last, k - 1, s_row(slots[k - 1]), -1};
  return n;
}

// The first pass to run: 1 when the First pass's dot is given (Note [first pass folded]: the
// history pass wrote its q = -g and took its dot), else 0.
inline int two_loop_start(const TwoLoopStep* steps, const double* first_dot) {
  return first_dot && steps[0].kind == TwoLoopKind::First ? 1 : 0;
}

// The Combine coefficients of one pass from the previous pass's dot.  a: keep v (all but
// Only/First); c: multiplier of x; h: H at Only and Turn.  A first-loop pass also yields al_i
// (record), which the caller stores for the second loop.
struct TwoLoopCoef {
  double a, c, h;
  bool keep, scale;
  bool record;
  double al;
};

FT_HD inline TwoLoopCoef two_loop_coef(const TwoLoopStep& st, double prev_dot, const double* ro,
                                       const double* al, double h_diag) {
  switch (st.kind) {
    case TwoLoopKind::Only: return {0.0, -1.0, h_diag, false, true, false, 0.0};
    case TwoLoopKind::First: return {0.0, -1.0, 1.0, false, false, false, 0.0};
    case TwoLoopKind::Down:
    case TwoLoopKind::Turn: {
      const double a = prev_dot * ro[st.entry];
      return {1.0, -a, h_diag, true, st.kind == TwoLoopKind::Turn, true, a};
    }
    default: {
      const double be = prev_dot * ro[st.entry];
      return {1.0, al[st.entry] - be, 1.0, true, false, false, 0.0};
    }
  }
}

}  // namespace ft::math::fb
