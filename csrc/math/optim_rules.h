// The optimizer update rules, written once for CPU SIMD lanes, CPU scalars and CUDA threads.
//
// Each rule is a struct with
//   Options            the hyperparameters of one step, as the caller gave them (double);
//   Coeffs<T>          per-step scalars in the compute type T, derived once per call by coeffs();
//   needs(options)     bit mask of the state slots (0, 1, 2) this configuration reads and writes,
//                      always within kStateSlots and always holding kRequiredSlots (the CPU
//                      driver compiles one loop per mask between the two: Note [slot masks]);
//   update(c, p, g, s0, s1, s2)  the per-element rule on values V (a scalar T or a SIMD vector
//                      of T); p and the used states are updated in place;
//   kFunction, kStateNames, fields(f)  what the binding loop (bindings/optim.cpp) needs: the
//                      Python function's name (nullptr: bound by hand), the names of its state
//                      lists by slot, and each Options field by name with its bound (Note
//                      [rule table], Note [field bounds]).
// Note [torch order]: every rule evaluates its expression in the operation order of the
// torch.optim single-tensor implementation, so float32 results differ from PyTorch's only where
// a compiler fuses a multiply-add.
#pragma once
#include <cstdint>
#include <cmath>
#include "core/macros.h"
#include "math/common.h"

namespace ft::math {

// Slot masks for needs().
constexpr int kS0 = 1, kS1 = 2, kS2 = 4;

// Note [field bounds]: what a caller's value of an Options field may be.  With the struct's own
// initializers (the defaults) it is the whole description of a hyperparameter: the binding
// publishes (name, default, bound) per field and the Python rule table takes both from there,
// keeping its one copy of the range checks (RANGES) keyed by these names.  kInternal: set by
// the layers above from other arguments (step counts, NAdam's mu products), not a keyword.
enum Bound : int { kInternal, kNonnegative, kUnit, kUnitOpen, kFlag, kNumber };
inline const char* bound_name(Bound b) {
  switch (b) {
    case kNonnegative: return "nonnegative";
    case kUnit: return "unit";          // [0, 1]
    case kUnitOpen: return "unit_open"; // [0, 1)
    case kFlag: return "flag";
    case kNumber: return "number";      // any real but NaN
    default: return nullptr;
  }
}

// p -= lr * g.  Goodfellow et al. Algorithm 8.1 (SGD); the seeds' `x += -learning_rate * dx`.
struct Sgd {
  static constexpr const char* kFunction = "sgd_";
  static constexpr const char* kStateNames[3] = {nullptr, nullptr, nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("weight_decay", &Options::weight_decay, kNonnegative);
    f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = 0;  // every slot needs() may return
  static constexpr int kRequiredSlots = 0;  // every slot needs() always returns
  struct Options { double lr = 0, weight_decay = 0; bool maximize = false; };
  template <class T> struct Coeffs { T lr, weight_decay; bool maximize; };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr), T(o.weight_decay), o.maximize};
  }
  static int needs(const Options&) { return 0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V&, V&, V&) {
    g = directional_grad(g, p, c.maximize, c.weight_decay);
    p = p - c.lr * g;
  }
};

// b = m*b + (1-dampening)*g (b = g on the first step); p -= lr * (nesterov ? g + m*b : b).
// With dampening 0 this is the seeds' `v = rho*v + dx; x -= lr*v`, and Goodfellow's Algorithm 8.2
// `v = a*v - eps*g; theta += v` with v = -lr*b; nesterov is Algorithm 8.3 in look-ahead form.
struct Momentum {
  static constexpr const char* kFunction = "momentum_";
  static constexpr const char* kStateNames[3] = {"momentum_buffers", nullptr, nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("momentum", &Options::momentum, kNonnegative);
    f("dampening", &Options::dampening, kNumber);
    f("weight_decay", &Options::weight_decay, kNonnegative);
    f("nesterov", &Options::nesterov, kFlag); f("maximize", &Options::maximize, kFlag);
    f("first_step", &Options::first_step, kInternal);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0;  // every slot needs() always returns
  struct Options {
    double lr = 0, momentum = 0.9, dampening = 0, weight_decay = 0;
    bool nesterov = false, maximize = false, first_step = false;
  };
  template <class T> struct Coeffs {
    T lr, momentum, one_minus_dampening, weight_decay; bool nesterov, maximize, first_step;
  };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr), T(o.momentum), T(1.0 - o.dampening), T(o.weight_decay),
            o.nesterov, o.maximize, o.first_step};
  }
  static int needs(const Options&) { return kS0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& buf, V&, V&) {
    g = directional_grad(g, p, c.maximize, c.weight_decay);
    if (c.first_step) buf = g;
    else buf = buf * c.momentum + c.one_minus_dampening * g;
    V d = c.nesterov ? V(g + c.momentum * buf) : buf;
    p = p - c.lr * d;
  }
};

// s += g*g; p -= lr_t * g / (sqrt(s) + eps), lr_t = lr / (1 + (step-1)*lr_decay).
// Goodfellow et al. Algorithm 8.4 (AdaGrad); the seeds' `cache += dx**2; x -= lr*dx/(sqrt(cache)+eps)`.
struct Adagrad {
  static constexpr const char* kFunction = "adagrad_";
  static constexpr const char* kStateNames[3] = {"state_sums", nullptr, nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("lr_decay", &Options::lr_decay, kNonnegative);
    f("weight_decay", &Options::weight_decay, kNonnegative); f("eps", &Options::eps, kNonnegative);
    f("step", &Options::step, kInternal); f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0;  // every slot needs() always returns
  struct Options {
    double lr = 0.01, lr_decay = 0, weight_decay = 0, eps = 1e-10; int64_t step = 1;
    bool maximize = false;
  };
  template <class T> struct Coeffs { T clr, weight_decay, eps; bool maximize; };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr / (1.0 + double(o.step - 1) * o.lr_decay)), T(o.weight_decay), T(o.eps),
            o.maximize};
  }
  static int needs(const Options&) { return kS0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& sum, V&, V&) {
    g = directional_grad(g, p, c.maximize, c.weight_decay);
    sum = sum + g * g;
    V std = ft_sqrt(sum) + c.eps;
    p = p - c.clr * (g / std);
  }
};

// r = alpha*r + (1-alpha)*g*g; avg = sqrt(r - gbar^2) + eps (centered) or sqrt(r) + eps;
// momentum: b = m*b + g/avg, p -= lr*b (nesterov: p -= lr*(g/avg + m*b)); else p -= lr*g/avg.
// Goodfellow et al. Algorithm 8.5 (RMSProp) and 8.6 (RMSProp with Nesterov momentum); the seeds'
// `cache = decay*cache + (1-decay)*dx**2; x -= lr*dx/(sqrt(cache)+eps)`.
// Slots: s0 square_avg, s1 momentum_buffer, s2 grad_avg.
struct Rmsprop {
  static constexpr const char* kFunction = "rmsprop_";
  static constexpr const char* kStateNames[3] = {"square_avgs", "momentum_buffers", "grad_avgs"};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("alpha", &Options::alpha, kUnit);
    f("eps", &Options::eps, kNonnegative); f("weight_decay", &Options::weight_decay, kNonnegative);
    f("momentum", &Options::momentum, kNonnegative); f("centered", &Options::centered, kFlag);
    f("nesterov", &Options::nesterov, kFlag); f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0 | kS1 | kS2;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0;  // every slot needs() always returns
  struct Options {
    double lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
    bool centered = false, nesterov = false, maximize = false;
  };
  template <class T> struct Coeffs {
    T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    bool centered, use_momentum, nesterov, maximize;
  };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr), T(o.alpha), T(1.0 - o.alpha), T(o.eps), T(o.weight_decay), T(o.momentum),
            o.centered, o.momentum > 0, o.nesterov, o.maximize};
  }
  static int needs(const Options& o) {
    return kS0 | (o.momentum > 0 ? kS1 : 0) | (o.centered ? kS2 : 0);
  }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& sq, V& buf, V& gavg) {
    g = directional_grad(g, p, c.maximize, c.weight_decay);
    sq = sq * c.alpha + c.one_minus_alpha * (g * g);
    V avg;
    if (c.centered) {
      gavg = lerp(gavg, g, c.one_minus_alpha);
      avg = ft_sqrt(sq - gavg * gavg) + c.eps;
    } else {
      avg = ft_sqrt(sq) + c.eps;
    }
    V step = g / avg;
    if (c.use_momentum) {
      buf = buf * c.momentum + step;
      p = p - c.lr * (c.nesterov ? V(step + c.momentum * buf) : buf);
    } else {
      p = p - c.lr * step;
    }
  }
};

// r = rho*r + (1-rho)*g*g; d = sqrt(u + eps)/sqrt(r + eps) * g; u = rho*u + (1-rho)*d*d;
// p -= lr*d.  Zeiler's AdaDelta (Goodfellow et al. section 8.5 cites it).  Slots: s0 square_avg,
// s1 acc_delta.
struct Adadelta {
  static constexpr const char* kFunction = "adadelta_";
  static constexpr const char* kStateNames[3] = {"square_avgs", "acc_deltas", nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("rho", &Options::rho, kUnit);
    f("eps", &Options::eps, kNonnegative); f("weight_decay", &Options::weight_decay, kNonnegative);
    f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0 | kS1;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0 | kS1;  // every slot needs() always returns
  struct Options {
    double lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0; bool maximize = false;
  };
  template <class T> struct Coeffs { T lr, rho, one_minus_rho, eps, weight_decay; bool maximize; };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr), T(o.rho), T(1.0 - o.rho), T(o.eps), T(o.weight_decay), o.maximize};
  }
  static int needs(const Options&) { return kS0 | kS1; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& sq, V& acc, V&) {
    g = directional_grad(g, p, c.maximize, c.weight_decay);
    sq = sq * c.rho + c.one_minus_rho * (g * g);
    V std = ft_sqrt(sq + c.eps);
    V delta = ft_sqrt(acc + c.eps) / std * g;
    acc = acc * c.rho + c.one_minus_rho * (delta * delta);
    p = p - c.lr * delta;
  }
};

// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// (amsgrad: v replaced by its running max).  Goodfellow et al. Algorithm 8.7 (Adam); the seeds'
// `m = beta1*m + (1-beta1)*dx; v = beta2*v + (1-beta2)*dx**2; x -= lr*mt/(sqrt(vt)+eps)`.
// Decoupled weight decay (AdamW) scales p by 1 - lr*wd before the update instead of adding wd*p
// to g.  Slots: s0 exp_avg, s1 exp_avg_sq, s2 max_exp_avg_sq.
struct Adam {
  static constexpr const char* kFunction = "adam_";
  static constexpr const char* kStateNames[3] = {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("beta1", &Options::beta1, kUnitOpen);
    f("beta2", &Options::beta2, kUnitOpen); f("eps", &Options::eps, kNonnegative);
    f("weight_decay", &Options::weight_decay, kNonnegative); f("step", &Options::step, kInternal);
    f("decoupled", &Options::decoupled, kFlag); f("amsgrad", &Options::amsgrad, kFlag);
    f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0 | kS1 | kS2;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0 | kS1;  // every slot needs() always returns
  struct Options {
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
    int64_t step = 1; bool decoupled = false, amsgrad = false, maximize = false;
  };
  template <class T> struct Coeffs {
    T one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor, step_size,
        bias_correction2_sqrt;
    bool decoupled, amsgrad, maximize;
  };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    double bc1 = 1.0 - pow(o.beta1, double(o.step));
    double bc2 = 1.0 - pow(o.beta2, double(o.step));
    return {T(1.0 - o.beta1), T(o.beta2), T(1.0 - o.beta2), T(o.eps), T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay), T(o.lr / bc1), T(sqrt(bc2)),
            o.decoupled, o.amsgrad, o.maximize};
  }
  static int needs(const Options& o) { return kS0 | kS1 | (o.amsgrad ? kS2 : 0); }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& m, V& v, V& vmax) {
    g = adam_decay(g, p, c.decoupled, c.maximize, c.weight_decay, c.decay_factor);
    m = lerp(m, g, c.one_minus_beta1);
    v = v * c.beta2 + c.one_minus_beta2 * (g * g);
    V denom;
    if (c.amsgrad) {
      vmax = ft_max(vmax, v);
      denom = ft_sqrt(vmax) / c.bias_correction2_sqrt + c.eps;
    } else {
      denom = ft_sqrt(v) / c.bias_correction2_sqrt + c.eps;
    }
    p = p - c.step_size * (m / denom);
  }
};

// c = b1*m + (1-b1)*g; p -= lr*(sign(c) + wd*p); m = b2*m + (1-b2)*g.  Lion, Chen et al. 2023
// ("Symbolic Discovery of Optimization Algorithms", Algorithm 2), with its decoupled weight
// decay applied first as p *= 1 - lr*wd (as AdamW).  Every coordinate moves by exactly lr: the
// sign, not the size, of the interpolated momentum sets the step.  Slots: s0 exp_avg.
struct Lion {
  static constexpr const char* kFunction = "lion_";
  static constexpr const char* kStateNames[3] = {"exp_avgs", nullptr, nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("beta1", &Options::beta1, kUnit);
    f("beta2", &Options::beta2, kUnit); f("weight_decay", &Options::weight_decay, kNonnegative);
    f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0;  // every slot needs() always returns
  struct Options {
    double lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0; bool maximize = false;
  };
  template <class T> struct Coeffs {
    T lr, one_minus_beta1, one_minus_beta2, decay_factor; bool maximize, decay;
  };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    return {T(o.lr), T(1.0 - o.beta1), T(1.0 - o.beta2), T(1.0 - o.lr * o.weight_decay),
            o.maximize, o.weight_decay != 0};
  }
  static int needs(const Options&) { return kS0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& m, V&, V&) {
    if (c.maximize) g = -g;
    if (c.decay) p = p * c.decay_factor;
    p = p - c.lr * ft_sign(lerp(m, g, c.one_minus_beta1));
    m = lerp(m, g, c.one_minus_beta2);
  }
};

// NAdam, Dozat 2016 ("Incorporating Nesterov Momentum into Adam"), as torch.optim.NAdam:
// mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay)); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
// denom = sqrt(v/(1-b2^t)) + eps;
// p -= lr*(1-mu_t)/(1-prod_{i<=t} mu_i) * g/denom + lr*mu_{t+1}/(1-prod_{i<=t+1} mu_i) * m/denom.
// mu_t, mu_{t+1} and prod_{i<=t} mu_i (torch's float32 "mu_product" state) depend only on the
// step, so the caller computes them on the host and passes them in; weight decay as Adam's.
// Slots: s0 exp_avg, s1 exp_avg_sq.
struct Nadam {
  static constexpr const char* kFunction = "nadam_";
  static constexpr const char* kStateNames[3] = {"exp_avgs", "exp_avg_sqs", nullptr};
  template <class F> static void fields(F&& f) {
    f("lr", &Options::lr, kNonnegative); f("beta1", &Options::beta1, kUnitOpen);
    f("beta2", &Options::beta2, kUnitOpen); f("eps", &Options::eps, kNonnegative);
    f("weight_decay", &Options::weight_decay, kNonnegative); f("mu", &Options::mu, kInternal);
    f("mu_next", &Options::mu_next, kInternal); f("mu_product", &Options::mu_product, kInternal);
    f("step", &Options::step, kInternal); f("decoupled", &Options::decoupled, kFlag);
    f("maximize", &Options::maximize, kFlag);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = kS0 | kS1;  // every slot needs() may return
  static constexpr int kRequiredSlots = kS0 | kS1;  // every slot needs() always returns
  struct Options {
    double lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
    double mu = 0, mu_next = 0, mu_product = 0;  // mu_t, mu_{t+1}, prod_{i<=t} mu_i
    int64_t step = 1; bool decoupled = false, maximize = false;
  };
  template <class T> struct Coeffs {
    T one_minus_beta1, beta2, one_minus_beta2, bias_correction2, eps, weight_decay, decay_factor,
        grad_coef, avg_coef;
    bool decoupled, maximize;
  };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) {
    const double mu_product_next = o.mu_product * o.mu_next;
    return {T(1.0 - o.beta1), T(o.beta2), T(1.0 - o.beta2), T(1.0 - pow(o.beta2, double(o.step))),
            T(o.eps), T(o.weight_decay), T(1.0 - o.lr * o.weight_decay),
            T(o.lr * (1.0 - o.mu) / (1.0 - o.mu_product)),
            T(o.lr * o.mu_next / (1.0 - mu_product_next)), o.decoupled, o.maximize};
  }
  static int needs(const Options&) { return kS0 | kS1; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& p, V g, V& m, V& v, V&) {
    g = adam_decay(g, p, c.decoupled, c.maximize, c.weight_decay, c.decay_factor);
    m = lerp(m, g, c.one_minus_beta1);
    v = v * c.beta2 + c.one_minus_beta2 * (g * g);
    // One divide for both terms (torch's two addcdivs divide twice; the results agree to
    // rounding): divides, not memory, bound this rule's SIMD loop otherwise.
    const V inv_denom = T(1) / (ft_sqrt(v / c.bias_correction2) + c.eps);
    p = p - c.grad_coef * g * inv_denom;
    p = p - c.avg_coef * m * inv_denom;
  }
};

// a = decay*a + (1-decay)*x, as a lerp toward x: Polyak averaging in its exponential form
// (Goodfellow et al. section 8.7.3).  The "param" slot is the average, the "grad" slot the
// current parameters.
struct Ema {
  static constexpr const char* kFunction = nullptr;
  static constexpr const char* kStateNames[3] = {nullptr, nullptr, nullptr};
  template <class F> static void fields(F&& f) {
    f("decay", &Options::decay, kUnit);
  }
  static constexpr bool kReadsGrad = true;
  static constexpr int kStateSlots = 0;  // every slot needs() may return
  static constexpr int kRequiredSlots = 0;  // every slot needs() always returns
  struct Options { double decay = 0.999; };
  template <class T> struct Coeffs { T weight; };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) { return {T(1.0 - o.decay)}; }
  static int needs(const Options&) { return 0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& avg, V x, V&, V&, V&) {
    avg = lerp(avg, x, c.weight);
  }
};

// x *= coef: the second half of gradient-norm clipping.  The "param" slot is the gradient.
struct Scale {
  static constexpr const char* kFunction = nullptr;
  static constexpr const char* kStateNames[3] = {nullptr, nullptr, nullptr};
  template <class F> static void fields(F&&) {}
  static constexpr bool kReadsGrad = false;
  static constexpr int kStateSlots = 0;  // every slot needs() may return
  static constexpr int kRequiredSlots = 0;  // every slot needs() always returns
  struct Options { double coef = 1.0; };
  template <class T> struct Coeffs { T coef; };
  template <class T> FT_HD static Coeffs<T> coeffs(const Options& o) { return {T(o.coef)}; }
  static int needs(const Options&) { return 0; }
  template <class V, class T>
  FT_HD FT_INLINE static void update(const Coeffs<T>& c, V& x, V, V&, V&, V&) { x = x * c.coef; }
};

// Note [rule table]: the one list of elementwise rules; each backend instantiates its kernels from
// it, and the binding registers each rule's Options class and function from the struct's names,
// so a new rule is a struct above plus one line here.
#define FT_ELEMENTWISE_RULES(X) \
  X(Sgd, sgd)                   \
  X(Momentum, momentum)         \
  X(Adagrad, adagrad)           \
  X(Rmsprop, rmsprop)           \
  X(Adadelta, adadelta)         \
  X(Adam, adam)                 \
  X(Lion, lion)                 \
  X(Nadam, nadam)               \
  X(Ema, ema)                   \
  X(Scale, scale)

}  // namespace ft::math
