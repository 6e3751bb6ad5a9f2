"""Optimizer classes for NumPy and CuPy params: torch.optim's constructors over the fused kernels.

::

    opt = ft.optim.AdamW(params, lr=ft.schedules.cosine(1e-3, 10_000), max_grad_norm=1.0,
                         ema_decay=0.999)
    opt.step(grads)                  # one fused call per param group
    ckpt = opt.state_dict(); opt.load_state_dict(ckpt)

Every class also takes ``max_grad_norm`` (clip the group's grads to this global 2-norm inside
the step) and ``ema_decay`` (keep ``ema_params``, ``a = decay * a + (1 - decay) * p`` after each
step). ``lr`` may be a number or a schedule (a callable of the steps already taken, see
``ft.schedules``). Any hyperparameter may be set per param group (a list of dicts, as in
torch.optim). See Note [optim classes] in _optim_base.py.
"""
import inspect

from ._optim_base import Optimizer
from ._optim_rules import RULES
from .fullbatch import LBFGS, ConjugateGradient

__all__ = ["Optimizer", *RULES, "LBFGS", "ConjugateGradient"]


def _make_class(rule):
    """The ft.optim class of a rule-table entry (Note [rule table]): torch.optim's constructor
    (the entry's defaults, those in ``keyword_only`` after the *), plus the keyword-only
    max_grad_norm and ema_decay every class takes."""
    P = inspect.Parameter
    extra = {"max_grad_norm": None, "ema_decay": None}
    keys = [k for k in rule.defaults if k not in rule.fixed]
    sig = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        + [P(k, P.POSITIONAL_OR_KEYWORD, default=rule.defaults[k]) for k in keys
           if k not in rule.keyword_only]
        + [P(k, P.KEYWORD_ONLY, default=rule.defaults[k]) for k in rule.keyword_only]
        + [P(k, P.KEYWORD_ONLY, default=v) for k, v in extra.items()])

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = {**bound.arguments, **rule.fixed}
        Optimizer.__init__(self, values["params"],
                           {k: values[k] for k in [*rule.defaults, *extra]})

    def _validate(self, group):
        group.update(rule.fixed)
        Optimizer._validate(self, group)

    __init__.__signature__ = sig
    return type(rule.name, (Optimizer,), {"__doc__": rule.doc, "_rule": rule,
                                          "__init__": __init__, "_validate": _validate,
                                          "__module__": __name__, "__qualname__": rule.name})


for _rule in RULES.values():
    globals()[_rule.name] = _make_class(_rule)
del _rule
