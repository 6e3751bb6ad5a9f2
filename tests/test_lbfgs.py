"""ft.optim.LBFGS (NumPy params) against the float64 reference, on every CPU ISA path and dtype;
Rosenbrock convergence; checkpoints."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from fullbatch_problems import (check_resume, closure_for, flat, logistic, quadratic, rosenbrock,
                                rosenbrock_start, split)
from precisions import dtype_named

# Odd sizes, so every SIMD path has a scalar tail; 20 params in all.
SHAPES = [(1,), (7,), (3, 4)]
LINE_SEARCHES = [None, "strong_wolfe"]


def _params(x, dtype, shapes=SHAPES):
    return split(x, shapes, dtype_named(dtype))


def _run_pair(fg, x0, dtype, steps, shapes=SHAPES, **kw):
    ours = _params(x0, dtype, shapes)
    theirs = _params(x0, "float64", shapes)
    opt, r = ft.optim.LBFGS(ours, **kw), ref.LBFGS(theirs, **kw)
    trace = []
    for _ in range(steps):
        opt.step(closure_for(fg, ours))
        r.step(closure_for(fg, theirs))
        trace.append((flat(ours), flat(theirs), opt.state_dict()["state"]["func_evals"],
                      r.state["func_evals"]))
    return trace


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
@pytest.mark.parametrize("history", [3, 100])
def test_float64_follows_reference(line_search, history, isa):
    """Kernels in float64 take the reference's iterates and evaluations on the logistic loss."""
    fg = logistic(n_features=20)
    for ours, theirs, e1, e2 in _run_pair(fg, np.zeros(20), "float64", 6, history_size=history,
                                         line_search_fn=line_search, max_iter=4):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)
        assert e1 == e2


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_float64_rosenbrock_trajectory(line_search, isa):
    """An ill-conditioned problem: the first 20 iterations agree to rounding."""
    x0 = rosenbrock_start(20)
    for ours, theirs, e1, e2 in _run_pair(rosenbrock, x0, "float64", 5, history_size=5,
                                         line_search_fn=line_search, max_iter=4):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)
        assert e1 == e2


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_low_precision_stays_close(dtype, isa):
    """float32 kernels (and half params with float32 state) track the float64 reference on the
    well-conditioned logistic loss as far as the params' own rounding allows."""
    tol = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 6e-2}[dtype]
    fg = logistic(n_features=20)
    for ours, theirs, *_ in _run_pair(fg, np.zeros(20), dtype, 4, history_size=5,
                                      line_search_fn="strong_wolfe", max_iter=5):
        assert np.abs(ours - theirs).max() <= tol * max(1.0, np.abs(theirs).max())


@pytest.mark.parametrize("n", [2, 100])
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_rosenbrock_converges(n, line_search, isa):
    shapes = [(n,)] if n == 2 else [(1,), (7,), (4, 23)]
    params = split(rosenbrock_start(n), shapes)
    opt = ft.optim.LBFGS(params, history_size=10, max_iter=100, max_eval=250,
                         line_search_fn=line_search, lr=1.0 if line_search else 0.05)
    for _ in range(40 if line_search else 200):
        opt.step(closure_for(rosenbrock, params))
    np.testing.assert_allclose(flat(params), np.ones(n), atol=1e-4)
    assert rosenbrock(flat(params))[0] < 1e-8


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_state_dict_resumes_bit_for_bit(line_search, isa):
    fg, _ = quadratic(20, cond=50.0)
    check_resume(lambda ps: ft.optim.LBFGS(ps, history_size=4, max_iter=3,
                                           line_search_fn=line_search),
                 fg, split(np.ones(20), SHAPES, np.float32), 3)


def test_history_ring_keeps_the_newest_pairs(isa):
    """More iterations than history slots: the kept pairs are the newest, in order."""
    fg, _ = quadratic(20, cond=1e3)
    p = split(np.zeros(20), SHAPES)
    opt = ft.optim.LBFGS(p, history_size=3, max_iter=9, tolerance_grad=0, tolerance_change=0)
    r_p = split(np.zeros(20), SHAPES)
    r = ref.LBFGS(r_p, history_size=3, max_iter=9, tolerance_grad=0, tolerance_change=0)
    opt.step(closure_for(fg, p))
    r.step(closure_for(fg, r_p))
    st = opt.state_dict()["state"]
    assert len(st["old_stps"]) == 3
    for j in range(3):
        np.testing.assert_allclose(flat(st["old_stps"][j]), r.state["old_s"][j], rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(flat(st["old_dirs"][j]), r.state["old_y"][j], rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(flat(p), flat(r_p), rtol=1e-9)


def test_step_returns_first_loss_and_stops_at_optimum(isa):
    fg, x_star = quadratic(20, cond=10.0)
    p = split(x_star, SHAPES)
    opt = ft.optim.LBFGS(p)
    loss = opt.step(closure_for(fg, p))
    assert loss == pytest.approx(fg(x_star)[0])
    # At the optimum (|g| <= tolerance_grad after one evaluation) nothing moves.
    before = flat(p)
    opt2 = ft.optim.LBFGS(p, tolerance_grad=1e-3)
    opt2.step(closure_for(fg, p))
    np.testing.assert_array_equal(flat(p), before)
