"""Nonlinear conjugate gradient (ft.optim / ft.torch ConjugateGradient): the float64 reference's
iterates, at most n iterations on an n-dimensional convex quadratic, scipy's minimum on
Rosenbrock, restarts."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from fullbatch_problems import (check_resume, closure_for, flat, logistic, quadratic, rosenbrock,
                                rosenbrock_start, split)

SHAPES = [(1,), (7,), (3, 4)]
BETAS = ["polak_ribiere", "fletcher_reeves"]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("restart_every", [None, 3])
def test_float64_follows_reference(beta, restart_every, isa):
    for fg, x0 in ((logistic(n_features=20), np.zeros(20)), (rosenbrock, rosenbrock_start(20))):
        ours, theirs = split(x0, SHAPES), split(x0, SHAPES)
        kw = dict(beta=beta, restart_every=restart_every, max_iter=4)
        opt, r = ft.optim.ConjugateGradient(ours, **kw), ref.ConjugateGradient(theirs, **kw)
        for _ in range(5):
            opt.step(closure_for(fg, ours))
            r.step(closure_for(fg, theirs))
            np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-8, atol=1e-10)
            assert opt.state_dict()["state"]["func_evals"] == r.state["func_evals"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("beta", BETAS)
def test_quadratic_in_at_most_n_iterations(dtype, beta, isa):
    """On f = x'Ax/2 - b'x with exact line searches, nonlinear CG is linear CG: the minimizer in
    at most n iterations. A tight curvature condition (c2) makes the search exact: the cubic
    interpolation of a quadratic hits its minimizer. (Condition 10: with a wider spectrum,
    rounding alone costs finite-precision CG its n-step termination.)"""
    n = 20
    fg, x_star = quadratic(n, cond=10.0)
    params = split(np.zeros(n), SHAPES, np.dtype(dtype))
    # float32 cannot resolve g'd to 1e-6 of its start: a looser curvature condition.
    c2 = 1e-6 if dtype == "float64" else 1e-2
    opt = ft.optim.ConjugateGradient(params, beta=beta, max_iter=n, max_eval=50 * n, c1=1e-10,
                                     c2=c2, tolerance_grad=1e-9, tolerance_change=1e-12)
    g0 = np.abs(fg(np.zeros(n))[1]).max()
    opt.step(closure_for(fg, params))
    assert opt.state_dict()["state"]["n_iter"] <= n
    tol = 1e-6 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(flat(params), x_star, atol=tol * np.abs(x_star).max())
    assert np.abs(fg(flat(params))[1]).max() <= 1e-4 * g0


def test_quadratic_linear_cg_iterates(isa):
    """The iterates are linear CG's: the error in the A-norm shrinks at every step and the
    gradients come out mutually orthogonal."""
    n = 12
    fg, x_star = quadratic(n, cond=30.0, seed=3)
    params = split(np.zeros(n), [(n,)])
    opt = ft.optim.ConjugateGradient(params, max_iter=1, max_eval=20, c1=1e-10, c2=1e-8,
                                     tolerance_grad=0.0, tolerance_change=1e-12)
    grads = []
    for _ in range(n - 2):
        opt.step(closure_for(fg, params))
        grads.append(fg(flat(params))[1])
    for i in range(len(grads)):
        for j in range(i):
            cos = grads[i] @ grads[j] / np.linalg.norm(grads[i]) / np.linalg.norm(grads[j])
            assert abs(cos) < 1e-5


@pytest.mark.parametrize("beta", BETAS)
def test_rosenbrock_matches_scipy(beta, isa):
    optimize = pytest.importorskip("scipy.optimize")
    n = 10
    x0 = rosenbrock_start(n)
    res = optimize.minimize(lambda x: rosenbrock(x)[0], x0, jac=lambda x: rosenbrock(x)[1],
                            method="CG", options={"gtol": 1e-8, "maxiter": 20000})
    params = split(x0, [(1,), (9,)])
    opt = ft.optim.ConjugateGradient(params, beta=beta, max_iter=500, max_eval=5000,
                                     restart_every=n, tolerance_change=0.0, tolerance_grad=1e-8)
    for _ in range(20):
        opt.step(closure_for(rosenbrock, params))
    f = rosenbrock(flat(params))[0]
    assert f == pytest.approx(res.fun, abs=1e-10)
    np.testing.assert_allclose(flat(params), res.x, atol=1e-5)


def test_restart_every_resets_beta(isa):
    """restart_every=1 is steepest descent with the line search: every direction is -g."""
    fg = logistic(n_features=20)
    params = split(np.zeros(20), SHAPES)
    opt = ft.optim.ConjugateGradient(params, restart_every=1, max_iter=1)
    for _ in range(4):
        opt.step(closure_for(fg, params))
        st = opt.state_dict()["state"]
        _, g = fg(flat(params))
        assert st["since_restart"] == 1
    sd = ft.optim.ConjugateGradient(split(np.zeros(20), SHAPES), restart_every=1, max_iter=1)
    p2 = sd.params
    for _ in range(4):
        sd.step(closure_for(fg, p2))
    np.testing.assert_array_equal(flat(p2), flat(params))


def test_state_dict_resumes_bit_for_bit(isa):
    check_resume(lambda ps: ft.optim.ConjugateGradient(ps, max_iter=3), logistic(n_features=20),
                 split(np.zeros(20), SHAPES, np.float32), 2)


def test_torch_matches_numpy(torch):
    """ft.torch.ConjugateGradient runs the same algorithm on torch tensors (closure API), and its
    state_dict loads back."""
    fg = logistic(n_features=20)
    x0 = np.zeros(20)
    np_params = split(x0, SHAPES)
    opt = ft.optim.ConjugateGradient(np_params, max_iter=4)
    tp = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    topt = ft.torch.ConjugateGradient(tp, max_iter=4)

    def closure():
        topt.zero_grad()
        f, g = fg(np.concatenate([p.detach().numpy().ravel() for p in tp]))
        for p, gi in zip(tp, split(g, SHAPES)):
            p.grad = torch.from_numpy(np.ascontiguousarray(gi))
        return torch.tensor(f, dtype=torch.float64)
    for _ in range(3):
        opt.step(closure_for(fg, np_params))
        topt.step(closure)
    np.testing.assert_allclose(np.concatenate([p.detach().numpy().ravel() for p in tp]),
                               flat(np_params), rtol=1e-12, atol=1e-14)
    sd = topt.state_dict()
    assert sd["state"][0]["d"].shape == (20,)
    again = ft.torch.ConjugateGradient([p.detach().clone().requires_grad_(True) for p in tp],
                                       max_iter=4)
    again.load_state_dict(sd)
    assert again.state_dict()["state"][0]["n_iter"] == sd["state"][0]["n_iter"]
