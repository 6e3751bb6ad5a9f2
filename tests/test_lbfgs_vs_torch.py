"""ft.torch.LBFGS against torch.optim.LBFGS on the same closures: the same iterates (to 1e-5 in
float32) and the same number of function evaluations over 20 outer steps; checkpoints both ways."""

import numpy as np
import pytest

import fusedtrain as ft

torch = pytest.importorskip("torch")

LINE_SEARCHES = [None, "strong_wolfe"]
HISTORIES = [5, 100]


def _logistic_data(dtype=torch.float32):
    """400 samples of 60 correlated features (feature scales over a decade), noisy labels."""
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(400, 60, generator=gen, dtype=torch.float64)
    q = torch.linalg.qr(torch.randn(60, 60, generator=gen, dtype=torch.float64))[0]
    X = Z @ (q * torch.logspace(0, -1, 60, dtype=torch.float64)).T
    y = (Z @ torch.randn(60, generator=gen, dtype=torch.float64) > 0).to(torch.float64)
    return X.to(dtype), y.to(dtype)


def _logistic_model(dtype=torch.float32):
    # Odd sizes: 60 weights in a (5, 12) matrix, a bias of 1.
    return [torch.zeros(5, 12, dtype=dtype, requires_grad=True),
            torch.zeros(1, dtype=dtype, requires_grad=True)]


def _logistic_closure(params, opt, data):
    X, y = data

    def closure():
        opt.zero_grad()
        z = X @ params[0].reshape(-1) + params[1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y) \
            + 1e-3 * params[0].square().sum()
        loss.backward()
        return loss
    return closure


def _mlp(dtype=torch.float32):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(8, 15), torch.nn.Tanh(),
                               torch.nn.Linear(15, 1)).to(dtype)


def _mlp_data(dtype=torch.float32):
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(256, 8, generator=gen, dtype=torch.float64)
    return X.to(dtype), torch.sin(X[:, :3].sum(1, keepdim=True)).to(dtype)


def _mlp_closure(model, opt, data):
    X, y = data

    def closure():
        opt.zero_grad()
        loss = (model(X) - y).square().mean() + 1e-3 * sum(p.square().sum()
                                                           for p in model.parameters())
        loss.backward()
        return loss
    return closure


def _max_diff(a, b):
    return max(float((p.detach().double() - q.detach().double()).abs().max())
               for p, q in zip(a, b))


def _evals(opt):
    """The counters in ``state[params[0]]``, where torch's LBFGS keeps them (ours publishes them
    there after each step, the same as its checkpoint's)."""
    st = opt.state[opt._params[0]]
    counters = st["func_evals"], st["n_iter"]
    if isinstance(opt, ft.torch.LBFGS):
        saved = opt.state_dict()["state"][0]
        assert (saved["func_evals"], saved["n_iter"]) == counters
    return counters


def test_counters_are_published_after_a_load():
    ours, theirs = _logistic_model(), _logistic_model()
    t = torch.optim.LBFGS(theirs, max_iter=3)
    data = _logistic_data()
    t.step(_logistic_closure(theirs, t, data))
    o = ft.torch.LBFGS(ours, max_iter=3)
    o.load_state_dict(t.state_dict())
    assert _evals(o) == _evals(t)


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_logistic_regression_matches_torch(line_search, history, isa):
    """Full-batch logistic regression, two iterations per step: 40 iterations that stay above
    float32 noise (converged runs compare rounding, not the algorithm)."""
    data = _logistic_data()
    ours, theirs = _logistic_model(), _logistic_model()
    kw = dict(history_size=history, line_search_fn=line_search, max_iter=2)
    o = ft.torch.LBFGS(ours, **kw)
    t = torch.optim.LBFGS(theirs, **kw)
    for _ in range(20):
        lo = o.step(_logistic_closure(ours, o, data))
        lt = t.step(_logistic_closure(theirs, t, data))
        assert _max_diff(ours, theirs) <= 1e-5
        assert lo.item() == pytest.approx(lt.item(), rel=1e-5)
        assert _evals(o) == _evals(t)


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("line_search, lr, max_iter", [(None, 0.2, 1), ("strong_wolfe", 1.0, 2)])
def test_mlp_matches_torch(line_search, lr, max_iter, history):
    """A small MLP (nonconvex): the same iterates to 1e-5 for 20 outer steps, and never further
    from the float64 trajectory than torch's own float32 run (rounding is all that differs)."""
    data, data64 = _mlp_data(), _mlp_data(torch.float64)
    ours, theirs, exact = _mlp(), _mlp(), _mlp(torch.float64)
    kw = dict(history_size=history, line_search_fn=line_search, lr=lr, max_iter=max_iter)
    o = ft.torch.LBFGS(ours.parameters(), **kw)
    t = torch.optim.LBFGS(theirs.parameters(), **kw)
    e = torch.optim.LBFGS(exact.parameters(), **kw)
    for _ in range(20):
        o.step(_mlp_closure(ours, o, data))
        t.step(_mlp_closure(theirs, t, data))
        e.step(_mlp_closure(exact, e, data64))
        assert _max_diff(ours.parameters(), theirs.parameters()) <= 1e-5
        assert _max_diff(ours.parameters(), exact.parameters()) <= \
            1.5 * _max_diff(theirs.parameters(), exact.parameters()) + 1e-6
        assert _evals(o) == _evals(t)


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_rosenbrock_2d(line_search):
    """torch's own L-BFGS test problem: from (1.5, 1.5) to the minimum at (1, 1)."""
    for cls in (ft.torch.LBFGS, torch.optim.LBFGS):
        p = torch.tensor([1.5, 1.5], dtype=torch.float64, requires_grad=True)
        opt = cls([p], lr=1.0 if line_search else 0.05, line_search_fn=line_search,
                  max_iter=100, history_size=10)

        def closure():
            opt.zero_grad()
            loss = 100 * (p[1] - p[0] ** 2) ** 2 + (1 - p[0]) ** 2
            loss.backward()
            return loss
        for _ in range(10 if line_search else 100):
            opt.step(closure)
        np.testing.assert_allclose(p.detach().numpy(), [1.0, 1.0],
                                   atol=1e-5 if line_search else 1e-4)


def _resume(first, second, line_search, steps_after=3):
    """Run `first` 3 steps, load its state_dict into `second` on a copy of the params, then step
    both; returns the largest param difference and both evaluation counts."""
    data = _logistic_data()
    kw = dict(history_size=4, max_iter=3, line_search_fn=line_search)
    a = _logistic_model()
    oa = first(a, **kw)
    for _ in range(3):
        oa.step(_logistic_closure(a, oa, data))
    b = [p.detach().clone().requires_grad_(True) for p in a]
    ob = second(b, **kw)
    ob.load_state_dict(oa.state_dict())
    worst = 0.0
    for _ in range(steps_after):
        oa.step(_logistic_closure(a, oa, data))
        ob.step(_logistic_closure(b, ob, data))
        worst = max(worst, _max_diff(a, b))
    return worst, _evals(oa), _evals(ob)


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_state_dict_resumes_ours(line_search):
    worst, ea, eb = _resume(ft.torch.LBFGS, ft.torch.LBFGS, line_search)
    assert worst == 0.0 and ea == eb


@pytest.mark.parametrize("first, second", [(torch.optim.LBFGS, ft.torch.LBFGS),
                                           (ft.torch.LBFGS, torch.optim.LBFGS)],
                         ids=["torch_to_ours", "ours_to_torch"])
def test_state_dict_moves_both_ways(first, second):
    worst, ea, eb = _resume(first, second, None)
    assert worst <= 1e-5 and ea == eb


def test_torch_checkpoint_continues_like_torch_strong_wolfe():
    """With the line search, torch.optim.LBFGS itself does not continue bit for bit from its own
    checkpoint (a loaded copy drifts from the live run at rounding level); a torch checkpoint
    loaded into ours takes the live torch run's next step."""
    worst, ea, eb = _resume(torch.optim.LBFGS, ft.torch.LBFGS, "strong_wolfe", steps_after=1)
    assert worst <= 1e-5 and ea == eb


def test_state_dict_layout_is_torchs():
    data = _logistic_data()
    p = _logistic_model()
    o = ft.torch.LBFGS(p, history_size=3, max_iter=5)
    o.step(_logistic_closure(p, o, data))
    st = o.state_dict()["state"][0]
    assert set(st) >= {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                       "prev_flat_grad", "prev_loss"}
    assert st["d"].shape == (61,) and len(st["old_dirs"]) == len(st["ro"]) == 3
    assert o.state_dict()["param_groups"][0]["history_size"] == 3
    # state_dict() leaves the optimizer's own state as it was: the published counters alone.
    assert list(o.state.values()) == [{"func_evals": st["func_evals"], "n_iter": st["n_iter"]}]



def _complex_problem(dtype):
    """Complex least squares ``|A z - b|^2`` over a complex (4, 5) matrix and a complex vector of
    3, plus a real param of 2 (torch.optim.LBFGS flattens complex params as their real and
    imaginary parts, Note [complex full-batch params]).  Returns the params' maker and the
    closure of given params (complex ones, or their real views through view_as_complex), and
    (A, b)."""
    gen = torch.Generator().manual_seed(3)
    rdt = torch.float32 if dtype == torch.complex64 else torch.float64
    A = torch.randn(40, 25, generator=gen, dtype=dtype)
    b = torch.randn(40, generator=gen, dtype=dtype)

    def model():
        return [torch.zeros(4, 5, dtype=dtype, requires_grad=True),
                torch.zeros(3, dtype=dtype, requires_grad=True),
                torch.zeros(2, dtype=rdt, requires_grad=True)]

    def closure_of(params, opt):
        def closure():
            opt.zero_grad()
            w = [p if p.is_complex() or i == 2 else torch.view_as_complex(p)
                 for i, p in enumerate(params)]
            z = torch.cat([w[0].reshape(-1), w[1], w[2].to(dtype)])
            loss = ((A @ z - b).abs() ** 2).sum() + 0.1 * (w[2] - 1.0).square().sum()
            loss.backward()
            return loss
        return closure
    return model, closure_of, (A, b)


def _as_real(params):
    return [torch.view_as_real(p) if p.is_complex() else p for p in params]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_complex_params_match_torch(line_search, dtype):
    """Complex params step as torch.optim.LBFGS steps them: the same iterates and evaluations,
    and a checkpoint in torch's flat real layout that torch.optim.LBFGS continues from."""
    dtype = getattr(torch, dtype)
    model, closure_of, _ = _complex_problem(dtype)
    ours, theirs = model(), model()
    kw = dict(history_size=5, line_search_fn=line_search, max_iter=3,
              lr=1.0 if line_search else 0.005)
    o = ft.torch.LBFGS(ours, **kw)
    t = torch.optim.LBFGS(theirs, **kw)
    tol = 1e-4 if dtype == torch.complex64 else 1e-10
    for _ in range(4):
        lo = o.step(closure_of(ours, o))
        lt = t.step(closure_of(theirs, t))
        assert _max_diff(_as_real(ours), _as_real(theirs)) <= tol
        assert lo.item() == pytest.approx(lt.item(), rel=tol)
        assert _evals(o) == _evals(t)
    st = o.state_dict()["state"][0]
    assert st["d"].shape == (2 * 20 + 2 * 3 + 2,) and not st["d"].is_complex()
    moved = [p.detach().clone().requires_grad_() for p in ours]
    again = torch.optim.LBFGS(moved, **kw)
    again.load_state_dict(o.state_dict())
    for _ in range(2):
        o.step(closure_of(ours, o))
        again.step(closure_of(moved, again))
    assert _max_diff(_as_real(ours), _as_real(moved)) <= tol


def test_complex_params_conjugate_gradient():
    """ConjugateGradient steps a complex param as the real tensor of its real and imaginary
    parts: the same iterates as on those real tensors themselves, to the least squares
    solution."""
    model, closure_of, (A, b) = _complex_problem(torch.complex128)
    complex_params = model()
    real_params = [p.detach().clone().requires_grad_() for p in _as_real(model())]
    for params in (complex_params, real_params):
        opt = ft.torch.ConjugateGradient(params, max_iter=60)
        opt.step(closure_of(params, opt))
    assert _max_diff(_as_real(complex_params), real_params) <= 1e-12
    loss = closure_of(complex_params, opt)().item()
    # The minimum in closed form: real least squares over the 48 real unknowns (real and
    # imaginary parts of the 23 complex ones, the 2 real ones), the penalty as two more rows.
    pen = torch.zeros(2, 25, dtype=torch.complex128)
    pen[0, 23] = pen[1, 24] = 0.1 ** 0.5
    A_ = torch.cat([A, pen])
    b_ = torch.cat([b, torch.full((2,), 0.1 ** 0.5, dtype=torch.complex128)])
    Ar = torch.cat([torch.cat([A_.real, -A_.imag[:, :23]], 1),
                    torch.cat([A_.imag, A_.real[:, :23]], 1)])
    x = torch.linalg.lstsq(Ar, torch.cat([b_.real, b_.imag])).solution
    best = float(((Ar @ x - torch.cat([b_.real, b_.imag])) ** 2).sum())
    assert loss == pytest.approx(best, rel=1e-6)
