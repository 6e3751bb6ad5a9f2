"""Table of update rules x option sets, with the state lists each one needs and its torch.optim twin."""

import inspect
from dataclasses import dataclass, field

import fusedtrain.reference as ref


@dataclass(frozen=True)
class Rule:
    name: str                 # function name in fusedtrain and fusedtrain.reference
    positional_state: tuple   # state lists passed positionally after grads, in call order
    takes_step: bool
    torch_class: str          # torch.optim class with the same semantics
    torch_state: dict         # our state list name -> key in torch's optimizer.state[p]

    def keyword_state(self, options):
        """Optional state lists the given options switch on (passed by keyword)."""
        if self.name in ("adam_", "adamw_") and options.get("amsgrad"):
            return ("max_exp_avg_sqs",)
        if self.name == "rmsprop_":
            return ((("momentum_buffers",) if options.get("momentum", 0) > 0 else ())
                    + (("grad_avgs",) if options.get("centered") else ()))
        return ()

    def defaults(self):
        sig = inspect.signature(getattr(ref, self.name))
        return {k: p.default for k, p in sig.parameters.items()
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


_ADAM_STATE = {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq", "max_exp_avg_sqs": "max_exp_avg_sq"}

RULES = {r.name: r for r in [
    Rule("sgd_", (), False, "SGD", {}),
    Rule("momentum_", ("momentum_buffers",), True, "SGD", {"momentum_buffers": "momentum_buffer"}),
    Rule("adagrad_", ("state_sums",), True, "Adagrad", {"state_sums": "sum"}),
    Rule("rmsprop_", ("square_avgs",), False, "RMSprop",
         {"square_avgs": "square_avg", "momentum_buffers": "momentum_buffer", "grad_avgs": "grad_avg"}),
    Rule("adadelta_", ("square_avgs", "acc_deltas"), False, "Adadelta",
         {"square_avgs": "square_avg", "acc_deltas": "acc_delta"}),
    Rule("adam_", ("exp_avgs", "exp_avg_sqs"), True, "Adam", _ADAM_STATE),
    Rule("adamw_", ("exp_avgs", "exp_avg_sqs"), True, "AdamW", _ADAM_STATE),
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

    def torch_optimizer(self, torch, params):
        """The torch.optim optimizer (foreach=False) with the same semantics, or None if torch has none."""
        o = {**self.rule.defaults(), **self.hyper}
        name = self.rule.name
        if name == "sgd_":
            kw = dict(lr=o["lr"], weight_decay=o["weight_decay"], maximize=o["maximize"])
        elif name == "momentum_":
            kw = dict(lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"], nesterov=o["nesterov"],
                      weight_decay=o["weight_decay"], maximize=o["maximize"])
        elif name == "adagrad_":
            kw = dict(lr=o["lr"], lr_decay=o["lr_decay"], weight_decay=o["weight_decay"], eps=o["eps"],
                      maximize=o["maximize"], initial_accumulator_value=self.state_init.get("state_sums", 0.0))
        elif name == "rmsprop_":
            if o["nesterov"]:
                return None      # torch's RMSprop has no Nesterov variant
            kw = dict(lr=o["lr"], alpha=o["alpha"], eps=o["eps"], weight_decay=o["weight_decay"],
                      momentum=o["momentum"], centered=o["centered"], maximize=o["maximize"])
        elif name == "adadelta_":
            kw = dict(lr=o["lr"], rho=o["rho"], eps=o["eps"], weight_decay=o["weight_decay"],
                      maximize=o["maximize"])
        else:
            kw = dict(lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"],
                      amsgrad=o["amsgrad"], maximize=o["maximize"])
            if o.get("decoupled_weight_decay"):
                return torch.optim.AdamW(params, foreach=False, **kw)
        return getattr(torch.optim, self.rule.torch_class)(params, foreach=False, **kw)


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
)

# The first option set of each rule: the one the expensive (large, many-tensor) cases use.
FIRST_OF_EACH_RULE = [next(c for c in CASES if c.rule is r) for r in RULES.values()]
