"""CUDA layer, RMS, group and instance norm against the float64 reference and torch on the GPU:
every kernel (statistics, row sums, column sums, group coefficients, elementwise passes, the
instance running update), every dtype, both layouts, empty inputs, determinism.  Skipped without
a GPU."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from bn_cases import output_tol, stats_tol
from gpu_support import require_torch_cuda, to_cuda, to_host
from ln_cases import (DTYPES, GROUP_CASES, GROUP_SMALL, ROW_CASES, ROW_SMALL, group_inputs,
                      instance_norm_applies, row_inputs)
from precisions import Tolerance, assert_close

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()

ROW_GRID = [(c, d) for c in ROW_SMALL for d in DTYPES] + [(c, "float32") for c in ROW_CASES if c not in ROW_SMALL]
GROUP_GRID = [(c, d) for c in GROUP_SMALL for d in DTYPES] + \
    [(c, "float32") for c in GROUP_CASES if c not in GROUP_SMALL]


def _dev(a):
    return None if a is None else to_cuda(torch, a)


def _h(t):
    return None if t is None else to_host(torch, t)


def _grad_tol(dtype):
    tol = output_tol(dtype)
    return Tolerance(tol.rtol * 4, tol.atol * 4)


def _sum_tol(dtype):
    return Tolerance(1e-10, 1e-11) if dtype == "float64" else Tolerance(1e-4, 1e-5)


def _dx_scale(dy, rstd, w):
    wmax = 1.0 if w is None else float(np.max(np.abs(w)))
    return float(np.max(np.abs(np.asarray(dy, np.float64)), initial=0)) * float(np.max(rstd, initial=0)) * wmax


def _ids(p):
    return f"{p[0]}-{p[1]}"


@pytest.mark.parametrize("case_dtype", ROW_GRID, ids=_ids)
def test_cuda_layer_and_rms_norm_match_reference(case_dtype):
    case, dtype = case_dtype
    x, w, b, dy = row_inputs(case, dtype, "cuda")
    y, mean, rstd = ft.layer_norm_forward(_dev(x), case.normalized, _dev(w), _dev(b), eps=case.eps)
    want = ref.layer_norm_forward(x, case.normalized, w, b, eps=case.eps)
    assert y.is_cuda and mean.is_cuda
    assert_close(_h(y), want[0], output_tol(dtype), "y")
    assert_close(_h(mean), want[1], stats_tol(dtype), "mean")
    assert_close(_h(rstd), want[2], stats_tol(dtype), "rstd")
    dx, dw, db = ft.layer_norm_backward(_dev(dy), _dev(x), case.normalized, mean, rstd, _dev(w))
    want = ref.layer_norm_backward(dy, x, case.normalized, _h(mean), _h(rstd), w)
    assert_close(_h(dx), want[0], _grad_tol(dtype), "dx", _dx_scale(dy, _h(rstd), w))
    if w is not None:
        assert_close(_h(dw), want[1], _sum_tol(dtype), "dweight")
        assert_close(_h(db), want[2], _sum_tol(dtype), "dbias")

    y, rstd = ft.rms_norm_forward(_dev(x), case.normalized, _dev(w))
    want = ref.rms_norm_forward(x, case.normalized, w)
    assert_close(_h(y), want[0], output_tol(dtype), "rms y")
    assert_close(_h(rstd), want[1], stats_tol(dtype), "rms rstd")
    dx, dw = ft.rms_norm_backward(_dev(dy), _dev(x), case.normalized, rstd, _dev(w))
    want = ref.rms_norm_backward(dy, x, case.normalized, _h(rstd), w)
    assert_close(_h(dx), want[0], _grad_tol(dtype), "rms dx", _dx_scale(dy, _h(rstd), w))
    if w is not None:
        assert_close(_h(dw), want[1], _sum_tol(dtype), "rms dweight")


@pytest.mark.parametrize("case_dtype", GROUP_GRID, ids=_ids)
def test_cuda_group_norm_matches_reference(case_dtype):
    case, dtype = case_dtype
    x, w, b, _, _, dy = group_inputs(case, dtype, "cuda")
    cl = case.channels_last
    y, mean, rstd = ft.group_norm_forward(_dev(x), case.groups, _dev(w), _dev(b), eps=case.eps,
                                          channels_last=cl)
    want = ref.group_norm_forward(x, case.groups, w, b, eps=case.eps, channels_last=cl)
    assert_close(_h(y), want[0], output_tol(dtype), "y")
    assert_close(_h(mean), want[1], stats_tol(dtype), "mean")
    assert_close(_h(rstd), want[2], stats_tol(dtype), "rstd")
    dx, dw, db = ft.group_norm_backward(_dev(dy), _dev(x), case.groups, mean, rstd, _dev(w),
                                        channels_last=cl)
    want = ref.group_norm_backward(dy, x, case.groups, _h(mean), _h(rstd), w, channels_last=cl)
    assert_close(_h(dx), want[0], _grad_tol(dtype), "dx", _dx_scale(dy, _h(rstd), w))
    if w is not None:
        assert_close(_h(dw), want[1], _sum_tol(dtype), "dweight")
        assert_close(_h(db), want[2], _sum_tol(dtype), "dbias")


INSTANCE = [c for c in GROUP_SMALL if instance_norm_applies(c)]


@pytest.mark.parametrize("case_dtype", [(c, d) for c in INSTANCE for d in DTYPES], ids=_ids)
def test_cuda_instance_norm_matches_reference(case_dtype):
    case, dtype = case_dtype
    x, w, b, rm, rv, _ = group_inputs(case, dtype, "cuda-instance")
    cl = case.channels_last
    ref_rm, ref_rv = rm.astype(np.float64), rv.astype(np.float64)
    drm, drv = _dev(rm), _dev(rv)
    y, mean, rstd = ft.instance_norm(_dev(x), drm, drv, _dev(w), _dev(b), momentum=0.3, channels_last=cl)
    want = ref.instance_norm(x, ref_rm, ref_rv, w, b, momentum=0.3, channels_last=cl)
    assert_close(_h(y), want[0], output_tol(dtype), "y")
    assert_close(_h(drm), ref_rm, stats_tol(dtype), "running_mean")
    assert_close(_h(drv), ref_rv, stats_tol(dtype), "running_var")
    before = (drm.clone(), drv.clone())
    y, mean, rstd = ft.instance_norm(_dev(x), drm, drv, _dev(w), _dev(b), use_input_stats=False,
                                     channels_last=cl)
    want = ref.instance_norm(x, _h(drm).astype(np.float64), _h(drv).astype(np.float64), w, b,
                             use_input_stats=False, channels_last=cl)
    assert torch.equal(drm, before[0]) and torch.equal(drv, before[1])
    assert_close(_h(y), want[0], output_tol(dtype), "y (running stats)")
    assert_close(_h(rstd), want[2], stats_tol(dtype), "rstd (running stats)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hidden", [1024, 4096, 8192])
def test_cuda_layer_and_rms_norm_match_torch_at_transformer_sizes(hidden, dtype):
    torch.manual_seed(0)
    x = (torch.randn(512, hidden, device="cuda") * 2 + 0.5).to(dtype)
    w = torch.rand(hidden, device="cuda") + 0.5
    b = torch.randn(hidden, device="cuda")
    dy = torch.randn_like(x)
    x64 = x.double().requires_grad_(True)
    w64, b64 = w.double().requires_grad_(True), b.double().requires_grad_(True)
    torch.nn.functional.layer_norm(x64, (hidden,), w64, b64).backward(dy.double())
    y, mean, rstd = ft.layer_norm_forward(x, hidden, w.to(dtype) if dtype != torch.float32 else w, b)
    dx, dw, db = ft.layer_norm_backward(dy, x, hidden, mean, rstd, w)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-5
    torch.testing.assert_close(dx.double(), x64.grad, rtol=tol, atol=tol * float(x64.grad.abs().max()))
    torch.testing.assert_close(dw.double(), w64.grad, rtol=1e-4, atol=1e-4 * float(w64.grad.abs().max()))
    torch.testing.assert_close(db.double(), b64.grad, rtol=1e-4, atol=1e-4 * float(b64.grad.abs().max()))
    want_y = torch.nn.functional.rms_norm(x.double(), (hidden,), w.double(), torch.finfo(dtype).eps)
    torch.testing.assert_close(ft.rms_norm_forward(x, hidden, w)[0].double(), want_y, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hidden", [1024, 8192])
def test_cuda_row_kernel_switches(hidden, dtype):
    """Note [row kernel switches] on the GPU: the L2 prefetch, the staged rows or the dependent
    launch off give the same bits; the column sums in registers the same y and dx, dweight /
    dbias to rounding. The RMS norm
    keeps one sum a column (Note [one column sum])."""
    torch.manual_seed(1)
    x = (torch.randn(1000, hidden, device="cuda") * 2 + 0.5).to(dtype)
    w, b = torch.rand(hidden, device="cuda") + 0.5, torch.randn(hidden, device="cuda")
    dy = torch.randn_like(x)
    sums = ("dweight", "dbias", "rms dweight")

    def run():
        y, mean, rstd = ft.layer_norm_forward(x, hidden, w, b)
        dx, dw, db = ft.layer_norm_backward(dy, x, hidden, mean, rstd, w)
        ry, rrstd = ft.rms_norm_forward(x, hidden, w)
        rdx, rdw = ft.rms_norm_backward(dy, x, hidden, rrstd, w)
        return {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db,
                "rms y": ry, "rms rstd": rrstd, "rms dx": rdx, "rms dweight": rdw}

    want = run()
    before = ft._C._cuda_row_kernel_options()
    try:
        for off in ({"l2_prefetch": False}, {"shared_column_sums": False}, {"staged_rows": False},
                    {"dependent_launch": False}):
            ft._C._cuda_row_kernel_options(**before)
            ft._C._cuda_row_kernel_options(**off)
            for name, got in run().items():
                c = want[name]
                if "shared_column_sums" in off and name in sums:
                    torch.testing.assert_close(got, c, rtol=1e-5, atol=1e-5 * float(c.abs().max()))
                else:
                    assert torch.equal(got, c), (off, name)
    finally:
        ft._C._cuda_row_kernel_options(**before)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_group_norm_matches_torch_and_is_deterministic(channels_last):
    torch.manual_seed(0)
    x = torch.randn(8, 64, 28, 28, device="cuda") * 3 + 1
    w, b = torch.rand(64, device="cuda") + 0.5, torch.randn(64, device="cuda")
    xt = x.clone().requires_grad_(True)
    wt, bt = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    yt = torch.nn.functional.group_norm(xt, 16, wt, bt)
    dy = torch.randn_like(yt)
    yt.backward(dy)
    xl = x.permute(0, 2, 3, 1).contiguous() if channels_last else x
    dyl = dy.permute(0, 2, 3, 1).contiguous() if channels_last else dy
    runs = []
    for _ in range(2):
        y, mean, rstd = ft.group_norm_forward(xl, 16, w, b, channels_last=channels_last)
        runs.append((y, mean, rstd) + ft.group_norm_backward(dyl, xl, 16, mean, rstd, w,
                                                             channels_last=channels_last))
    assert all(torch.equal(a, c) for a, c in zip(*runs))
    y, _, _, dx, dw, db = runs[0]
    back = (lambda t: t.permute(0, 3, 1, 2)) if channels_last else (lambda t: t)
    torch.testing.assert_close(back(y), yt.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back(dx), xt.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dw, wt.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(db, bt.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(300, 1024), (64, 4096), (33, 100)], ids=str)
def test_cuda_backward_without_weight_grads(shape, dtype):
    """weight_grads=False on the GPU: no column sums, dx the same bits, the weight grads None;
    row kernels (vector rows), the planar passes (100 columns) and channels-last group norm. And
    bias_grads=False: dbias None, dx and dweight the same bits."""
    torch.manual_seed(3)
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype)
    dy = torch.randn_like(x)
    H = shape[-1]
    w, b = torch.rand(H, device="cuda") + 0.5, torch.randn(H, device="cuda")
    _, mean, rstd = ft.layer_norm_forward(x, H, w, b)
    _, rrstd = ft.rms_norm_forward(x, H, w)
    g = x.view(shape[0], 1, 1, H)  # (N, H=1, W=1, C) channels-last images
    _, gmean, grstd = ft.group_norm_forward(g, 4 if H % 4 == 0 else 1, w, b, channels_last=True)
    calls = [lambda wg: ft.layer_norm_backward(dy, x, H, mean, rstd, w, weight_grads=wg),
             lambda wg: ft.rms_norm_backward(dy, x, H, rrstd, w, weight_grads=wg),
             lambda wg: ft.group_norm_backward(dy.view_as(g), g, 4 if H % 4 == 0 else 1, gmean, grstd,
                                               w, channels_last=True, weight_grads=wg)]
    for call in calls:
        full, frozen = call(True), call(False)
        assert torch.equal(frozen[0], full[0]) and all(t is None for t in frozen[1:])
    # bias_grads=False: one sum a column (Note [one column sum]), dx and dweight the same bits.
    full = ft.layer_norm_backward(dy, x, H, mean, rstd, w)
    alone = ft.layer_norm_backward(dy, x, H, mean, rstd, w, bias_grads=False)
    assert torch.equal(alone[0], full[0]) and torch.equal(alone[1], full[1]) and alone[2] is None


def test_cuda_empty_inputs_and_zero_param_grads():
    x = torch.empty(0, 16, device="cuda")
    w = torch.ones(16, device="cuda")
    y, mean, rstd = ft.layer_norm_forward(x, 16, w, torch.zeros(16, device="cuda"))
    dx, dw, db = ft.layer_norm_backward(x, x, 16, mean, rstd, w)
    torch.cuda.synchronize()
    assert y.shape == (0, 16) and torch.all(dw == 0) and torch.all(db == 0)
    g = torch.empty(0, 4, 3, device="cuda")
    y, mean, rstd = ft.group_norm_forward(g, 2, torch.ones(4, device="cuda"))
    dx, dw, db = ft.group_norm_backward(g, g, 2, mean, rstd, torch.ones(4, device="cuda"))
    torch.cuda.synchronize()
    assert torch.all(dw == 0) and torch.all(db == 0)


def test_cuda_modules_match_torch():
    import fusedtrain.torch as ftt
    from module_support import compare_one_step
    torch.manual_seed(0)
    for name, kw, shape in (("LayerNorm", dict(normalized_shape=256), (64, 256)),
                            ("RMSNorm", dict(normalized_shape=256), (64, 256)),
                            ("GroupNorm", dict(num_groups=4, num_channels=32), (4, 32, 9, 9)),
                            ("InstanceNorm2d", dict(num_features=32, affine=True, track_running_stats=True),
                             (4, 32, 9, 9))):
        theirs = getattr(torch.nn, name)(**kw).cuda()
        ours = getattr(ftt, name)(**kw).cuda()
        ours.load_state_dict(theirs.state_dict())
        compare_one_step(theirs, ours, torch.randn(shape, device="cuda"), (1e-5, 1e-5), (1e-4, 1e-4))
        for k, v in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_cuda_modules_differentiate_their_gradient_as_torch():
    """Note [double backward] on the GPU: a gradient penalty through each module (float64, so
    the comparison is of the algorithm, not of rounding) as through torch.nn's."""
    import fusedtrain.torch as ftt
    from module_support import compare_double_backward
    torch.manual_seed(0)
    for name, kw, shape in (("LayerNorm", dict(normalized_shape=24), (6, 24)),
                            ("RMSNorm", dict(normalized_shape=24), (6, 24)),
                            ("GroupNorm", dict(num_groups=2, num_channels=4), (3, 4, 5, 5)),
                            ("BatchNorm2d", dict(num_features=4), (3, 4, 5, 5)),
                            ("InstanceNorm2d", dict(num_features=4, affine=True,
                                                    track_running_stats=True), (3, 4, 5, 5))):
        theirs = getattr(torch.nn, name)(**kw).double().cuda()
        ours = getattr(ftt, name)(**kw).double().cuda()
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(shape, dtype=torch.float64, device="cuda")
        compare_double_backward(theirs, ours, x)
