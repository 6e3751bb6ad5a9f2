"""Table of invalid calls (bad arrays, bad hyperparameters, missing buffers) and the error each must raise."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from optim_cases import RULES
from precisions import dtype_named

SHAPES = [(9,), (4, 3), (1,), (33,), (5,)]
BAD = 3   # late, so a naive implementation would already have written params[0..2]
# A state list the options need but the call left out: the contract allows either error type.
MISSING = (TypeError, ValueError)


def valid_call(target, param_dtype="float32"):
    """(positional argument names, {name: value}) of a call that succeeds."""
    rng = np.random.default_rng(7)
    pdt = dtype_named(param_dtype)
    half = param_dtype in ("float16", "bfloat16")
    sdt = np.float32 if half else pdt

    def arrays(dtype, positive=False):
        out = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]
        return [np.abs(a) for a in out] if positive else out

    if target == "global_norm":
        return ["arrays"], {"arrays": arrays(pdt), "norm_type": 2.0}
    if target == "clip_grad_norm_":
        return ["grads"], {"grads": arrays(pdt), "max_norm": 0.1}
    if target == "ema_":
        return ["averages", "params"], {"averages": arrays(sdt), "params": arrays(pdt), "decay": 0.9}
    rule = RULES[target]
    options = rule.widest
    call = {"params": arrays(pdt), "grads": arrays(pdt)}
    for name in rule.positional_state + rule.keyword_state(options):
        # Square averages must be >= grad_avg**2 for centered RMSProp to stay real.
        call[name] = arrays(sdt, positive=name != "grad_avgs")
    if half:
        call["master_params"] = [p.astype(np.float32) for p in call["params"]]
    call.update(options)
    return ["params", "grads", *rule.positional_state], call


@dataclass(frozen=True)
class BadInput:
    target: str
    label: str
    mutate: Callable            # edits the {name: value} call in place
    error: type             # or a tuple of accepted types
    names: tuple                # the message must contain one of these
    param_dtype: str = "float32"
    hyper: bool = False         # a scalar-argument error the reference must raise too

    @property
    def id(self):
        return f"{self.target}-{self.label}-{self.param_dtype}"

    def __str__(self):
        return self.id


# --- mutations of one list argument -------------------------------------------------------

def _replace(name, make):
    def mutate(call):
        items = list(call[name])
        items[BAD] = make(items[BAD])
        call[name] = items
    return mutate


def _set(**values):
    return lambda call: call.update(values)


def _noncontiguous(a):
    # Same shape and dtype, but every other element of a larger buffer.
    return np.repeat(a.reshape(-1), 2).reshape(-1)[::2].reshape(a.shape)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _list_of_arrays_cases(target, name, written, param_dtype="float32", same_dtype=None, alone=False,
                          optional=False):
    at = f"{name}[{BAD}]"
    # ema_ may report a mismatch against either of its two lists.
    mismatch = (at, f"params[{BAD}]") if target == "ema_" else (at,)
    cases = [] if alone else [
        BadInput(target, f"{name}-short", lambda c: c.update({name: list(c[name])[:-1]}), ValueError, (name,),
                 param_dtype)]
    cases += [
        # An optional list left out while the options need it may be reported either way.
        BadInput(target, f"{name}-none-list", _set(**{name: None}), MISSING if optional else TypeError, (name,),
                 param_dtype),
        BadInput(target, f"{name}-none-item", _replace(name, lambda a: None), TypeError, (at,), param_dtype),
        BadInput(target, f"{name}-python-list-item", _replace(name, lambda a: a.ravel().tolist()), TypeError,
                 (at,), param_dtype),
        BadInput(target, f"{name}-noncontiguous", _replace(name, _noncontiguous), ValueError, (at,), param_dtype),
    ]
    if name != "params" and not alone:
        # Against which list a wrong shape is reported is only unambiguous for the non-leading ones.
        cases.append(BadInput(target, f"{name}-shape", _replace(name, lambda a: np.zeros(a.size + 1, a.dtype)),
                              ValueError, mismatch, param_dtype))
    if same_dtype is not None:
        cases.append(BadInput(target, f"{name}-dtype-{same_dtype}", _replace(name, lambda a: a.astype(same_dtype)),
                              TypeError, mismatch, param_dtype))
    if written:
        cases.append(BadInput(target, f"{name}-readonly", _replace(name, _readonly), ValueError, (at,),
                              param_dtype))
    return cases


def _hyper(target, label, error=ValueError, names=None, **values):
    return BadInput(target, label, _set(**values), error, names or tuple(values), hyper=True)


def _scalar(target, label, **values):
    # A scalar only the kernels check (arrays read on the host, numbers out of float64's range):
    # the float64 reference takes plain numbers and has no opinion.
    return BadInput(target, label, _set(**values), ValueError, tuple(values))


def _host_scalar_cases(target, takes_step):
    """lr / step / grad_scale as numbers and as 1-element CPU arrays (Note [host scalars])."""
    one = lambda v: np.array([v], np.float64)
    cases = [_scalar(target, "lr-array-negative", lr=one(-1.0)),
             _scalar(target, "lr-array-nan", lr=one(np.nan)),
             _scalar(target, "lr-beyond-float64", lr=10 ** 400),
             _scalar(target, "weight-decay-beyond-float64", weight_decay=-10 ** 400),
             _scalar(target, "grad-scale-zero", grad_scale=0.0),
             _scalar(target, "grad-scale-negative", grad_scale=-2.0),
             _scalar(target, "grad-scale-nan", grad_scale=float("nan")),
             _scalar(target, "grad-scale-inf", grad_scale=float("inf")),
             _scalar(target, "grad-scale-beyond-float64", grad_scale=10 ** 400),
             _scalar(target, "grad-scale-array-zero", grad_scale=one(0.0)),
             _scalar(target, "grad-scale-array-nan", grad_scale=np.array([np.nan], np.float32))]
    if takes_step:
        cases += [_scalar(target, "step-array-zero", step=one(0.0)),
                  _scalar(target, "step-array-negative", step=one(-3.0)),
                  _scalar(target, "step-array-nan", step=one(np.nan)),
                  _scalar(target, "step-array-fractional", step=one(1.5)),
                  _scalar(target, "step-array-huge", step=one(1e30)),
                  _scalar(target, "step-array-inf", step=np.array([np.inf], np.float32)),
                  _scalar(target, "step-beyond-2-53", step=2 ** 53 + 1),
                  _scalar(target, "step-beyond-int64", step=10 ** 30)]
    return cases


def _rule_cases(target):
    rule = RULES[target]
    state = rule.positional_state + rule.keyword_state(rule.widest)
    cases = _list_of_arrays_cases(target, "params", True)
    cases += _list_of_arrays_cases(target, "grads", False, same_dtype="float64")
    for name in state:
        cases += _list_of_arrays_cases(target, name, True, same_dtype="float64",
                                       optional=name not in rule.positional_state)
    # Half params: state and master must be float32, grads half or float32.
    if state:
        cases.append(BadInput(target, "half-state-float16", _replace(state[0], lambda a: a.astype(np.float16)),
                              TypeError, (f"{state[0]}[{BAD}]",), "float16"))
    cases += [
        BadInput(target, "half-grads-float64", _replace("grads", lambda a: a.astype(np.float64)), TypeError,
                 (f"grads[{BAD}]",), "float16"),
        BadInput(target, "master-short", lambda c: c.update(master_params=c["master_params"][:-1]), ValueError,
                 ("master_params",), "float16"),
        BadInput(target, "master-dtype", _replace("master_params", lambda a: a.astype(np.float16)), TypeError,
                 (f"master_params[{BAD}]",), "float16"),
        BadInput(target, "master-shape", _replace("master_params", lambda a: np.zeros(a.size + 1, a.dtype)),
                 ValueError, (f"master_params[{BAD}]",), "float16"),
        BadInput(target, "master-readonly", _replace("master_params", _readonly), ValueError,
                 (f"master_params[{BAD}]",), "float16"),
        BadInput(target, "master-with-float32-params",
                 lambda c: c.update(master_params=[p.copy() for p in c["params"]]), ValueError, ("master_params",)),
        BadInput(target, "grads-float16-for-float32", _replace("grads", lambda a: a.astype(np.float16)),
                 TypeError, (f"grads[{BAD}]",)),
        BadInput(target, "found-inf-two-elements", _set(found_inf=np.zeros(2, np.float32)), ValueError,
                 ("found_inf",)),
    ]
    cases += [_hyper(target, "lr-negative", lr=-0.1), _hyper(target, "lr-nan", lr=float("nan")),
              _hyper(target, "weight-decay-negative", weight_decay=-0.1)]
    cases += _host_scalar_cases(target, rule.takes_step)
    cases += [_hyper(target, label, error=error, names=names, **values)
              for label, values, error, names in rule.bad_hypers]
    return cases


def _utility_cases():
    cases = []
    cases += _list_of_arrays_cases("global_norm", "arrays", False, alone=True)
    cases += [_hyper("global_norm", "norm-type-zero", norm_type=0.0),
              _hyper("global_norm", "norm-type-negative", norm_type=-2.0)]
    cases += _list_of_arrays_cases("clip_grad_norm_", "grads", True, alone=True)
    cases += [_hyper("clip_grad_norm_", "max-norm-negative", max_norm=-1.0),
              _hyper("clip_grad_norm_", "norm-type-zero", norm_type=0.0)]
    cases += _list_of_arrays_cases("ema_", "averages", True, same_dtype="float64")
    cases += _list_of_arrays_cases("ema_", "params", False)
    cases += [_hyper("ema_", "decay-above-one", decay=1.5), _hyper("ema_", "decay-negative", decay=-0.1)]
    return cases


CASES = [c for target in RULES for c in _rule_cases(target)] + _utility_cases()
