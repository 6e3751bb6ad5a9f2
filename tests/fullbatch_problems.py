"""Full-batch test problems as closures over lists of NumPy params: Rosenbrock, logistic
regression, convex quadratics; the flat vector they are defined on is the params' concatenation."""

import numpy as np


def flat(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def split(x, shapes, dtype=np.float64):
    out, k = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(np.asarray(x[k:k + n]).reshape(s).astype(dtype))
        k += n
    return out


def rosenbrock(x):
    """The extended Rosenbrock function of More, Garbow and Hillstrom: the 2-d one on each pair,
    sum 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2, and its gradient; minimum 0 at all ones."""
    x = np.asarray(x, np.float64)
    a, b = x[0::2], x[1::2]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.empty_like(x)
    g[0::2] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1::2] = 200.0 * (b - a * a)
    return f, g


def rosenbrock_start(n):
    """The standard start (-1.2, 1, -1.2, 1, ...)."""
    return np.array([-1.2 if i % 2 == 0 else 1.0 for i in range(n)])


def logistic(n_samples=300, n_features=20, l2=1e-2, seed=0):
    """Full-batch L2-regularized logistic regression on a generated data set: (f, grad) of w."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = (X @ rng.standard_normal(n_features) + 0.5 * rng.standard_normal(n_samples) > 0) * 1.0

    def fg(w):
        z = X @ w
        f = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)
        g = X.T @ (1.0 / (1.0 + np.exp(-z)) - y) / n_samples + l2 * w
        return f, g
    return fg


def quadratic(n, cond=100.0, seed=0):
    """f = 1/2 x'Ax - b'x with A symmetric positive definite of condition `cond`."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (q * np.geomspace(1.0, cond, n)) @ q.T
    b = rng.standard_normal(n)

    def fg(x):
        Ax = A @ x
        return float(0.5 * x @ Ax - b @ x), Ax - b
    return fg, np.linalg.solve(A, b)


def closure_for(fg, params, dtype=None):
    """A closure returning (loss, grads) at the params' current values, grads in their dtype."""
    shapes = [p.shape for p in params]

    def closure():
        f, g = fg(flat(params))
        return f, split(g, shapes, dtype or params[0].dtype)
    closure.calls = 0
    return closure


def check_resume(make, fg, params, steps):
    """Runs make(params) `steps` steps, checkpoints, runs `steps` more; a new optimizer on a copy
    of the checkpointed params, loaded from the checkpoint, must end bit for bit the same."""
    opt = make(params)
    for _ in range(steps):
        opt.step(closure_for(fg, params))
    saved, copies = opt.state_dict(), [p.copy() for p in params]
    for _ in range(steps):
        opt.step(closure_for(fg, params))
    resumed = make(copies)
    resumed.load_state_dict(saved)
    for _ in range(steps):
        resumed.step(closure_for(fg, copies))
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(p, q)
    assert resumed.state_dict()["state"]["func_evals"] == opt.state_dict()["state"]["func_evals"]


# ---- history arenas for the two-loop kernels (Note [history arena]: s of slot j in row 2j, y in
# row 2j + 1)

def curvature_pairs(hist, rng):
    """Makes every y row 1.5 s + small noise, so y's > 0 as L-BFGS keeps its pairs."""
    hist[1::2] = 1.5 * hist[0::2] + 0.1 * rng.standard_normal(hist[1::2].shape)


def inverse_curvatures(hist, slots):
    """ro = 1 / (y's) of each slot, in float64."""
    return [1.0 / float(hist[2 * j].astype(np.float64) @ hist[2 * j + 1]) for j in slots]
