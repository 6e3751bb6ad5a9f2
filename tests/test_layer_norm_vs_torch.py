"""Layer, RMS, group and instance norm against torch.nn.functional and its autograd, every dtype,
both layouts; NumPy and torch tensors."""

import numpy as np
import pytest

import fusedtrain as ft
from ln_cases import GROUP_CASES, GROUP_SMALL, ROW_CASES, ROW_SMALL, instance_norm_applies

# (forward tolerance, gradient tolerance) per dtype: half types round the result once.
TOL = {"float32": (2e-5, 1e-4), "float64": (1e-11, 1e-10), "float16": (2e-3, 8e-3),
       "bfloat16": (1.6e-2, 6e-2)}
DTYPES = list(TOL)


def _t(torch, dtype):
    return getattr(torch, dtype)


def _inputs(torch, shape, C_shape, dtype, seed, affine=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5).to(_t(torch, dtype))
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(_t(torch, dtype))
    pdt = torch.float64 if dtype == "float64" else torch.float32
    w = b = None
    if affine:
        w = (torch.rand(C_shape, generator=g, dtype=torch.float64) + 0.5).to(pdt)
        b = torch.randn(C_shape, generator=g, dtype=torch.float64).to(pdt)
    return x, w, b, dy


def _autograd(torch, fn, x, w, b, dy):
    """torch's result and grads, computed in float64 from the same (rounded) inputs; the half
    dtypes' own torch kernels round intermediate results we keep in float32."""
    x64 = x.double().requires_grad_(True)
    w64 = None if w is None else w.double().requires_grad_(True)
    b64 = None if b is None else b.double().requires_grad_(True)
    y = fn(x64, w64, b64)
    y.backward(dy.double())
    return y.detach(), x64.grad, None if w is None else w64.grad, None if b is None else b64.grad


def _close(torch, got, want, tol, what, floor=0.0):
    """Within tol relative to want's own scale (at least `floor`: sums that are 0 in exact
    arithmetic, such as dweight for rows of one value, are rounding noise in torch)."""
    scale = max(float(want.abs().max()) if want.numel() else 1.0, floor)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def _dx_scale(dy, rstd, w):
    """The size of dx's terms, rstd * w * dy: dx is their difference, 0 for a row of one value."""
    if dy.numel() == 0:
        return 0.0
    return float(dy.double().abs().max()) * float(rstd.double().max()) * (1.0 if w is None else float(w.detach().max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROW_SMALL + [c for c in ROW_CASES if c not in ROW_SMALL], ids=str)
def test_layer_norm_matches_torch(case, dtype, isa, torch):
    if case not in ROW_SMALL and dtype != "float32":
        pytest.skip("the wide row in float32 only")
    x, w, b, dy = _inputs(torch, case.shape, case.normalized, dtype, 1, case.affine)
    F = torch.nn.functional
    want_y, want_dx, want_dw, want_db = _autograd(
        torch, lambda x, w, b: F.layer_norm(x, case.normalized, w, b, case.eps), x, w, b, dy)
    y, mean, rstd = ft.layer_norm_forward(x, case.normalized, w, b, eps=case.eps)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype
    ty, tg = TOL[dtype]
    _close(torch, y, want_y, ty, "y")
    # torch.native_layer_norm's saved statistics: same shapes
    _, t_mean, t_rstd = torch.native_layer_norm(x.double(), case.normalized, None, None, case.eps)
    assert mean.shape == t_mean.shape and rstd.shape == t_rstd.shape
    _close(torch, rstd, t_rstd, 1e-6 if dtype != "float64" else 1e-12, "rstd")
    dx, dw, db = ft.layer_norm_backward(dy, x, case.normalized, mean, rstd, w)
    _close(torch, dx, want_dx, tg, "dx", floor=_dx_scale(dy, rstd, w))
    if w is not None:
        _close(torch, dw, want_dw, 1e-5 if dtype != "float64" else 1e-10, "dweight", floor=1.0)
        _close(torch, db, want_db, 1e-5 if dtype != "float64" else 1e-10, "dbias", floor=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROW_SMALL, ids=str)
def test_rms_norm_matches_torch(case, dtype, isa, torch):
    x, w, _, dy = _inputs(torch, case.shape, case.normalized, dtype, 2, case.affine)
    eps = torch.finfo(x.dtype).eps  # torch's default eps=None for x's dtype, spelled out for float64
    want_y, want_dx, want_dw, _ = _autograd(
        torch, lambda x, w, b: torch.nn.functional.rms_norm(x, case.normalized, w, eps), x, w, None, dy)
    y, rstd = ft.rms_norm_forward(x, case.normalized, w)  # eps=None: the same machine epsilon
    ty, tg = TOL[dtype]
    _close(torch, y, want_y, ty, "y")
    dx, dw = ft.rms_norm_backward(dy, x, case.normalized, rstd, w)
    # A row of one value: dx = rstd * g * eps / (x^2 + eps) cancels; compare at dy's scale.
    _close(torch, dx, want_dx, tg, "dx", floor=_dx_scale(dy, rstd, w))
    if w is not None:
        _close(torch, dw, want_dw, 1e-5 if dtype != "float64" else 1e-10, "dweight")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GROUP_SMALL + [c for c in GROUP_CASES if c not in GROUP_SMALL], ids=str)
def test_group_norm_matches_torch(case, dtype, isa, torch):
    if case not in GROUP_SMALL and dtype != "float32":
        pytest.skip("the large cases in float32 only")
    x, w, b, dy = _inputs(torch, case.shape, (case.channels,), dtype, 3, case.affine)
    cl = case.channels_last

    def torch_gn(x, w, b):  # torch's layout: (N, C, *), channels-last memory for the NHWC cases
        xt = x.movedim(-1, 1) if cl else x
        y = torch.nn.functional.group_norm(xt, case.groups, w, b, case.eps)
        return y.movedim(1, -1) if cl else y
    want_y, want_dx, want_dw, want_db = _autograd(torch, torch_gn, x, w, b, dy)
    y, mean, rstd = ft.group_norm_forward(x, case.groups, w, b, eps=case.eps, channels_last=cl)
    ty, tg = TOL[dtype]
    _close(torch, y, want_y, ty, "y")
    dx, dw, db = ft.group_norm_backward(dy, x, case.groups, mean, rstd, w, channels_last=cl)
    _close(torch, dx, want_dx, tg, "dx", floor=_dx_scale(dy, rstd, w))
    if w is not None:
        _close(torch, dw, want_dw, 1e-5 if dtype != "float64" else 1e-10, "dweight")
        _close(torch, db, want_db, 1e-5 if dtype != "float64" else 1e-10, "dbias")


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("case", [c for c in GROUP_SMALL if instance_norm_applies(c)],
                         ids=str)
def test_instance_norm_matches_torch(case, use_input_stats, isa, torch):
    x, w, b, dy = _inputs(torch, case.shape, (case.channels,), "float64", 4, case.affine)
    C = case.channels
    rm, rv = torch.linspace(-1, 1, C, dtype=torch.float64), torch.linspace(0.5, 2, C, dtype=torch.float64)
    t_rm, t_rv = rm.clone(), rv.clone()
    cl = case.channels_last
    # torch's own layout, contiguous: its instance_norm backward is wrong for a channels-last
    # input with a channels-last grad (torch 2.13, N = 1: off by O(1) against its group_norm).
    xt = (x.movedim(-1, 1) if cl else x).contiguous().requires_grad_(True)
    wt = None if w is None else w.clone().requires_grad_(True)
    yt = torch.nn.functional.instance_norm(xt, t_rm, t_rv, wt, b, use_input_stats, 0.3, case.eps)
    y, mean, rstd = ft.instance_norm(x, rm, rv, w, b, use_input_stats=use_input_stats, momentum=0.3,
                                     eps=case.eps, channels_last=cl)
    torch.testing.assert_close(y.movedim(-1, 1) if cl else y, yt.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rm, t_rm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rv, t_rv, rtol=1e-12, atol=1e-12)
    if use_input_stats:
        yt.backward((dy.movedim(-1, 1) if cl else dy).contiguous())
        dx, dw, _ = ft.group_norm_backward(dy, x, C, mean, rstd, w, channels_last=cl)
        torch.testing.assert_close(dx.movedim(-1, 1) if cl else dx, xt.grad, rtol=1e-9, atol=1e-9)
        if w is not None:
            torch.testing.assert_close(dw, wt.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5])
def test_eps_as_torch(eps, isa, torch):
    x = torch.randn(6, 10, dtype=torch.float64) + 1
    torch.testing.assert_close(ft.layer_norm_forward(x, 10, eps=eps)[0],
                               torch.nn.functional.layer_norm(x, (10,), eps=eps))
    torch.testing.assert_close(ft.rms_norm_forward(x, 10, eps=eps)[0],
                               torch.nn.functional.rms_norm(x, (10,), eps=eps))
    xg = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(ft.group_norm_forward(xg, 2, eps=eps)[0],
                               torch.nn.functional.group_norm(xg, 2, eps=eps))


def test_numpy_in_numpy_out(isa):
    x = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(np.float32)
    y, mean, rstd = ft.layer_norm_forward(x, (6, 5))
    assert isinstance(y, np.ndarray) and mean.shape == (4, 1, 1) and mean.dtype == np.float32
    y, mean, rstd = ft.group_norm_forward(x, 3)
    assert isinstance(mean, np.ndarray) and mean.shape == (4, 3)
