"""Batch norm against torch.nn.functional.batch_norm (forward, running stats) and its autograd."""

import numpy as np
import pytest

import fusedtrain as ft
from bn_cases import CASES, make_inputs
from precisions import Tolerance, assert_close

TOL = {"float32": Tolerance(2e-5, 2e-6), "float64": Tolerance(1e-11, 1e-12)}
GRAD_TOL = {"float32": Tolerance(1e-4, 2e-5), "float64": Tolerance(1e-10, 1e-11)}


def _torch_nchw(torch, case, a, requires_grad=False):
    t = torch.from_numpy(np.ascontiguousarray(case.to_nchw(a)))
    return t.requires_grad_(requires_grad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_forward_and_autograd(case, dtype, isa, torch):
    F = torch.nn.functional
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "torch")
    t_x = _torch_nchw(torch, case, x, requires_grad=True)
    t_w = None if w is None else torch.from_numpy(w.copy()).requires_grad_(True)
    t_b = None if b is None else torch.from_numpy(b.copy()).requires_grad_(True)
    t_rm, t_rv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    t_y = F.batch_norm(t_x, t_rm, t_rv, t_w, t_b, training=True, momentum=case.momentum, eps=1e-5)
    t_y.backward(_torch_nchw(torch, case, dy))

    y, save_mean, save_invstd = ft.batch_norm_forward(
        x, w, b, rm, rv, training=True, momentum=case.momentum, eps=1e-5,
        channels_last=case.channels_last)
    tol = TOL[dtype]
    assert_close(case.to_nchw(y), t_y.detach().numpy(), tol, "y")
    assert_close(rm, t_rm.numpy(), tol, "running_mean")
    assert_close(rv, t_rv.numpy(), tol, "running_var")

    dx, dw, db = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd,
                                        channels_last=case.channels_last)
    assert_close(case.to_nchw(dx), t_x.grad.numpy(), GRAD_TOL[dtype], "dx")
    if w is not None:
        assert_close(dw, t_w.grad.numpy(), GRAD_TOL[dtype], "dweight")
        assert_close(db, t_b.grad.numpy(), GRAD_TOL[dtype], "dbias")


@pytest.mark.parametrize("case", CASES[:6], ids=str)
def test_matches_torch_eval(case, isa, torch):
    x, w, b, rm, rv, _ = make_inputs(case, "float32", "torch-eval")
    t_y = torch.nn.functional.batch_norm(_torch_nchw(torch, case, x), torch.from_numpy(rm),
                                         torch.from_numpy(rv),
                                         None if w is None else torch.from_numpy(w),
                                         None if b is None else torch.from_numpy(b),
                                         training=False, eps=1e-4)
    y = ft.batch_norm_forward(x, w, b, rm, rv, training=False, eps=1e-4,
                              channels_last=case.channels_last)[0]
    assert_close(case.to_nchw(y), t_y.numpy(), TOL["float32"], "y")


def test_torch_tensors_in_torch_tensors_out(isa, torch):
    x = torch.randn(6, 4, 5, 3)
    w, b = torch.rand(4) + 0.5, torch.randn(4)
    rm, rv = torch.zeros(4), torch.ones(4)
    y, save_mean, save_invstd = ft.batch_norm_forward(x, w, b, rm, rv)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == x.shape
    assert isinstance(save_mean, torch.Tensor)
    want = torch.nn.functional.batch_norm(x, torch.zeros(4), torch.ones(4), w, b, training=True)
    torch.testing.assert_close(y, want, rtol=2e-5, atol=2e-6)
    dx, dw, db = ft.batch_norm_backward(torch.ones_like(x), x, w, save_mean, save_invstd)
    assert isinstance(dx, torch.Tensor) and isinstance(dw, torch.Tensor)
    mean, var, count = ft.batch_norm_stats(x.permute(0, 2, 3, 1).contiguous(), channels_last=True)
    assert isinstance(mean, torch.Tensor) and count == 6 * 5 * 3
    torch.testing.assert_close(mean, x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_bfloat16_tensors_match_torch(isa, torch):
    x = (torch.randn(8, 5, 6, 7) * 3 + 1).to(torch.bfloat16)
    w, b = torch.rand(5) + 0.5, torch.randn(5)
    y = ft.batch_norm_forward(x, w, b)[0]
    want = torch.nn.functional.batch_norm(x.float(), None, None, w, b, training=True)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), want, rtol=2 ** -7, atol=2 ** -6)
