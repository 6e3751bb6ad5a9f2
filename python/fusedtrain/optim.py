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
from ._optim_base import Optimizer
import inspect

from ._optim_rules import RULES, SPECS
from .fullbatch import LBFGS, ConjugateGradient

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "LBFGS",
           "ConjugateGradient"]


class SGD(Optimizer):
    """SGD, momentum and Nesterov momentum (``torch.optim.SGD``; :func:`fusedtrain.momentum_`)."""
    _rule = RULES["SGD"]

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, max_grad_norm=None, ema_decay=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, max_grad_norm=max_grad_norm,
                                      ema_decay=ema_decay))


class Adagrad(Optimizer):
    """AdaGrad (``torch.optim.Adagrad``; :func:`fusedtrain.adagrad_`)."""
    _rule = RULES["Adagrad"]

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False, max_grad_norm=None,
                 ema_decay=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize, max_grad_norm=max_grad_norm,
                                      ema_decay=ema_decay))


class RMSprop(Optimizer):
    """RMSProp (``torch.optim.RMSprop``), plus ``nesterov`` (Goodfellow et al. Algorithm 8.6;
    :func:`fusedtrain.rmsprop_`)."""
    _rule = RULES["RMSprop"]

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, nesterov=False, maximize=False, max_grad_norm=None,
                 ema_decay=None):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, nesterov=nesterov,
                                      maximize=maximize, max_grad_norm=max_grad_norm,
                                      ema_decay=ema_decay))


class Adadelta(Optimizer):
    """AdaDelta (``torch.optim.Adadelta``; :func:`fusedtrain.adadelta_`)."""
    _rule = RULES["Adadelta"]

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False,
                 max_grad_norm=None, ema_decay=None):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, max_grad_norm=max_grad_norm,
                                      ema_decay=ema_decay))


class Adam(Optimizer):
    """Adam / AMSGrad (``torch.optim.Adam``; :func:`fusedtrain.adam_`)."""
    _rule = RULES["Adam"]

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False,
                 max_grad_norm=None, ema_decay=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, max_grad_norm=max_grad_norm,
                                      ema_decay=ema_decay))


class AdamW(Optimizer):
    """AdamW, decoupled weight decay (``torch.optim.AdamW``; :func:`fusedtrain.adamw_`)."""
    _rule = RULES["AdamW"]

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, max_grad_norm=None, ema_decay=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      decoupled_weight_decay=True, maximize=maximize,
                                      max_grad_norm=max_grad_norm, ema_decay=ema_decay))

    def _validate(self, group):
        group["decoupled_weight_decay"] = True     # as torch.optim.AdamW does on load
        super()._validate(group)


def _make_class(spec):
    """The ft.optim class of a Spec (Note [rule table]): torch.optim's constructor signature,
    plus the keyword-only max_grad_norm and ema_decay every class takes."""
    P = inspect.Parameter
    pos, kw = spec.group_defaults()
    sig = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        + [P(k, P.POSITIONAL_OR_KEYWORD, default=v) for k, v in pos.items()]
        + [P(k, P.KEYWORD_ONLY, default=v) for k, v in {**kw, "max_grad_norm": None,
                                                         "ema_decay": None}.items()])

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        Optimizer.__init__(self, values.pop("params"), values)

    __init__.__signature__ = sig
    return type(spec.name, (Optimizer,), {"__doc__": spec.class_doc, "_rule": RULES[spec.name],
                                          "__init__": __init__, "__module__": __name__})


for _spec in SPECS.values():
    globals()[_spec.name] = _make_class(_spec)
    __all__.insert(__all__.index("AdamW") + 1 + list(SPECS).index(_spec.name), _spec.name)
del _spec
