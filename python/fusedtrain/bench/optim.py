"""Benchmark suite of the optimizer rules: fusedtrain vs torch.optim (foreach, fused) or the NumPy reference."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .cases import OURS, Case, Spec


@dataclass(frozen=True)
class Rule:
    """One optimizer rule as the benchmarks time it: the fusedtrain call and its torch.optim twin
    on the same hyperparameters."""
    name: str
    arrays: int                    # arrays touched once per element: p read+written, g read, ...
    fn: str
    state_args: tuple = ()         # state lists passed positionally after grads
    state_kwargs: tuple = ()       # state lists passed by keyword
    takes_step: bool = False
    hyper: dict = field(default_factory=dict)     # names shared by both libraries
    torch_cls: str = ""            # "": torch.optim has no such rule
    torch_state: tuple = ()        # torch.optim's state key of each list, allocation order

    @property
    def bytes_per_param(self) -> int:
        # Minimum DRAM traffic per fp32 element; write-allocate reads not counted, as in STREAM.
        return 4 * self.arrays


# Note [bench rules]: the rules the benchmarks time come from the rule table (_optim_rules),
# so a new functional rule is timed without an edit here. What the table does not say is
# below: variants of a rule worth their own row, and hyperparameters chosen for timing (a
# nonzero weight decay so Lion's decay pass is part of the time; explicit values kept so the
# recorded results' "hyperparameters" stay the same).
VARIANTS = {"amsgrad": ("adam_", {"lr": 1e-3, "amsgrad": True})}
TIMED_WITH = {"rmsprop": {"alpha": 0.99}, "adadelta": {"rho": 0.9},
              "adamw": {"weight_decay": 0.01}, "lion": {"weight_decay": 0.1}}
REQUIRED_LR = 0.01     # for a rule whose lr has no default


def _torch_twin(spec):
    """The torch.optim class the Spec's docstring names as the rule's twin ("" when none)."""
    m = re.search(r"``torch\.optim\.(\w+)", spec.doc)
    return m.group(1) if m else ""


def _rule(name, spec, hyper=None):
    from .. import _optim_rules as table
    twin = _torch_twin(spec)
    lr = next((h.default for h in spec.hypers if h.name == "lr"), None)
    settings = {} if lr is None else {"lr": REQUIRED_LR if lr is table.REQUIRED else lr}
    cls = table.RULES.get(spec.name or twin)
    if cls is not None:
        # Where the functional's default differs from the class's (torch.optim's), both sides
        # get the functional's value: momentum_ is SGD with momentum, not plain SGD.
        settings.update({h.name: h.default for h in spec.hypers
                         if h.visible and h.slot < 0 and h.name in cls.defaults
                         and h.default is not table.REQUIRED
                         and cls.defaults[h.name] != h.default})
    settings.update(hyper if hyper is not None else TIMED_WITH.get(name, {}))
    values = {h.name: h.default for h in spec.hypers}
    values.update(settings)
    keyword = tuple(lst for pred, lst, _ in spec.requires if pred(values))
    return Rule(name, 3 + 2 * (len(spec.states) + len(keyword)), spec.fn,
                tuple(lst for lst, _ in spec.states), keyword, spec.takes_step, settings, twin,
                tuple(key for _, key in spec.states) + tuple(lst[:-1] for lst in keyword))


def _rules():
    from .._optim_rules import FUNCTIONS
    out = [_rule(spec.fn.rstrip("_"), spec) for spec in FUNCTIONS.values()]
    for name, (fn, hyper) in VARIANTS.items():
        kernel = FUNCTIONS[fn].kernel or fn
        last = max(i for i, r in enumerate(out) if (FUNCTIONS[r.fn].kernel or r.fn) == kernel)
        out.insert(last + 1, _rule(name, FUNCTIONS[fn], hyper))
    return tuple(out)


RULES = _rules()
RULES_BY_NAME = {r.name: r for r in RULES}
QUICK_RULES = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
TORCH_IMPLS = {"torch foreach": {"foreach": True}, "torch fused": {"fused": True}}


def stepper(module, rule, params, grads, zeros_like):
    """Zero state for `rule` and a closure that takes one step per call, counting its steps
    (bias corrections and first-step special cases then behave as in training). The state lists
    are allocated in rule.torch_state's order, positional ones first."""
    fn = getattr(module, rule.fn)
    state = [[zeros_like(p) for p in params] for _ in rule.state_args]
    kw_state = {k: [zeros_like(p) for p in params] for k in rule.state_kwargs}
    hyper = dict(rule.hyper)
    count = [0]

    if rule.takes_step:
        def step():
            count[0] += 1
            fn(params, grads, *state, step=count[0], **kw_state, **hyper)
    else:
        def step():
            fn(params, grads, *state, **kw_state, **hyper)
    return step


def torch_optimizer(torch, rule, params, flags):
    """torch.optim.<twin>(params, **hyper, **flags); raises if torch refuses the combination or
    has no twin."""
    if not rule.torch_cls:
        raise NotImplementedError(f"torch.optim has no {rule.name}")
    return getattr(torch.optim, rule.torch_cls)(params, **rule.hyper, **flags)


def _torch_step(torch, rule, params, grads, impl):
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g
    return torch_optimizer(torch, rule, ps, TORCH_IMPLS[impl]).step


def _workloads(quick, device):
    if device == "cuda":
        big = (16 if quick else 64) << 20
        return [(f"{big >> 20}M x 1", [big]), (f"{big >> 20}M in 256", [big // 256] * 256),
                ("2000 x 4K", [4096] * 2000)]
    if quick:  # 16M floats: each array well above a 32 MiB last-level cache
        return [("16M x 1", [16 << 20]), ("1000 x 1K", [1024] * 1000)]
    return [("16M x 1", [16 << 20]), ("256 x 64K", [64 << 10] * 256), ("1000 x 1K", [1024] * 1000)]


def specs(*, quick, device, torch=None, cupy=None):
    """The cases of this suite for 'cpu' or 'cuda'. CPU without torch compares float64 kernels
    with the float64 NumPy reference (the reference only computes in float64)."""
    import fusedtrain as ft
    rules = [r for r in RULES if not quick or r.name in QUICK_RULES]
    suite = f"{device} optim"
    out = []
    for wname, sizes in _workloads(quick, device):
        for rule in rules:
            out.append(Spec(suite, rule.name, wname,
                            lambda rule=rule, wname=wname, sizes=sizes:
                            _build(ft, rule, wname, sizes, device, torch, cupy, suite)))
    return out


def cpu_data(sizes, dtype="float32", seed=0):
    """Params and grads, one allocation per tensor as a real model has them."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n, dtype=dtype) for n in sizes]
    # Small grads keep every rule's state finite over thousands of timed steps.
    grads = [rng.standard_normal(n, dtype=dtype) * 1e-2 for n in sizes]
    return params, grads


def _build(ft, rule, wname, sizes, device, torch, cupy, suite):
    sync = None
    if device == "cuda" and torch is not None:
        gen = torch.Generator(device="cuda").manual_seed(0)
        params = [torch.randn(n, device="cuda", generator=gen) for n in sizes]
        grads = [torch.randn(n, device="cuda", generator=gen) * 1e-2 for n in sizes]
        dtype, zeros, sync = "float32", torch.zeros_like, torch.cuda.synchronize
    elif device == "cuda":
        rng = cupy.random.default_rng(0)
        params = [rng.standard_normal(n, dtype=cupy.float32) for n in sizes]
        grads = [rng.standard_normal(n, dtype=cupy.float32) * 1e-2 for n in sizes]
        dtype, zeros = "float32", cupy.zeros_like
        sync = cupy.cuda.get_current_stream().synchronize
    else:
        dtype = "float32" if torch is not None else "float64"
        params, grads = cpu_data(sizes, dtype)
        zeros = np.zeros_like
    fns = {OURS: stepper(ft, rule, [p.copy() if hasattr(p, "copy") else p.clone() for p in params],
                         grads, zeros)}
    if device == "cpu" and torch is None:
        from .. import reference
        fns["numpy reference"] = stepper(reference, rule, [p.copy() for p in params], grads, zeros)
    elif torch is not None:
        tp = params if device == "cuda" else [torch.from_numpy(p) for p in params]
        tg = grads if device == "cuda" else [torch.from_numpy(g) for g in grads]
        for impl in TORCH_IMPLS:
            try:
                fns[impl] = _torch_step(torch, rule, tp, tg, impl)
            except Exception:  # noqa: BLE001 - this torch has no such implementation of the rule
                pass
    numel = sum(sizes)
    itemsize = 4 if dtype == "float32" else 8
    return Case(suite, rule.name, wname, dtype, rule.arrays * itemsize * numel, fns, sync,
                {"tensors": len(sizes), "numel": numel})
