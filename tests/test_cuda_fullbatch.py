"""CUDA full-batch kernels and optimizers: the kernels against float64 NumPy, ft.torch.LBFGS on
the GPU against torch.optim.LBFGS, repeatability, streams.  Skipped without a GPU."""

import numpy as np
import pytest

import fusedtrain as ft
from fusedtrain import _C
from fullbatch_problems import curvature_pairs, inverse_curvatures
from gpu_support import require_torch_cuda, to_cuda, to_host
from precisions import dtype_named

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()

# Sizes around the CUDA chunk (65536) and odd ones.
SHAPES = [(1,), (7,), (4097,), (65537,), (3, 5)]


def _rand(dtype, seed, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype_named(dtype)) for s in shapes]


def _cuda(arrays):
    return [to_cuda(torch, a) for a in arrays]


def _host(arrays):
    return [to_host(torch, a) for a in arrays]


def _flat64(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dots_and_history(dtype):
    tol = 1e-5 if dtype == "float32" else 1e-12
    g, prev, d = _rand(dtype, 1), _rand(dtype, 2), _rand(dtype, 3)
    got = _C.fullbatch_dots(_cuda(g), [_cuda(d), _cuda(g)], torch.cuda.current_stream().cuda_stream)
    assert got[0] == pytest.approx(float(_flat64(g) @ _flat64(d)), rel=tol, abs=tol)
    assert got[1] == pytest.approx(float(_flat64(g) @ _flat64(g)), rel=tol)
    total = sum(int(np.prod(s)) for s in SHAPES)
    hist = torch.zeros((4, total), dtype=getattr(torch, dtype), device="cuda")
    pg, dg = _cuda(prev), _cuda(d)
    ys, yy, sq = _C.fullbatch_history_(_cuda(g), pg, dg, hist, 1, 0.5,
                                       torch.cuda.current_stream().cuda_stream)
    y = _flat64(g) - _flat64(prev)
    s = 0.5 * _flat64(d)
    np.testing.assert_allclose(hist[2].cpu().numpy(), s, rtol=tol)
    np.testing.assert_allclose(hist[3].cpu().numpy(), y, rtol=tol, atol=tol)
    np.testing.assert_array_equal(_flat64(_host(pg)), _flat64(g))
    np.testing.assert_array_equal(_flat64(_host(dg)), -_flat64(g))   # Note [first pass folded]
    assert ys == pytest.approx(float(y @ s), rel=tol * 10)
    assert yy == pytest.approx(float(y @ y), rel=tol * 10)
    assert sq == pytest.approx(float(-(s @ _flat64(g))), rel=tol * 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("slots", [[], [1], [2, 0, 1]], ids=str)
@pytest.mark.parametrize("folded", [False, True], ids=["first-pass", "first-dot-given"])
def test_two_loop_matches_cpu(dtype, slots, folded):
    """The device-chained recursion (Note [device chain]) against the CPU kernels, also with the
    first pass's dot given (Note [first pass folded])."""
    g = _rand(dtype, 4)
    rng = np.random.default_rng(5)
    total = sum(int(np.prod(s)) for s in SHAPES)
    hist = rng.standard_normal((6, total)).astype(dtype)
    curvature_pairs(hist, rng)
    ro = inverse_curvatures(hist, slots)
    first = 1.5 * float(-(_flat64(g) @ hist[2 * slots[-1]])) if folded and slots else None
    d_cpu = [(-a if folded else np.zeros(s, dtype)) for a, s in zip(g, SHAPES)]
    d_gpu = _cuda(d_cpu)
    want = _C.fullbatch_direction_(g, d_cpu, hist, slots, ro, 0.8, None, first)
    got = _C.fullbatch_direction_(_cuda(g), d_gpu, to_cuda(torch, hist), slots, ro, 0.8,
                                  torch.cuda.current_stream().cuda_stream, first)
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(_flat64(_host(d_gpu)), _flat64(d_cpu), rtol=tol,
                               atol=tol * np.abs(_flat64(d_cpu)).max())
    assert got[0] == pytest.approx(want[0], rel=tol)
    assert got[1] == pytest.approx(want[1], rel=tol)
    np.testing.assert_allclose(got[2], want[2], rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_grad_copy_and_param_step(dtype):
    compute = "float64" if dtype == "float64" else "float32"
    g, d = _rand(dtype, 6), _rand(compute, 7)
    out = [torch.empty(s, dtype=getattr(torch, compute), device="cuda") for s in SHAPES]
    st = torch.cuda.current_stream().cuda_stream
    gd = _C.fullbatch_grad_copy_(_cuda(g), out, _cuda(d), st)
    np.testing.assert_array_equal(_flat64(_host(out)), _flat64(g))
    assert gd == pytest.approx(float(_flat64(g) @ _flat64(d)), rel=1e-5)
    p = _cuda(g)
    base = [torch.empty(s, dtype=getattr(torch, compute), device="cuda") for s in SHAPES]
    _C.fullbatch_param_step_(p, _cuda(d), base, 1, 0.25, st)      # base = p; p = base + t d
    np.testing.assert_array_equal(_flat64(_host(base)), _flat64(g))
    want = (_flat64(g) + 0.25 * _flat64(d)).astype(dtype_named(dtype)).astype(np.float64)
    np.testing.assert_allclose(_flat64(_host(p)), want, rtol=2 ** -7, atol=1e-6)
    _C.fullbatch_param_step_(p, None, base, 3, 0.0, st)            # restore
    np.testing.assert_array_equal(_flat64(_host(p)), _flat64(g))


def _logistic(device):
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(400, 60, generator=gen, dtype=torch.float64)
    X = (Z * torch.logspace(0, -1, 60, dtype=torch.float64)).float().to(device)
    y = (Z @ torch.randn(60, generator=gen, dtype=torch.float64) > 0).float().to(device)
    params = [torch.zeros(5, 12, device=device, requires_grad=True),
              torch.zeros(1, device=device, requires_grad=True)]
    return X, y, params


def _closure(opt, X, y, params):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            X @ params[0].reshape(-1) + params[1], y) + 1e-3 * params[0].square().sum()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("history", [5, 100])
def test_lbfgs_on_gpu_matches_torch(line_search, history):
    X, y, ours = _logistic("cuda")
    _, _, theirs = _logistic("cuda")
    kw = dict(history_size=history, line_search_fn=line_search, max_iter=2)
    o, t = ft.torch.LBFGS(ours, **kw), torch.optim.LBFGS(theirs, **kw)
    for _ in range(20):
        o.step(_closure(o, X, y, ours))
        t.step(_closure(t, X, y, theirs))
        diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
        # Relative to the params' size (~2.5 here): two fp32 runs that sum their dot products in
        # different orders drift apart by a few dozen ulps at times (1.2e-5 on the CPU as well).
        scale = max(1.0, max(float(b.abs().max()) for b in theirs))
        assert diff <= 1e-5 * scale
    assert o.state_dict()["state"][0]["func_evals"] == t.state[theirs[0]]["func_evals"]


def test_lbfgs_gpu_repeatable_and_matches_cpu():
    runs = []
    for device in ("cuda", "cuda", "cpu"):
        X, y, params = _logistic(device)
        o = ft.torch.LBFGS(params, history_size=10, line_search_fn="strong_wolfe", max_iter=4)
        for _ in range(5):
            o.step(_closure(o, X, y, params))
        runs.append([p.detach().cpu() for p in params])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)            # fixed reduction order: bitwise repeatable
    for a, b in zip(runs[0], runs[2]):
        assert float((a - b).abs().max()) <= 1e-4


def test_conjugate_gradient_on_gpu_matches_cpu():
    results = []
    for device in ("cuda", "cpu"):
        X, y, params = _logistic(device)
        o = ft.torch.ConjugateGradient(params, max_iter=5)
        for _ in range(4):
            o.step(_closure(o, X, y, params))
        results.append([p.detach().cpu() for p in params])
    for a, b in zip(*results):
        assert float((a - b).abs().max()) <= 1e-4


def test_lbfgs_complex_params_on_gpu_match_torch():
    """Note [complex full-batch params] on the GPU: complex CUDA params step as their real views,
    on torch.optim.LBFGS's trajectory."""
    g = torch.Generator().manual_seed(5)
    A = torch.randn(30, 12, generator=g, dtype=torch.complex128).cuda()
    b = torch.randn(30, generator=g, dtype=torch.complex128).cuda()
    runs = []
    for cls in (ft.torch.LBFGS, torch.optim.LBFGS):
        z = torch.zeros(3, 4, dtype=torch.complex128, device="cuda", requires_grad=True)
        opt = cls([z], history_size=4, line_search_fn="strong_wolfe", max_iter=3)

        def closure(opt=opt, z=z):
            opt.zero_grad()
            loss = ((A @ z.reshape(-1) - b).abs() ** 2).sum()
            loss.backward()
            return loss
        for _ in range(3):
            opt.step(closure)
        runs.append(torch.view_as_real(z.detach()).cpu())
    assert float((runs[0] - runs[1]).abs().max()) <= 1e-10


def test_runs_on_a_side_stream():
    X, y, params = _logistic("cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        o = ft.torch.LBFGS(params, max_iter=3, line_search_fn="strong_wolfe")
        o.step(_closure(o, X, y, params))
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in params)
