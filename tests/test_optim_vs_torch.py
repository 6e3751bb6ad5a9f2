"""Multi-step trajectories of the kernels against torch.optim (foreach=False) in float32 and float64."""

import numpy as np
import pytest

import fusedtrain as ft
from optim_cases import CASES
from precisions import FULL, Tolerance, assert_close
from stepping import seed_for

STEPS = 20
SHAPES = [(7,), (17, 241), (1,)]

TOL = {"float32": Tolerance(2e-5, 2e-6), "float64": Tolerance(1e-10, 1e-12)}


def _torch_twin_exists(case):
    return case.torch_twin() is not None


@pytest.mark.parametrize("precision", FULL, ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if _torch_twin_exists(c)], ids=str)
def test_trajectory_matches_torch(case, precision, isa, torch):
    rng = np.random.default_rng(seed_for(case, precision, "torch"))
    dtype = np.dtype(precision.param)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    state = {n: [np.full(s, case.state_init.get(n, 0.0), dtype=dtype) for s in SHAPES] for n in case.state_names}
    torch_params = [torch.tensor(p, requires_grad=True) for p in params]
    opt = case.torch_optimizer(torch, torch_params)
    scale = case.grad_scale or 1.0

    rule = case.rule
    for k in range(1, STEPS + 1):
        grads = [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]
        kwargs = {n: state[n] for n in rule.keyword_state(case.options)}
        if rule.takes_step:
            kwargs["step"] = k
        getattr(ft, rule.name)(params, grads, *[state[n] for n in rule.positional_state],
                               **kwargs, **case.options)
        # torch has no grad_scale on this path, so it gets the grads already divided.
        for tp, g in zip(torch_params, grads):
            tp.grad = torch.from_numpy(g / dtype.type(scale))
        opt.step()

    tol = TOL[precision.param]
    for i, tp in enumerate(torch_params):
        assert_close(params[i], tp.detach().numpy(), tol, f"params[{i}]")
        for name in case.state_names:
            key = rule.torch_state[name]
            assert_close(state[name][i], opt.state[tp][key].numpy(), tol, f"{name}[{i}] vs torch {key}")
