"""The optimizer rules the benchmarks time: the fusedtrain call, the matching torch.optim class, bytes moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass(frozen=True)
class Rule:
    name: str
    # Minimum DRAM traffic per fp32 element: every array read once, every written array written
    # once (p, g read; p written = 12). Write-allocate reads are not counted, as in STREAM.
    bytes_per_param: int
    ft_fn: str
    state_args: tuple[str, ...] = ()        # state lists passed positionally after grads
    state_kwargs: tuple[str, ...] = ()      # state lists passed by keyword (amsgrad's max buffer)
    takes_step: bool = False
    hyper: dict = field(default_factory=dict)        # the same numbers go to both libraries
    torch_cls: str = ""
    torch_hyper: dict = field(default_factory=dict)


RULES: tuple[Rule, ...] = (
    Rule("sgd", 12, "sgd_", hyper={"lr": 0.01},
         torch_cls="SGD", torch_hyper={"lr": 0.01}),
    Rule("momentum", 20, "momentum_", ("momentum_buffers",), takes_step=True,
         hyper={"lr": 0.01, "momentum": 0.9},
         torch_cls="SGD", torch_hyper={"lr": 0.01, "momentum": 0.9}),
    Rule("adagrad", 20, "adagrad_", ("state_sums",), takes_step=True, hyper={"lr": 0.01},
         torch_cls="Adagrad", torch_hyper={"lr": 0.01}),
    Rule("rmsprop", 20, "rmsprop_", ("square_avgs",), hyper={"lr": 0.01, "alpha": 0.99},
         torch_cls="RMSprop", torch_hyper={"lr": 0.01, "alpha": 0.99}),
    Rule("adadelta", 28, "adadelta_", ("square_avgs", "acc_deltas"), hyper={"lr": 1.0, "rho": 0.9},
         torch_cls="Adadelta", torch_hyper={"lr": 1.0, "rho": 0.9}),
    Rule("adam", 28, "adam_", ("exp_avgs", "exp_avg_sqs"), takes_step=True, hyper={"lr": 1e-3},
         torch_cls="Adam", torch_hyper={"lr": 1e-3}),
    Rule("adamw", 28, "adamw_", ("exp_avgs", "exp_avg_sqs"), takes_step=True,
         hyper={"lr": 1e-3, "weight_decay": 0.01},
         torch_cls="AdamW", torch_hyper={"lr": 1e-3, "weight_decay": 0.01}),
    Rule("amsgrad", 36, "adam_", ("exp_avgs", "exp_avg_sqs"), ("max_exp_avg_sqs",), takes_step=True,
         hyper={"lr": 1e-3, "amsgrad": True},
         torch_cls="Adam", torch_hyper={"lr": 1e-3, "amsgrad": True}),
    Rule("lion", 20, "lion_", ("exp_avgs",), hyper={"lr": 1e-4, "weight_decay": 0.1}),  # no torch Lion
    Rule("nadam", 28, "nadam_", ("exp_avgs", "exp_avg_sqs"), takes_step=True, hyper={"lr": 2e-3},
         torch_cls="NAdam", torch_hyper={"lr": 2e-3}),
)

RULES_BY_NAME = {r.name: r for r in RULES}

# How torch.optim is asked for each of its implementations.
TORCH_IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_ft_step(ft, rule: Rule, params: Sequence, grads: Sequence,
                 zeros_like: Callable) -> Callable[[], None]:
    """Allocates the rule's state (zeros) and returns a closure doing one step per call.

    The closure counts steps itself, like an optimizer would, so bias corrections and the
    first-step special cases behave as in training rather than being stuck at step 1.
    """
    fn = getattr(ft, rule.ft_fn)
    positional = [[zeros_like(p) for p in params] for _ in rule.state_args]
    keyword = {name: [zeros_like(p) for p in params] for name in rule.state_kwargs}
    hyper = dict(rule.hyper)
    counter = [0]

    if rule.takes_step:
        def step():
            counter[0] += 1
            fn(params, grads, *positional, step=counter[0], **keyword, **hyper)
    else:
        def step():
            fn(params, grads, *positional, **keyword, **hyper)
    return step


def make_torch_optimizer(torch, rule: Rule, params: Sequence, impl: str):
    """torch.optim.<cls>(params, **hyper, **impl flags); raises if torch refuses the combination."""
    cls = getattr(torch.optim, rule.torch_cls)
    return cls(params, **rule.torch_hyper, **TORCH_IMPLS[impl])
