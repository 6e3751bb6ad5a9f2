"""Bad closures and arguments of the full-batch optimizers: a clear error naming what is wrong, and
the params exactly as they were before the step (Note [failed step])."""

import math

import numpy as np
import pytest

import fusedtrain as ft
from fullbatch_problems import closure_for, logistic, split

SHAPES = [(1,), (7,), (3, 4)]
CLASSES = [ft.optim.LBFGS, ft.optim.ConjugateGradient]
LINE_SEARCHES = [None, "strong_wolfe"]


def _params(dtype=np.float32):
    return split(np.linspace(-1, 1, 20), SHAPES, dtype)


def _bits(params):
    return [p.copy().view(np.uint8) for p in params]


def _make(cls, params, line_search, **kw):
    if cls is ft.optim.ConjugateGradient and line_search is None:
        kw.setdefault("lr", 0.1)
    return cls(params, line_search_fn=line_search, max_iter=6, **kw)


def _failing_after(fg, params, n_good, bad):
    """A closure that answers n_good times, then returns bad() (or raises what it raises)."""
    good = closure_for(fg, params)
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        return good() if calls["n"] <= n_good else bad(good())
    return closure


@pytest.mark.parametrize("cls", CLASSES)
def test_step_without_closure(cls):
    params = _params()
    opt = cls(params)
    with pytest.raises(TypeError, match="closure is required"):
        opt.step()
    with pytest.raises(TypeError, match="closure is required"):
        opt.step(None)


BAD_RESULTS = {
    "nan_loss": (ValueError, "NaN loss", lambda out: (math.nan, out[1])),
    "wrong_shape": (ValueError, r"grads\[2\] has shape \(4, 3\) but params\[2\] has shape "
                                r"\(3, 4\)",
                    lambda out: (out[0], out[1][:2] + [out[1][2].reshape(4, 3)])),
    "too_few_grads": (ValueError, "returned 2 grads for 3 params",
                      lambda out: (out[0], out[1][:2])),
    "wrong_dtype": (TypeError, r"grads\[1\] has dtype float64",
                    lambda out: (out[0], [out[1][0], out[1][1].astype(np.float64), out[1][2]])),
    "not_a_tuple": (TypeError, r"must return \(loss, grads\)", lambda out: out[0]),
    "vector_loss": (TypeError, "loss has 3 elements", lambda out: (np.ones(3), out[1])),
    "none_loss": (TypeError, "no loss", lambda out: (None, out[1])),
}


@pytest.mark.parametrize("what", list(BAD_RESULTS))
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("n_good", [0, 1, 3])
def test_bad_closure_result_leaves_params(cls, line_search, what, n_good, isa):
    """Whether the first evaluation or one in the middle of the step is bad (after the params
    have moved, inside a line search or not), the step raises and the params are bit for bit
    what they were before it."""
    exc, match, bad = BAD_RESULTS[what]
    fg = logistic(n_features=20)
    params = _params()
    opt = _make(cls, params, line_search)
    opt.step(closure_for(fg, params))         # some history first
    before = _bits(params)
    with pytest.raises(exc, match=match):
        opt.step(_failing_after(fg, params, n_good, bad))
    for a, b in zip(_bits(params), before):
        np.testing.assert_array_equal(a, b)
    # The optimizer still works afterwards (from steepest descent if it had moved).
    opt.step(closure_for(fg, params))
    assert all(np.isfinite(p).all() for p in params)


@pytest.mark.parametrize("cls", CLASSES)
def test_closure_exception_restores_params(cls):
    fg = logistic(n_features=20)
    params = _params()
    opt = _make(cls, params, "strong_wolfe")
    before = _bits(params)

    def boom(out):
        raise RuntimeError("data loader failed")
    with pytest.raises(RuntimeError, match="data loader failed"):
        opt.step(_failing_after(fg, params, 2, boom))
    for a, b in zip(_bits(params), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw, match", [
    (dict(lr=-1.0), "lr must be"),
    (dict(max_iter=0), "max_iter must be an int >= 1"),
    (dict(max_iter=2.5), "max_iter must be an int"),
    (dict(tolerance_grad=math.nan), "tolerance_grad must be"),
    (dict(line_search_fn="backtracking"), "line_search_fn must be None or 'strong_wolfe'"),
    (dict(history_size=0), "history_size must be an int >= 1"),
])
def test_lbfgs_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        ft.optim.LBFGS(_params(), **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(beta="hestenes_stiefel"), "beta must be 'polak_ribiere' or 'fletcher_reeves'"),
    (dict(restart_every=0), "restart_every must be an int >= 1"),
    (dict(c1=0.5, c2=0.1), "0 < c1 < c2 < 1"),
])
def test_cg_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        ft.optim.ConjugateGradient(_params(), **kw)


@pytest.mark.parametrize("cls", CLASSES)
def test_params_of_one_dtype(cls):
    params = _params()
    params[1] = params[1].astype(np.float64)
    with pytest.raises(ValueError, match=r"params\[1\] differs from params\[0\]"):
        cls(params)
    with pytest.raises(TypeError, match=r"params\[0\] is list"):
        cls([[1.0, 2.0]])
    with pytest.raises(ValueError, match="empty"):
        cls([])


def test_torch_closure_nan_restores_params(torch):
    p = torch.nn.Parameter(torch.linspace(-1, 1, 11))
    opt = ft.torch.LBFGS([p], line_search_fn="strong_wolfe")
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        opt.zero_grad()
        loss = (p - 0.5).square().sum() * (math.nan if calls["n"] == 3 else 1.0)
        loss.backward()
        return loss
    before = p.detach().clone()
    with pytest.raises(ValueError, match="NaN loss"):
        opt.step(closure)
    assert torch.equal(p.detach(), before)
    with pytest.raises(TypeError, match="closure is required"):
        opt.step()
    with pytest.raises(ValueError, match="line_search_fn"):
        ft.torch.LBFGS([p], line_search_fn="armijo")


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad, exc, match", [
    (lambda: np.ones(8, np.float32)[::2], ValueError, r"params\[0\] is not C-contiguous"),
    (lambda: np.ones(3, np.int32), TypeError, r"params\[0\] has dtype int32"),
    (lambda: np.float32(1.0), TypeError, r"params\[0\] is float32, not an array"),
])
def test_params_named_at_construction(cls, bad, exc, match):
    """What the kernels would refuse at the first step is refused by the constructor, naming it."""
    with pytest.raises(exc, match=f"^{cls.__name__}: {match}"):
        cls([bad()])
    readonly = np.ones(3, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: params\[1\] is read-only"):
        cls([np.ones(2, np.float32), readonly])
    for not_params in (3.0, None):
        with pytest.raises(TypeError, match=f"^{cls.__name__}: params must be"):
            cls(not_params)


@pytest.mark.parametrize("cls", CLASSES)
def test_scalar_and_strided_grads(cls):
    """A 0-d param's grad may come back as a NumPy scalar and a grad may be strided (both are
    only read): the step equals the one with plain contiguous grads."""
    def run(odd):
        params = [np.array(0.5), np.zeros((3, 2))]
        target = np.arange(6.0).reshape(2, 3)

        def closure():
            g0 = 2.0 * (params[0] - 1.5)                     # a NumPy scalar
            g1 = 2.0 * (params[1].T - target)                 # (2, 3) C order
            loss = float((params[0] - 1.5) ** 2 + np.sum((params[1].T - target) ** 2))
            return loss, [g0 if odd else np.asarray(g0), g1.T if odd else g1.T.copy()]
        cls(params, max_iter=5).step(closure)
        return params
    for a, b in zip(run(True), run(False)):
        np.testing.assert_array_equal(a, b)


def test_overflowing_step_length_restores_params():
    """An lr the gradients' scale turns into an infinite step raises, naming the step, and the
    params are left as they were."""
    params = _params()
    before = _bits(params)
    opt = ft.optim.ConjugateGradient(params, lr=1e308, line_search_fn=None)
    with pytest.raises(ValueError, match=r"^ConjugateGradient.step: the step length is inf"):
        opt.step(closure_for(logistic(n_features=20), params))
    for a, b in zip(_bits(params), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw, match", [
    (dict(lr=10 ** 400), "lr must be a finite number"),
    (dict(line_search_fn=np.array([0.0, 0.0])), "line_search_fn must be None"),
    (dict(beta=np.array([0.0, 0.0])), "beta must be"),
])
def test_hyperparameters_that_are_not_plain_values(kw, match):
    with pytest.raises(ValueError, match=f"^ConjugateGradient: {match}"):
        ft.optim.ConjugateGradient(_params(), **kw)
