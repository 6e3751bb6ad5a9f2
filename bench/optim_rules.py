"""The optimizer rules the scripts time: fusedtrain.bench.optim's table (generated from the rule
table, Note [bench rules]) with torch.optim's three implementations as the scripts name them."""

from __future__ import annotations

from typing import Callable, Sequence

from fusedtrain.bench.optim import RULES, RULES_BY_NAME, Rule, stepper, torch_optimizer  # noqa: F401

# How torch.optim is asked for each of its implementations.
TORCH_IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_ft_step(ft, rule: Rule, params: Sequence, grads: Sequence,
                 zeros_like: Callable) -> Callable[[], None]:
    """Allocates the rule's state (zeros) and returns a closure doing one step per call."""
    return stepper(ft, rule, params, grads, zeros_like)


def make_torch_optimizer(torch, rule: Rule, params: Sequence, impl: str):
    """torch.optim.<cls>(params, **hyper, **impl flags); raises if torch refuses the combination."""
    return torch_optimizer(torch, rule, params, TORCH_IMPLS[impl])
