"""Table of update rules x option sets, with the state lists each one needs and its torch.optim twin."""

import inspect
from dataclasses import dataclass, field
from typing import Callable

import fusedtrain.reference as ref


def _bad(label, error=ValueError, names=None, **values):
    """A hyperparameter error case of a rule: (label, call values, error type, names)."""
    return (label, values, error, names or tuple(values))


# A state list the options need but the call left out: the contract allows either error type.
MISSING = (TypeError, ValueError)


@dataclass(frozen=True)
class Rule:
    """Everything the tests know about one rule, as PyTorch's OptimizerInfo: no test branches on
    a rule's name."""
    name: str                 # function name in fusedtrain and fusedtrain.reference
    positional_state: tuple   # state lists passed positionally after grads, in call order
    takes_step: bool
    torch_twin: Callable      # (options with defaults, case) -> (torch.optim class, kwargs) or None
    torch_state: dict         # our state list name -> key in torch's optimizer.state[p]
    switches: tuple = ()      # (optional state list, predicate on the options) it switches on
    widest: dict = field(default_factory=dict)   # options that make every state list take part
    bad_hypers: tuple = ()    # _bad(...) cases: hyperparameters the call and reference reject
    sign_state: str = ""      # the state whose interpolation with g a sign() reads (Lion)
    torch_fused: bool = False  # the torch twin has fused CUDA kernels (fused=True)
    # What generated calls keep to, so that a drawn flag is not rejected for the others' values:
    flag_needs: tuple = ()    # (flag, {option: value, or a (low, high) range to draw from})
    # option -> (low, high): its default leaves a state list out, so calls set it half the time
    off_by_default: dict = field(default_factory=dict)

    def keyword_state(self, options):
        """Optional state lists the given options switch on (passed by keyword)."""
        return tuple(n for n, on in self.switches if on(options))

    def defaults(self):
        sig = inspect.signature(getattr(ref, self.name))
        return {k: p.default for k, p in sig.parameters.items()
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


_ADAM_STATE = {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq", "max_exp_avg_sqs": "max_exp_avg_sq"}
_AMSGRAD = (("max_exp_avg_sqs", lambda o: bool(o.get("amsgrad"))),)
_EPS = (_bad("eps-negative", eps=-1e-8),)
_STEP = (_bad("step-zero", step=0), _bad("step-negative", step=-1))
_OPEN_BETAS = (_bad("beta1-one", beta1=1.0), _bad("beta1-negative", beta1=-0.1),
               _bad("beta2-one", beta2=1.0), _bad("beta2-negative", beta2=-0.1))


def _sgd_twin(o, case):
    return "SGD", dict(lr=o["lr"], weight_decay=o["weight_decay"], maximize=o["maximize"])


def _momentum_twin(o, case):
    return "SGD", dict(lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"],
                       nesterov=o["nesterov"], weight_decay=o["weight_decay"], maximize=o["maximize"])


def _adagrad_twin(o, case):
    return "Adagrad", dict(lr=o["lr"], lr_decay=o["lr_decay"], weight_decay=o["weight_decay"], eps=o["eps"],
                           maximize=o["maximize"],
                           initial_accumulator_value=case.state_init.get("state_sums", 0.0))


def _rmsprop_twin(o, case):
    if o["nesterov"]:
        return None      # torch's RMSprop has no Nesterov variant
    return "RMSprop", dict(lr=o["lr"], alpha=o["alpha"], eps=o["eps"], weight_decay=o["weight_decay"],
                           momentum=o["momentum"], centered=o["centered"], maximize=o["maximize"])


def _adadelta_twin(o, case):
    return "Adadelta", dict(lr=o["lr"], rho=o["rho"], eps=o["eps"], weight_decay=o["weight_decay"],
                            maximize=o["maximize"])


def _adam_twin(o, case):
    kw = dict(lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"],
              amsgrad=o["amsgrad"], maximize=o["maximize"])
    return ("AdamW" if o.get("decoupled_weight_decay") else "Adam"), kw


def _adamw_twin(o, case):
    return "AdamW", _adam_twin(o, case)[1]


def _nadam_twin(o, case):
    return "NAdam", dict(lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                         weight_decay=o["weight_decay"], momentum_decay=o["momentum_decay"],
                         decoupled_weight_decay=o["decoupled_weight_decay"], maximize=o["maximize"])


RULES = {r.name: r for r in [
    Rule("sgd_", (), False, _sgd_twin, {}, widest={"lr": 0.1}, torch_fused=True),
    Rule("momentum_", ("momentum_buffers",), True, _momentum_twin, {"momentum_buffers": "momentum_buffer"},
         widest={"lr": 0.1, "step": 2},
         bad_hypers=(_bad("momentum-negative", momentum=-0.1),) + _STEP,
         flag_needs=(("nesterov", {"dampening": 0.0, "momentum": (0.1, 0.99)}),), torch_fused=True),
    Rule("adagrad_", ("state_sums",), True, _adagrad_twin, {"state_sums": "sum"}, widest={"step": 2},
         bad_hypers=_EPS + _STEP + (_bad("lr-decay-negative", lr_decay=-0.1),)),
    Rule("rmsprop_", ("square_avgs",), False, _rmsprop_twin,
         {"square_avgs": "square_avg", "momentum_buffers": "momentum_buffer", "grad_avgs": "grad_avg"},
         switches=(("momentum_buffers", lambda o: o.get("momentum", 0) > 0),
                   ("grad_avgs", lambda o: bool(o.get("centered")))),
         widest={"centered": True, "momentum": 0.9},
         bad_hypers=_EPS + (_bad("momentum-negative", momentum=-0.1),
                            _bad("alpha-above-one", alpha=1.5), _bad("alpha-negative", alpha=-0.1),
                            _bad("momentum-without-buffers", MISSING, ("momentum_buffers",), momentum_buffers=None),
                            _bad("centered-without-grad-avgs", MISSING, ("grad_avgs",), grad_avgs=None),
                            _bad("nesterov-without-momentum", ValueError, ("nesterov",), nesterov=True,
                                 momentum=0.0, momentum_buffers=None)),
         flag_needs=(("nesterov", {"momentum": (0.1, 0.99)}),),
         off_by_default={"momentum": (0.1, 0.99)}),
    Rule("adadelta_", ("square_avgs", "acc_deltas"), False, _adadelta_twin,
         {"square_avgs": "square_avg", "acc_deltas": "acc_delta"},
         bad_hypers=_EPS + (_bad("rho-above-one", rho=1.1), _bad("rho-negative", rho=-0.1))),
    Rule("adam_", ("exp_avgs", "exp_avg_sqs"), True, _adam_twin, _ADAM_STATE, switches=_AMSGRAD,
         widest={"amsgrad": True, "step": 2},
         bad_hypers=_EPS + _STEP + _OPEN_BETAS + (
             _bad("amsgrad-without-buffers", MISSING, ("max_exp_avg_sqs",), max_exp_avg_sqs=None),),
         torch_fused=True),
    Rule("adamw_", ("exp_avgs", "exp_avg_sqs"), True, _adamw_twin, _ADAM_STATE, switches=_AMSGRAD,
         widest={"amsgrad": True, "step": 2},
         bad_hypers=_EPS + _STEP + _OPEN_BETAS + (
             _bad("amsgrad-without-buffers", MISSING, ("max_exp_avg_sqs",), max_exp_avg_sqs=None),),
         torch_fused=True),
    # torch.optim has no Lion; its betas may be 0 or 1 (the paper's range).
    Rule("lion_", ("exp_avgs",), False, lambda o, case: None, {"exp_avgs": "exp_avg"},
         bad_hypers=(_bad("beta1-above-one", beta1=1.5), _bad("beta1-negative", beta1=-0.1),
                     _bad("beta2-above-one", beta2=1.5), _bad("beta2-negative", beta2=-0.1)),
         sign_state="exp_avgs"),
    Rule("nadam_", ("exp_avgs", "exp_avg_sqs"), True, _nadam_twin,
         {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq"}, widest={"step": 2},
         bad_hypers=_EPS + _STEP + _OPEN_BETAS + (_bad("momentum-decay-negative", momentum_decay=-0.1),)),
]}


@dataclass(frozen=True)
class OptimCase:
    rule: Rule
    label: str
    options: dict                                    # keywords for the call, grad_scale included
    state_init: dict = field(default_factory=dict)   # state list name -> initial constant (else 0)

    @property
    def id(self):
        return f"{self.rule.name}{self.label}"

    def __str__(self):
        return self.id

    @property
    def hyper(self):
        """Options minus grad_scale, which scales the inputs rather than the rule."""
        return {k: v for k, v in self.options.items() if k != "grad_scale"}

    @property
    def grad_scale(self):
        return self.options.get("grad_scale")

    @property
    def state_names(self):
        return self.rule.positional_state + self.rule.keyword_state(self.options)

    def torch_twin(self):
        """(torch.optim class name, constructor keywords) with the same semantics, or None."""
        return self.rule.torch_twin({**self.rule.defaults(), **self.hyper}, self)

    def torch_optimizer(self, torch, params):
        """The torch.optim optimizer (foreach=False) with the same semantics, or None if torch has none."""
        twin = self.torch_twin()
        if twin is None:
            return None
        cls, kw = twin
        return getattr(torch.optim, cls)(params, foreach=False, **kw)


def _cases(rule_name, base, variants):
    rule = RULES[rule_name]
    out = []
    for label, options, *init in variants:
        out.append(OptimCase(rule, f"[{label}]", {**base, **options}, init[0] if init else {}))
    return out


# lr values are large enough that half-precision weights actually move each step. Weight decays
# are irregular: with 0.1, half-precision g and p ten times apart cancel in g + weight_decay*p,
# float32 and float64 leave different residues, and an eps-sized denominator blows those up.
CASES = (
    _cases("sgd_", {"lr": 0.05}, [
        ("plain", {}),
        ("wd", {"weight_decay": 0.0731}),
        ("maximize", {"maximize": True}),
        ("wd-maximize-scaled", {"weight_decay": 0.0731, "maximize": True, "grad_scale": 64.0}),
    ])
    + _cases("momentum_", {"lr": 0.02, "momentum": 0.9}, [
        ("heavy-ball", {}),
        ("dampening", {"dampening": 0.3}),
        ("nesterov", {"nesterov": True}),
        ("nesterov-wd", {"nesterov": True, "weight_decay": 0.0437}),
        ("wd-maximize", {"weight_decay": 0.0437, "maximize": True}),
        ("scaled", {"grad_scale": 3.0}),
    ])
    + _cases("adagrad_", {"lr": 0.05}, [
        ("plain", {}),
        ("lr-decay", {"lr_decay": 0.05}),
        ("wd", {"weight_decay": 0.0731}),
        ("maximize-eps", {"maximize": True, "eps": 1e-3}),
        ("initial-accumulator", {}, {"state_sums": 0.1}),
    ])
    + _cases("rmsprop_", {"lr": 0.01}, [
        ("plain", {}),
        ("centered", {"centered": True}),
        ("momentum", {"momentum": 0.9}),
        ("centered-momentum", {"centered": True, "momentum": 0.9}),
        ("nesterov", {"momentum": 0.9, "nesterov": True}),
        ("centered-nesterov", {"centered": True, "momentum": 0.5, "nesterov": True}),
        ("wd-maximize-alpha", {"weight_decay": 0.0731, "maximize": True, "alpha": 0.9}),
        ("scaled", {"grad_scale": 1024.0}),
    ])
    + _cases("adadelta_", {}, [
        ("plain", {}),
        ("wd-maximize", {"weight_decay": 0.0731, "maximize": True}),
        ("rho-lr-eps", {"rho": 0.95, "lr": 0.5, "eps": 1e-4}),
    ])
    + _cases("adam_", {"lr": 0.01}, [
        ("plain", {}),
        ("l2", {"weight_decay": 0.0731}),
        ("decoupled", {"weight_decay": 0.0731, "decoupled_weight_decay": True}),
        ("amsgrad", {"amsgrad": True}),
        ("maximize", {"maximize": True}),
        ("betas-eps", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
        ("amsgrad-l2-maximize-scaled", {"amsgrad": True, "weight_decay": 0.0731, "maximize": True,
                                        "grad_scale": 1024.0}),
    ])
    + _cases("adamw_", {"lr": 0.01}, [
        ("plain", {}),
        ("amsgrad-wd", {"amsgrad": True, "weight_decay": 0.0731}),
        ("maximize", {"maximize": True}),
    ])
    + _cases("lion_", {"lr": 0.01}, [
        ("plain", {}),
        ("wd", {"weight_decay": 0.0731}),
        ("betas-maximize-scaled", {"beta1": 0.8, "beta2": 0.95, "maximize": True, "grad_scale": 64.0}),
    ])
    + _cases("nadam_", {"lr": 0.01}, [
        ("plain", {}),
        ("l2", {"weight_decay": 0.0731}),
        ("decoupled", {"weight_decay": 0.0731, "decoupled_weight_decay": True}),
        ("momentum-decay-betas-eps", {"momentum_decay": 0.04, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
        ("maximize-scaled", {"maximize": True, "grad_scale": 1024.0}),
    ])
)

# The first option set of each rule: the one the expensive (large, many-tensor) cases use.
FIRST_OF_EACH_RULE = [next(c for c in CASES if c.rule is r) for r in RULES.values()]
