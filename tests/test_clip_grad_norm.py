"""clip_grad_norm_ against the float64 reference and torch.nn.utils.clip_grad_norm_."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from precisions import Tolerance, assert_close, dtype_named
from stepping import seed_for

SHAPES = [(0,), (1,), (7,), (4097,), (3, 5)]
TOL = {"float64": Tolerance(1e-12, 1e-14), "float32": Tolerance(1e-5, 1e-6),
       "float16": Tolerance(2.0 ** -10, 2.0 ** -11), "bfloat16": Tolerance(2.0 ** -7, 2.0 ** -8)}


def _grads(dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype_named(dtype)) for s in SHAPES]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "no-clip"])
@pytest.mark.parametrize("dtype", list(TOL))
def test_matches_reference(dtype, max_norm, norm_type, isa):
    grads = _grads(dtype, seed_for("clip", dtype))
    want_grads = [g.copy() for g in grads]
    want = ref.clip_grad_norm_(want_grads, max_norm, norm_type)
    got = ft.clip_grad_norm_(grads, max_norm, norm_type)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=TOL[dtype].rtol)
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        assert_close(g, w, TOL[dtype], f"grads[{i}]")
    if max_norm == 1e6:
        assert ft.global_norm(grads, norm_type) == got, "a norm below max_norm must leave grads as they were"


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch(dtype, norm_type, isa, torch):
    # torch refuses the inf norm of an empty tensor, so only non-empty grads here.
    grads = [g for g in _grads(dtype, seed_for("clip-torch", dtype)) if g.size]
    params = [torch.zeros(g.shape, dtype=getattr(torch, dtype), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())
    want = float(torch.nn.utils.clip_grad_norm_(params, 0.5, norm_type, foreach=False))
    got = ft.clip_grad_norm_(grads, 0.5, norm_type)
    assert got == pytest.approx(want, rel=TOL[dtype].rtol)
    for i, (g, p) in enumerate(zip(grads, params)):
        assert_close(g, p.grad.numpy(), TOL[dtype], f"grads[{i}]")


def test_fused_clipping_under_amp_equals_unscale_clip_step(isa, torch):
    from amp_clip_cases import run_amp_clip_case
    run_amp_clip_case(torch, "cpu")
