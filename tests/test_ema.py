"""ema_ (Polyak averaging) against the float64 reference and torch's lerp."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from precisions import Tolerance, assert_close, dtype_named
from stepping import seed_for

SHAPES = [(0,), (1,), (7,), (4097,)]
# (params dtype, averages dtype): half weights are averaged in float32.
PAIRS = [("float32", "float32"), ("float64", "float64"), ("float16", "float32"), ("bfloat16", "float32")]


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-avg-{p[1]}")
def test_trajectory_matches_reference(pair, decay, isa):
    param_dtype, avg_dtype = dtype_named(pair[0]), dtype_named(pair[1])
    rng = np.random.default_rng(seed_for("ema", pair, decay))
    averages = [rng.standard_normal(s).astype(avg_dtype) for s in SHAPES]
    want = [a.astype(np.float64) for a in averages]
    for _ in range(20):
        params = [rng.standard_normal(s).astype(np.float32).astype(param_dtype) for s in SHAPES]
        ft.ema_(averages, params, decay=decay)
        ref.ema_(want, params, decay=decay)
    tol = Tolerance(1e-12, 1e-14) if avg_dtype == np.float64 else Tolerance(2e-6, 2e-7)
    for i, (a, w) in enumerate(zip(averages, want)):
        assert_close(a, w, tol, f"averages[{i}]")
    if decay == 0.0:
        for a, p in zip(averages, params):
            assert np.array_equal(a, p.astype(avg_dtype)), "decay 0 copies the weights"


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_decay_endpoints_copy_or_keep(decay, isa):
    averages = [np.arange(7, dtype=np.float32)]
    params = [np.full(7, 3.0, np.float32)]
    want = params[0] if decay == 0.0 else averages[0].copy()
    ft.ema_(averages, params, decay=decay)
    assert np.array_equal(averages[0], want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch_lerp(dtype, isa, torch):
    rng = np.random.default_rng(seed_for("ema-torch", dtype))
    averages = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    t_averages = [torch.from_numpy(a.copy()) for a in averages]
    for _ in range(20):
        params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        ft.ema_(averages, params, decay=0.95)
        for a, p in zip(t_averages, params):
            a.lerp_(torch.from_numpy(p), 1 - 0.95)
    tol = Tolerance(1e-12, 1e-14) if dtype == "float64" else Tolerance(2e-6, 2e-7)
    for i, (a, t) in enumerate(zip(averages, t_averages)):
        assert_close(a, t.numpy(), tol, f"averages[{i}]")
