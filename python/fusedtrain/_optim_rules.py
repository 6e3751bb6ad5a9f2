"""The six optimizer classes as one table: hyperparameters, state each needs, and the fused call.

Shared by ``ft.optim`` (NumPy/CuPy) and ``ft.torch`` (torch.optim subclasses). Group dicts use
torch.optim's keys (``betas``, ``initial_accumulator_value``, ...) and state uses torch's names
(``exp_avg``, ``sum``, ...), so both layers speak torch.optim's state layout.
"""
from dataclasses import dataclass
from typing import Callable

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


def _check(name, group, **ranges):
    """ValueError naming the hyperparameter; ranges: key -> (low, high, high_inclusive)."""
    for key, (low, high, incl) in ranges.items():
        value = group[key]
        try:
            if high is None:
                chk.at_least(name, key, value, low)
            else:
                chk.in_range(name, key, value, low, high, incl)
        except TypeError as e:
            raise ValueError(str(e)) from None


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
    _check("SGD", g, momentum=(0.0, None, None), weight_decay=(0.0, None, None))
    if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
        raise ValueError("SGD: nesterov requires momentum > 0 and dampening == 0")


def _adagrad_call(g, params, grads, st, step, lr, **common):
    F.adagrad_(params, grads, st["sum"], step=step, lr=lr, lr_decay=g["lr_decay"],
               weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"], **common)


def _adagrad_validate(g):
    _check("Adagrad", g, lr_decay=(0.0, None, None), weight_decay=(0.0, None, None),
           initial_accumulator_value=(0.0, None, None), eps=(0.0, None, None))


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
    _check("RMSprop", g, alpha=(0.0, 1.0, True), eps=(0.0, None, None),
           weight_decay=(0.0, None, None), momentum=(0.0, None, None))
    if g.get("nesterov", False) and g["momentum"] <= 0:
        raise ValueError("RMSprop: nesterov requires momentum > 0")


def _adadelta_call(g, params, grads, st, step, lr, **common):
    F.adadelta_(params, grads, st["square_avg"], st["acc_delta"], lr=lr, rho=g["rho"],
                eps=g["eps"], weight_decay=g["weight_decay"], maximize=g["maximize"], **common)


def _adadelta_validate(g):
    _check("Adadelta", g, rho=(0.0, 1.0, True), eps=(0.0, None, None),
           weight_decay=(0.0, None, None))


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
    betas = g["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    _check(name, {"beta1": betas[0], "beta2": betas[1], **g}, beta1=(0.0, 1.0, False),
           beta2=(0.0, 1.0, False), eps=(0.0, None, None), weight_decay=(0.0, None, None))


_COMMON = {"maximize": False}

RULES = {r.name: r for r in [
    Rule("SGD", {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                 "nesterov": False, **_COMMON}, False, _sgd_state, _sgd_call, _sgd_validate),
    Rule("Adagrad", {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
                     "initial_accumulator_value": 0.0, "eps": 1e-10, **_COMMON}, True,
         lambda g: {"sum": g["initial_accumulator_value"]}, _adagrad_call, _adagrad_validate),
    Rule("RMSprop", {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                     "centered": False, "nesterov": False, **_COMMON}, True, _rmsprop_state,
         _rmsprop_call, _rmsprop_validate),
    Rule("Adadelta", {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, **_COMMON}, True,
         lambda g: {"square_avg": 0.0, "acc_delta": 0.0}, _adadelta_call, _adadelta_validate),
    Rule("Adam", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "amsgrad": False, "decoupled_weight_decay": False, **_COMMON}, True,
         _adam_state, _adam_call, _adam_validate),
    Rule("AdamW", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2,
                   "amsgrad": False, "decoupled_weight_decay": True, **_COMMON}, True,
         _adam_state, _adam_call, lambda g: _adam_validate(g, "AdamW")),
]}
