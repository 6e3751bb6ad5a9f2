"""The rule table: every optimizer rule described once (Note [rule table] below).

FUNCTIONS holds one Spec per functional rule (sgd_ ... nadam_): its signature, defaults, range
checks, docstring and Options fields; functional.py generates the public functions from it.
RULES holds one Rule per class (SGD ... NAdam): hyperparameters, the state each needs and the
fused call; ``ft.optim`` (NumPy/CuPy) and ``ft.torch`` (torch.optim subclasses) generate their
classes from it, and validate param groups with the Spec's checks. Group dicts use torch.optim's
keys (``betas``, ``initial_accumulator_value``, ...) and state uses torch's names (``exp_avg``,
``sum``, ...), so both layers speak torch.optim's state layout. The older rules' classes map
their groups onto the functions by hand (SGD picks sgd_ or momentum_); a Spec with
``classes=True`` (Lion, NAdam) makes its class's Rule itself.
"""
import inspect
import numbers
from dataclasses import dataclass, field, replace
from typing import Callable

from . import _C
from . import _checks as chk
from . import functional as F


@dataclass(frozen=True)
class Rule:
    name: str
    defaults: dict          # hyperparameters and their defaults, torch.optim's names
    takes_step: bool        # keeps a per-param "step" count in torch's layout
    state: Callable         # group -> {state key: initial value}
    call: Callable          # (group, params, grads, states, step, lr, **common) -> None
    validate: Callable      # (group) -> None, raising ValueError naming the argument
    doc: str = ""           # the ft.optim class's docstring
    keyword_only: tuple = ("maximize",)   # constructor keywords after the *
    fixed: dict = field(default_factory=dict)   # group keys the class sets (AdamW's decoupling)
    torch_doc: str = ""     # the ft.torch drop-in's docstring ("": the ft.optim one)
    # ft.torch: group keys its torch.optim namesake lacks -> the conversion of the constructor's
    # value; they become keyword-only constructor arguments, carried in each param group.
    torch_extra: dict = field(default_factory=dict)


def _sgd_state(g):
    return {"momentum_buffer": 0.0} if g["momentum"] != 0 else {}


def _sgd_call(g, params, grads, st, step, lr, **common):
    if g["momentum"] == 0:
        F.sgd_(params, grads, lr=lr, weight_decay=g["weight_decay"], maximize=g["maximize"],
               **common)
    else:
        F.momentum_(params, grads, st["momentum_buffer"], step=step, lr=lr,
                    momentum=g["momentum"], dampening=g["dampening"], nesterov=g["nesterov"],
                    weight_decay=g["weight_decay"], maximize=g["maximize"], **common)


def _sgd_validate(g):
    FUNCTIONS["momentum_"].validate(g, "SGD")


def _adagrad_call(g, params, grads, st, step, lr, **common):
    F.adagrad_(params, grads, st["sum"], step=step, lr=lr, lr_decay=g["lr_decay"],
               weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"], **common)


def _adagrad_validate(g):
    FUNCTIONS["adagrad_"].validate(g, "Adagrad", {"initial_accumulator_value": "nonnegative"})


def _rmsprop_state(g):
    s = {"square_avg": 0.0}
    if g["momentum"] > 0:
        s["momentum_buffer"] = 0.0
    if g["centered"]:
        s["grad_avg"] = 0.0
    return s


def _rmsprop_call(g, params, grads, st, step, lr, **common):
    F.rmsprop_(params, grads, st["square_avg"], lr=lr, alpha=g["alpha"], eps=g["eps"],
               weight_decay=g["weight_decay"], momentum=g["momentum"],
               momentum_buffers=st.get("momentum_buffer"), centered=g["centered"],
               grad_avgs=st.get("grad_avg"), nesterov=g.get("nesterov", False),
               maximize=g["maximize"], **common)


def _rmsprop_validate(g):
    FUNCTIONS["rmsprop_"].validate(g, "RMSprop")


def _adadelta_call(g, params, grads, st, step, lr, **common):
    F.adadelta_(params, grads, st["square_avg"], st["acc_delta"], lr=lr, rho=g["rho"],
                eps=g["eps"], weight_decay=g["weight_decay"], maximize=g["maximize"], **common)


def _adadelta_validate(g):
    FUNCTIONS["adadelta_"].validate(g, "Adadelta")


def _adam_state(g):
    s = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
    if g["amsgrad"]:
        s["max_exp_avg_sq"] = 0.0
    return s


def _adam_call(g, params, grads, st, step, lr, **common):
    beta1, beta2 = g["betas"]
    F.adam_(params, grads, st["exp_avg"], st["exp_avg_sq"], step=step, lr=lr,
            beta1=float(beta1), beta2=float(beta2), eps=g["eps"], weight_decay=g["weight_decay"],
            decoupled_weight_decay=bool(g.get("decoupled_weight_decay", False)),
            amsgrad=g["amsgrad"], max_exp_avg_sqs=st.get("max_exp_avg_sq"),
            maximize=g["maximize"], **common)


def _adam_validate(g, name="Adam"):
    FUNCTIONS["adam_"].validate(g, name)


def _class_defaults(fn, keys, **torch_class):
    """A torch.optim class's param-group defaults in its constructor's order: the functional's
    (betas paired), except the keys the class has of its own or defaults otherwise."""
    pos, kw = FUNCTIONS[fn].group_defaults()
    known = {**pos, **kw, **torch_class}
    return {k: known[k] for k in keys}


def _written_rules():
    """The classes of the older rules, written out with torch's own quirks (SGD picks sgd_ or
    momentum_; Adagrad's initial_accumulator_value; AdamW fixes the decoupling)."""
    adam_keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay",
                 "maximize")
    return [
        Rule("SGD", _class_defaults("momentum_", ("lr", "momentum", "dampening", "weight_decay",
                                                  "nesterov", "maximize"), lr=1e-3, momentum=0.0),
             False, _sgd_state, _sgd_call, _sgd_validate,
             "SGD, momentum and Nesterov momentum (``torch.optim.SGD``; "
             ":func:`fusedtrain.momentum_`).",
             torch_doc="``torch.optim.SGD`` (momentum, dampening, Nesterov) on fusedtrain's "
                       "sgd_ / momentum_."),
        Rule("Adagrad", _class_defaults("adagrad_", ("lr", "lr_decay", "weight_decay",
                                                     "initial_accumulator_value", "eps",
                                                     "maximize"),
                                        initial_accumulator_value=0.0), True,
             lambda g: {"sum": g["initial_accumulator_value"]}, _adagrad_call, _adagrad_validate,
             "AdaGrad (``torch.optim.Adagrad``; :func:`fusedtrain.adagrad_`).",
             torch_doc="``torch.optim.Adagrad`` on fusedtrain's adagrad_."),
        Rule("RMSprop", _class_defaults("rmsprop_", ("lr", "alpha", "eps", "weight_decay",
                                                     "momentum", "centered", "nesterov",
                                                     "maximize")),
             True, _rmsprop_state, _rmsprop_call, _rmsprop_validate,
             "RMSProp (``torch.optim.RMSprop``), plus ``nesterov`` (Goodfellow et al. "
             "Algorithm 8.6;\n    :func:`fusedtrain.rmsprop_`).", ("nesterov", "maximize"),
             torch_doc="``torch.optim.RMSprop`` on fusedtrain's rmsprop_, plus keyword "
                       "``nesterov`` (Goodfellow\n    et al. Algorithm 8.6; a group key "
                       "torch.optim.RMSprop carries along and ignores).",
             torch_extra={"nesterov": bool}),
        Rule("Adadelta", _class_defaults("adadelta_", ("lr", "rho", "eps", "weight_decay",
                                                       "maximize")), True,
             lambda g: {"square_avg": 0.0, "acc_delta": 0.0}, _adadelta_call, _adadelta_validate,
             "AdaDelta (``torch.optim.Adadelta``; :func:`fusedtrain.adadelta_`).",
             torch_doc="``torch.optim.Adadelta`` on fusedtrain's adadelta_."),
        Rule("Adam", _class_defaults("adam_", adam_keys), True,
             _adam_state, _adam_call, _adam_validate,
             "Adam / AMSGrad (``torch.optim.Adam``; :func:`fusedtrain.adam_`).",
             ("maximize", "decoupled_weight_decay"),
             torch_doc="``torch.optim.Adam`` (AMSGrad, decoupled_weight_decay) on "
                       "fusedtrain's adam_."),
        Rule("AdamW", _class_defaults("adamw_", adam_keys), True,
             _adam_state, _adam_call, lambda g: _adam_validate(g, "AdamW"),
             "AdamW, decoupled weight decay (``torch.optim.AdamW``; :func:`fusedtrain.adamw_`).",
             fixed={"decoupled_weight_decay": True},      # as torch.optim.AdamW does on load
             torch_doc="``torch.optim.AdamW`` on fusedtrain's adamw_."),
    ]


# ---- Note [rule table]: a rule described once -------------------------------------------------
# A Spec holds every fact about a rule that the layers above the kernel need: its functional
# signature (state lists, hyperparameters with defaults and range checks, the Options field each
# fills), its docstrings, and its torch.optim twin.  From it are generated the functional wrapper
# (functional.py), its validation (one copy, shared with the classes' param-group checks), the
# ft.optim class (optim.py), the ft.torch drop-in (torch/optimizers.py) and the exports; the
# kernel side is the struct in csrc/math/optim_rules.h, bound by a loop over the rule list.
# A new rule is a struct there, a Spec here and a reference in reference/.  The defaults and
# bounds of the Options fields are the struct's (Note [field bounds]): a Hyper that fills a field
# restates neither, unless the Python signature differs on purpose (sgd_'s required lr, adamw_'s
# weight decay 0.01 as torch.optim.AdamW's).

REQUIRED = inspect.Parameter.empty
FROM_FIELD = object()   # a Hyper's default or check: its Options field's, from the kernel table


def _pick(items, idx):
    return items if idx is None else [items[i] for i in idx]


# One copy of the range checks: (fn, name, value) -> value, TypeError/ValueError naming it.
RANGES = {
    "nonnegative": lambda fn, k, v: chk.at_least(fn, k, v),
    "unit": lambda fn, k, v: chk.in_range(fn, k, v, 0.0, 1.0, True),
    "unit_open": lambda fn, k, v: chk.in_range(fn, k, v, 0.0, 1.0, False),
    "flag": lambda fn, k, v: chk.flag(fn, k, v),
    "number": lambda fn, k, v: chk._number(fn, k, v),
    None: lambda fn, k, v: v,
}


def _tensor_value(fn, key, value):
    """A beta given as a one-element tensor, as torch.optim's Adam-family classes take them (a
    scheduler may ``fill_`` it in place), checked by its value; the classes read it with
    ``float()`` at every step."""
    numel = getattr(value, "numel", None)
    if numel is None or isinstance(value, numbers.Real) or not callable(numel):
        return value
    if numel() != 1:
        raise ValueError(f"{fn}: {key} given as a tensor must have one element, got {numel()}")
    return float(value)


@dataclass(frozen=True)
class Hyper:
    """One keyword of a functional rule."""
    name: str
    default: object = FROM_FIELD    # REQUIRED: no default
    check: object = FROM_FIELD      # a key of RANGES
    field: object = ""              # its Options field ("": the same name; None: host-only)
    group: bool = True              # a param-group key of the classes (betas pair beta1/beta2)
    keyword_only: bool = False      # after the * in the classes' constructors
    slot: int = -1                  # >= 0: an optional state list passed by keyword, its slot
    used: object = None             # (values) -> whether that state list takes part
    visible: bool = True            # False: a fixed value, not in the signature (adamw_)


@dataclass(frozen=True)
class Spec:
    name: str                 # class name in ft.optim and ft.torch
    fn: str                   # functional name (and the _C function)
    options: str              # the _C Options class
    states: tuple             # (functional list name, torch state key) in kernel slot order
    hypers: tuple             # keyword hyperparameters after step, in signature order
    takes_step: bool
    doc: str                  # functional docstring: formula and textbook form
    class_doc: str
    prepare: object = None               # (fn, values) -> more Options fields, on the host
    scalar_state: dict = field(default_factory=dict)  # ft.torch 0-dim state (torch's layout)
    advance: object = None               # (group, st, step, found_inf) -> [(indices, kwargs)]
    kernel: str = ""                     # the _C function, when not fn (adamw_ runs adam_)
    host_step: bool = False              # step is read on the host (prepare needs its value)
    requires: tuple = ()                 # (predicate on values, state list, reason) pairs
    constraints: object = None           # (fn, values) -> None, ValueError across arguments
    classes: bool = True                 # ft.optim / ft.torch classes generated from this spec

    def __post_init__(self):
        # Note [field bounds]: defaults and checks left to the kernel's description of the field.
        described = {name: (default, bound) for name, default, bound in
                     getattr(_C, self.options).fields}
        hypers = []
        for h in self.hypers:
            if h.default is FROM_FIELD or h.check is FROM_FIELD:
                name = h.field or h.name
                if h.field is None or name not in described:
                    raise AssertionError(f"{self.fn}: {h.name} fills no field of {self.options}")
                default, bound = described[name]
                h = replace(h, default=default if h.default is FROM_FIELD else h.default,
                            check=bound if h.check is FROM_FIELD else h.check)
            hypers.append(h)
        object.__setattr__(self, "hypers", tuple(hypers))

    def group_defaults(self):
        """(positional, keyword-only) param-group keys with defaults, torch.optim's names."""
        pos, kw = {}, {}
        names = [h.name for h in self.hypers]
        for h in self.hypers:
            if not h.group:
                continue
            into = kw if h.keyword_only else pos
            if h.name == "beta1":
                into["betas"] = (h.default, self.hypers[names.index("beta2")].default)
            elif h.name != "beta2":
                into[h.name] = h.default
        return pos, kw

    def functional_kwargs(self, group, name=None):
        """A param group's hyperparameters as the functional's keywords (betas -> beta1, beta2);
        keys the group lacks take the functional's defaults."""
        out = {}
        for h in self.hypers:
            if not h.group or h.slot >= 0 or not h.visible:
                continue
            if h.name in ("beta1", "beta2"):
                betas = group["betas"]
                if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                    raise ValueError(f"{name or self.name}: betas must be a pair (beta1, beta2), "
                                     f"got {betas!r}")
                out[h.name] = betas[h.name == "beta2"]
            elif h.name in group or h.default is not REQUIRED:
                out[h.name] = group.get(h.name, h.default)
        return out

    def check(self, fn, values):
        """Range-checks the hyperparameters in values (in place); the one copy of the checks."""
        for h in self.hypers:
            if h.name in values and h.name != "lr" and h.slot < 0:
                values[h.name] = RANGES[h.check](fn, h.name, values[h.name])
        if self.constraints is not None:
            self.constraints(fn, values)

    def validate(self, group, name=None, extra=None):
        """ValueError naming the hyperparameter: the functional's checks on a param group.
        ``extra``: more group keys -> a RANGES key (class-only keys such as Adagrad's
        initial_accumulator_value)."""
        name = name or self.name
        values = self.functional_kwargs(group, name)
        values.pop("lr", None)      # checked by the classes (a number or a schedule)
        for key in ("beta1", "beta2"):
            if key in values:
                values[key] = _tensor_value(name, key, values[key])
        try:
            self.check(name, values)
            for key, kind in (extra or {}).items():
                RANGES[kind](name, key, group[key])
        except TypeError as e:
            raise ValueError(str(e)) from None

    def state(self, group):
        return {key: 0.0 for _, key in self.states}

    def call(self, group, params, grads, st, step, lr, **common):
        """The class step: one functional call on the group's hyperparameters (several when
        ``advance`` splits the params by a per-param scalar state, NAdam's mu_product)."""
        kw = {k: (float(v) if k in ("beta1", "beta2") else v)
              for k, v in self.functional_kwargs(group).items()}
        kw["lr"] = lr
        lists = [st[key] for _, key in self.states]
        fn = getattr(F, self.fn)
        if self.advance is None or not all(k in st for k in self.scalar_state):
            runs = [(None, {})]
        else:
            runs = self.advance(group, st, step, common.get("found_inf"))
        for idx, extra in runs:
            step_kw = {"step": extra.pop("step", step)} if self.takes_step else {}
            master = common.get("master_params")
            sub = {**common, "master_params": _pick(master, idx)} if master is not None \
                else common
            fn(_pick(params, idx), _pick(grads, idx), *[_pick(s, idx) for s in lists],
               **step_kw, **kw, **extra, **sub)

    def rule(self):
        """The class-level Rule of this spec (ft.optim and ft.torch)."""
        pos, kw = self.group_defaults()
        return Rule(self.name, {**pos, **kw}, self.takes_step, self.state, self.call,
                    self.validate, self.class_doc, tuple(kw))


# The docstrings of the older rules (each gives its formula and the textbook form it equals).
DOCS_SGD = """Plain stochastic gradient descent, ``torch.optim.SGD`` without momentum.

    ``g = grad (+ weight_decay * p); p -= lr * g`` (``g = -grad`` when maximizing).

    Textbook form: Goodfellow et al. Algorithm 8.1, ``theta <- theta - eps * g``; the lecture's
    ``x += -learning_rate * dx``.
    """

DOCS_MOMENTUM = """SGD with momentum or Nesterov momentum, ``torch.optim.SGD(momentum=...)``.

    ``g = grad (+ weight_decay * p)``; ``b = g`` at ``step == 1``, else
    ``b = momentum * b + (1 - dampening) * g``; ``p -= lr * (g + momentum * b)`` with nesterov,
    else ``p -= lr * b``.

    Textbook form: with dampening 0, the lecture's ``v = rho * v + dx; x -= learning_rate * v``,
    which is Goodfellow et al. Algorithm 8.2 (``v <- alpha v - eps g; theta <- theta + v``) with
    ``v = -lr * b``.  Nesterov is Algorithm 8.3 written at the look-ahead point (the lecture's
    ``v = rho*v + dx(x + rho*v)`` after the change of variables ``x~ = x + rho * v``).
    """

DOCS_ADAGRAD = """AdaGrad, ``torch.optim.Adagrad``.

    ``g = grad (+ weight_decay * p); s += g * g;
    p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(s) + eps)``.
    ``state_sums`` start at torch's ``initial_accumulator_value`` (0 by default).

    Textbook form: Goodfellow et al. Algorithm 8.4 (``r <- r + g*g;
    theta <- theta - eps / (delta + sqrt(r)) * g``); the lecture's
    ``cache += dx**2; x -= learning_rate * dx / (np.sqrt(cache) + 1e-7)``.
    """

DOCS_RMSPROP = """RMSProp, ``torch.optim.RMSprop``, plus the Nesterov variant of Goodfellow et al.

    ``g = grad (+ weight_decay * p); r = alpha * r + (1 - alpha) * g * g``;
    centered: ``gbar = alpha * gbar + (1 - alpha) * g; avg = sqrt(r - gbar**2) + eps``, else
    ``avg = sqrt(r) + eps``.  Without momentum ``p -= lr * g / avg``; with momentum
    ``b = momentum * b + g / avg`` and ``p -= lr * b``, or with nesterov
    ``p -= lr * (g / avg + momentum * b)``.

    Textbook form: Goodfellow et al. Algorithm 8.5 (``r <- rho r + (1 - rho) g*g;
    theta <- theta - eps / sqrt(delta + r) * g``); the lecture's
    ``cache = decay_rate * cache + (1 - decay_rate) * dx**2``.  ``nesterov=True`` is
    Algorithm 8.6 (RMSProp with Nesterov momentum) in its look-ahead form.
    ``momentum > 0`` needs ``momentum_buffers``; ``centered`` needs ``grad_avgs``.
    """

DOCS_ADADELTA = """AdaDelta, ``torch.optim.Adadelta``.

    ``g = grad (+ weight_decay * p); r = rho * r + (1 - rho) * g * g;
    d = sqrt(u + eps) / sqrt(r + eps) * g; u = rho * u + (1 - rho) * d * d; p -= lr * d``.

    Textbook form: Zeiler's AdaDelta (cited in Goodfellow et al. section 8.5): RMSProp whose
    learning rate is the running RMS of past updates, so units match (``lr = 1``).
    """

DOCS_ADAM = """Adam, ``torch.optim.Adam`` (and ``torch.optim.AdamW`` with decoupled_weight_decay).

    L2 decay ``g = grad + weight_decay * p``, or decoupled ``p *= 1 - lr * weight_decay``;
    ``m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g``;
    amsgrad: ``vmax = max(vmax, v)`` replaces v below;
    ``p -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)``.

    Textbook form: Goodfellow et al. Algorithm 8.7 (``s <- rho1 s + (1 - rho1) g;
    r <- rho2 r + (1 - rho2) g*g; s^ = s / (1 - rho1^t); r^ = r / (1 - rho2^t);
    theta <- theta - eps s^ / (sqrt(r^) + delta)``); the lecture's Adam with bias correction
    (``mt = m / (1 - beta1**t); vt = v / (1 - beta2**t); x -= lr * mt / (sqrt(vt) + 1e-7)``),
    with eps placed as torch places it.
    """

DOCS_ADAMW = """AdamW, ``torch.optim.AdamW``: :func:`adam_` with decoupled weight decay.

    ``p *= 1 - lr * weight_decay``, then the Adam step on the raw gradient (Loshchilov & Hutter).
    """


# Lion: Chen et al. 2023.
def _lion():
    return Spec(
        "Lion", "lion_", "LionOptions", (("exp_avgs", "exp_avg"),),
        (Hyper("lr"), Hyper("beta1"), Hyper("beta2"), Hyper("weight_decay"),
         Hyper("maximize", keyword_only=True)),
        False,
        """Lion, Chen et al. 2023 ("Symbolic Discovery of Optimization Algorithms").

    ``p *= 1 - lr * weight_decay`` (decoupled); ``c = beta1 * m + (1 - beta1) * g;
    p -= lr * sign(c); m = beta2 * m + (1 - beta2) * g`` (``g = -grad`` when maximizing).

    Textbook form: the paper's Algorithm 2, ``update = sign(beta1 m + (1 - beta1) g);
    theta <- theta - lr (update + lambda theta); m <- beta2 m + (1 - beta2) g``.  Every
    coordinate moves by exactly ``lr`` (plus decay): use a learning rate 3-10x smaller than
    AdamW's and a weight decay as many times larger.  torch.optim has no Lion.
    """,
        "Lion, Chen et al. 2023 (:func:`fusedtrain.lion_`); state ``exp_avg`` per param.")


def _sgd_fn():
    return Spec(
        "", "sgd_", "SgdOptions", (),
        (Hyper("lr", REQUIRED), Hyper("weight_decay"), Hyper("maximize")), False,
        DOCS_SGD, "", classes=False)


def _momentum_constraints(fn, v):
    if v["nesterov"] and (v["momentum"] <= 0 or v["dampening"] != 0):
        raise ValueError(f"{fn}: nesterov requires momentum > 0 and dampening == 0")


def _momentum_fn():
    return Spec(
        "", "momentum_", "MomentumOptions", (("momentum_buffers", "momentum_buffer"),),
        (Hyper("lr", REQUIRED), Hyper("momentum"), Hyper("dampening"), Hyper("nesterov"),
         Hyper("weight_decay"), Hyper("maximize")), True,
        DOCS_MOMENTUM, "", classes=False, constraints=_momentum_constraints,
        # Step 1 starts the buffer at the grad (a device step sets it in the kernel).
        prepare=lambda fn, v: {"first_step": v["step"] == 1})


def _adagrad_fn():
    return Spec(
        "", "adagrad_", "AdagradOptions", (("state_sums", "sum"),),
        (Hyper("lr"), Hyper("lr_decay"), Hyper("weight_decay"), Hyper("eps"), Hyper("maximize")),
        True,
        DOCS_ADAGRAD, "", classes=False)


def _rmsprop_constraints(fn, v):
    if v["nesterov"] and v["momentum"] <= 0:
        raise ValueError(f"{fn}: nesterov requires momentum > 0")


def _rmsprop_fn():
    return Spec(
        "", "rmsprop_", "RmspropOptions", (("square_avgs", "square_avg"),),
        (Hyper("lr"), Hyper("alpha"), Hyper("eps"), Hyper("weight_decay"), Hyper("momentum"),
         Hyper("momentum_buffers", None, None, None, slot=1),
         Hyper("centered"), Hyper("grad_avgs", None, None, None, slot=2),
         Hyper("nesterov"), Hyper("maximize")), False,
        DOCS_RMSPROP, "", classes=False, constraints=_rmsprop_constraints,
        requires=((lambda v: v["momentum"] > 0, "momentum_buffers", "momentum > 0"),
                  (lambda v: v["centered"], "grad_avgs", "centered=True")))


def _adadelta_fn():
    return Spec(
        "", "adadelta_", "AdadeltaOptions", (("square_avgs", "square_avg"),
                                             ("acc_deltas", "acc_delta")),
        (Hyper("lr"), Hyper("rho"), Hyper("eps"), Hyper("weight_decay"), Hyper("maximize")),
        False,
        DOCS_ADADELTA, "", classes=False)


def _amsgrad(values):
    return values["amsgrad"]


def _adam_fn(fn, doc, weight_decay=FROM_FIELD, decoupled=FROM_FIELD):
    """adam_, or adamw_: the same kernel with weight decay 0.01 and decoupled fixed."""
    return Spec(
        "", fn, "AdamOptions", (("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq")),
        (Hyper("lr"), Hyper("beta1"), Hyper("beta2"), Hyper("eps"),
         Hyper("weight_decay", weight_decay),
         Hyper("decoupled_weight_decay", decoupled, field="decoupled", visible=fn == "adam_"),
         Hyper("amsgrad"),
         Hyper("max_exp_avg_sqs", None, None, None, slot=2, used=_amsgrad),
         Hyper("maximize")), True,
        doc, "", classes=False, kernel="adam_",
        requires=((_amsgrad, "max_exp_avg_sqs", "amsgrad=True"),))


def _nadam_prepare(fn, values):
    from .reference.nadam import nadam_mu, nadam_mu_product
    step, beta1, md = values["step"], values["beta1"], values["momentum_decay"]
    mu_product = values["mu_product"]
    if mu_product is None:
        mu_product = nadam_mu_product(step, beta1, md)
    else:
        mu_product = chk.in_range(fn, "mu_product", mu_product, 0.0, 1.0, False)
    return {"mu": nadam_mu(step, beta1, md), "mu_next": nadam_mu(step + 1, beta1, md),
            "mu_product": mu_product}


def _one_buffer(tensors):
    """The 1-d tensor whose elements, in order, ``tensors`` are views of; None if they are not."""
    base = tensors[0]._base
    if base is None or base.dim() != 1 or base.numel() != len(tensors) or base.stride(0) != 1:
        return None
    start = base.storage_offset()
    for i, t in enumerate(tensors):
        if t._base is not base or t.storage_offset() != start + i:
            return None
    return base


def _nadam_advance(group, st, step, found_inf):
    """ft.torch: torch's float32 mu_product *= mu_t per param (skipped with found_inf), then one
    kernel call per distinct product (Note [NAdam mu product] in reference/nadam.py)."""
    from .reference.nadam import nadam_mu
    step = int(step.item()) if hasattr(step, "item") else int(step)
    if found_inf is not None and float(found_inf.item() if hasattr(found_inf, "item")
                                       else found_inf) != 0:
        return [(None, {"step": step})]
    mu = nadam_mu(step, float(group["betas"][0]), group["momentum_decay"])
    import torch
    products = st["mu_product"]
    base = _one_buffer(products)
    if base is not None:         # views of one buffer (ft.torch's buckets): one op, one read
        base.mul_(mu)
        values = base.tolist()
    else:
        torch._foreach_mul_(products, mu)
        values = torch.stack(products).tolist()
    by_value = {}
    for i, v in enumerate(values):
        by_value.setdefault(v, []).append(i)
    return [(idx, {"step": step, "mu_product": v}) for v, idx in by_value.items()]


# NAdam: Dozat 2016, as torch.optim.NAdam.
def _nadam():
    return Spec(
        "NAdam", "nadam_", "NadamOptions", (("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq")),
        (Hyper("lr"), Hyper("beta1"), Hyper("beta2"), Hyper("eps"), Hyper("weight_decay"),
         Hyper("momentum_decay", 4e-3, "nonnegative", field=None),   # host-side: mu_t
         Hyper("decoupled_weight_decay", field="decoupled"),
         Hyper("mu_product", None, None, None, group=False),
         Hyper("maximize", keyword_only=True)),
        True,
        """NAdam, ``torch.optim.NAdam``: Adam with Nesterov momentum (Dozat 2016).

    L2 decay ``g = grad + weight_decay * p``, or decoupled ``p *= 1 - lr * weight_decay``;
    ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))``, ``P_t = mu_1 * ... * mu_t``;
    ``m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;
    denom = sqrt(v / (1 - beta2**t)) + eps``;
    ``p -= lr * (1 - mu_t) / (1 - P_t) * g / denom
    + lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / denom``.
    ``mu_product`` is ``P_t`` as torch's state keeps it after this step (float32); None computes
    it from ``step`` (constant beta1 and momentum_decay).  ``step`` is read on the host.

    Textbook form: Dozat 2016, "Incorporating Nesterov Momentum into Adam", Algorithm 2
    (``m^ = mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g / (1 - prod_{i<=t} mu_i);
    theta <- theta - lr m^ / (sqrt(n^) + eps)``), Adam's (Goodfellow et al. Algorithm 8.7)
    first moment replaced by its Nesterov look-ahead.
    """,
        "NAdam (``torch.optim.NAdam``; :func:`fusedtrain.nadam_`).",
        prepare=_nadam_prepare, scalar_state={"mu_product": 1.0},
        advance=_nadam_advance, host_step=True)


# Every functional rule, in the order of the public API; SPECS: those whose classes are
# generated too (the older rules' classes are written out above, with torch's own quirks).
FUNCTIONS = {s.fn: s for s in (
    _sgd_fn(), _momentum_fn(), _adagrad_fn(), _rmsprop_fn(), _adadelta_fn(),
    _adam_fn("adam_", DOCS_ADAM), _adam_fn("adamw_", DOCS_ADAMW, 0.01, True),
    _lion(), _nadam())}
SPECS = {s.name: s for s in FUNCTIONS.values() if s.classes}
RULES = {r.name: r for r in _written_rules()}
RULES.update({name: s.rule() for name, s in SPECS.items()})
