"""Benchmark suite of the optimizer rules: fusedtrain vs torch.optim (foreach, fused) or the NumPy reference."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cases import OURS, Case, Spec


@dataclass(frozen=True)
class Rule:
    name: str
    arrays: int                    # arrays touched once per element: p read+written, g read, ...
    fn: str
    state: int = 0                 # state lists passed positionally after grads
    keyword_state: tuple = ()      # state lists passed by keyword
    takes_step: bool = False
    hyper: dict = field(default_factory=dict)     # names shared by both libraries
    torch_cls: str = ""


RULES = (
    Rule("sgd", 3, "sgd_", hyper={"lr": 0.01}, torch_cls="SGD"),
    Rule("momentum", 5, "momentum_", 1, takes_step=True, hyper={"lr": 0.01, "momentum": 0.9},
         torch_cls="SGD"),
    Rule("adagrad", 5, "adagrad_", 1, takes_step=True, hyper={"lr": 0.01}, torch_cls="Adagrad"),
    Rule("rmsprop", 5, "rmsprop_", 1, hyper={"lr": 0.01, "alpha": 0.99}, torch_cls="RMSprop"),
    Rule("adadelta", 7, "adadelta_", 2, hyper={"lr": 1.0, "rho": 0.9}, torch_cls="Adadelta"),
    Rule("adam", 7, "adam_", 2, takes_step=True, hyper={"lr": 1e-3}, torch_cls="Adam"),
    Rule("adamw", 7, "adamw_", 2, takes_step=True, hyper={"lr": 1e-3, "weight_decay": 0.01},
         torch_cls="AdamW"),
    Rule("amsgrad", 9, "adam_", 2, ("max_exp_avg_sqs",), takes_step=True,
         hyper={"lr": 1e-3, "amsgrad": True}, torch_cls="Adam"),
    Rule("lion", 5, "lion_", 1, hyper={"lr": 1e-4, "weight_decay": 0.1}),   # torch has no Lion
    Rule("nadam", 7, "nadam_", 2, takes_step=True, hyper={"lr": 2e-3}, torch_cls="NAdam"),
)
QUICK_RULES = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
TORCH_IMPLS = {"torch foreach": {"foreach": True}, "torch fused": {"fused": True}}


def stepper(module, rule, params, grads, zeros_like):
    """Zero state for `rule` and a closure that takes one step per call, counting its steps
    (bias corrections and first-step special cases then behave as in training)."""
    fn = getattr(module, rule.fn)
    state = [[zeros_like(p) for p in params] for _ in range(rule.state)]
    kw_state = {k: [zeros_like(p) for p in params] for k in rule.keyword_state}
    count = [0]

    def step():
        count[0] += 1
        extra = {"step": count[0]} if rule.takes_step else {}
        fn(params, grads, *state, **kw_state, **extra, **rule.hyper)
    return step


def _torch_step(torch, rule, params, grads, impl):
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g
    opt = getattr(torch.optim, rule.torch_cls)(ps, **rule.hyper, **TORCH_IMPLS[impl])
    return opt.step


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
        rng = np.random.default_rng(0)
        params = [rng.standard_normal(n, dtype=dtype) for n in sizes]
        # Small grads keep every rule's state finite over thousands of timed steps.
        grads = [rng.standard_normal(n, dtype=dtype) * 1e-2 for n in sizes]
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
