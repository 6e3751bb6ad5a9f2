"""CUDA batch norm against the float64 reference and torch.nn.functional.batch_norm on the GPU:
every case x dtype, both layouts, eval mode, stats, running-stat update.  Skipped without a GPU."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from bn_cases import CASES, DTYPES, SMALL, make_inputs, output_tol, stats_tol
from gpu_support import require_torch_cuda, to_cuda, to_host
from precisions import Tolerance, assert_close

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()

GRID = [(c, d) for c in SMALL for d in DTYPES] + [(c, "float32") for c in CASES if c not in SMALL]
# ResNet-like shapes at a small batch: big enough for split reductions across many blocks.
LARGE = [((32, 64, 56, 56), False), ((32, 56, 56, 64), True), ((4096, 1024), False),
         ((8, 16, 112, 112), False), ((8, 112, 112, 16), True)]


def _dev(a):
    return None if a is None else to_cuda(torch, a)


@pytest.mark.parametrize("case_dtype", GRID, ids=lambda p: f"{p[0]}-{p[1]}")
def test_cuda_forward_backward_match_reference(case_dtype):
    case, dtype = case_dtype
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "cuda")
    ref_rm, ref_rv = rm.astype(np.float64), rv.astype(np.float64)
    drm, drv = _dev(rm), _dev(rv)
    y, sm, si = ft.batch_norm_forward(_dev(x), _dev(w), _dev(b), drm, drv, training=True,
                                      momentum=case.momentum, channels_last=case.channels_last)
    want_y, want_m, want_i = ref.batch_norm_forward(x, w, b, ref_rm, ref_rv, training=True,
                                                    momentum=case.momentum,
                                                    channels_last=case.channels_last)
    assert y.is_cuda and sm.is_cuda
    assert_close(to_host(torch, y), want_y, output_tol(dtype), "y")
    assert_close(to_host(torch, sm), want_m, stats_tol(dtype), "save_mean")
    assert_close(to_host(torch, si), want_i, stats_tol(dtype), "save_invstd")
    assert_close(to_host(torch, drm), ref_rm, stats_tol(dtype), "running_mean")
    assert_close(to_host(torch, drv), ref_rv, stats_tol(dtype), "running_var")
    dx, dw, db = ft.batch_norm_backward(_dev(dy), _dev(x), _dev(w), sm, si,
                                        channels_last=case.channels_last)
    want_dx, want_dw, want_db = ref.batch_norm_backward(dy, x, w, to_host(torch, sm),
                                                        to_host(torch, si),
                                                        channels_last=case.channels_last)
    tol = output_tol(dtype)
    assert_close(to_host(torch, dx), want_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx")
    if w is not None:
        assert_close(to_host(torch, dw), want_dw, Tolerance(1e-4, 1e-5), "dweight")
        assert_close(to_host(torch, db), want_db, Tolerance(1e-4, 1e-5), "dbias")


@pytest.mark.parametrize("case_dtype", GRID, ids=lambda p: f"{p[0]}-{p[1]}")
def test_cuda_backward_halves_match_reference(case_dtype):
    """Note [given sums]: the sums alone, then dx from a batch three times x's."""
    case, dtype = case_dtype
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "cuda")
    cl = case.channels_last
    _, sm, si = ft.batch_norm_forward(_dev(x), _dev(w), _dev(b), training=True, channels_last=cl)
    hsm, hsi = to_host(torch, sm), to_host(torch, si)
    none, s_xhat, s_dy = ft.batch_norm_backward(_dev(dy), _dev(x), _dev(w), sm, si,
                                                channels_last=cl, input_grad=False)
    _, want_xhat, want_dy = ref.batch_norm_backward(dy, x, w, hsm, hsi, channels_last=cl,
                                                    input_grad=False)
    assert none is None and s_xhat.is_cuda
    assert_close(to_host(torch, s_xhat), want_xhat, Tolerance(1e-4, 1e-5), "sum_dy_xhat")
    assert_close(to_host(torch, s_dy), want_dy, Tolerance(1e-4, 1e-5), "sum_dy")
    count = 3 * (x.size // want_dy.size)
    sums = (want_dy * 3 + 1.0, want_xhat * 3 - 0.5, count)
    dx, dw, db = ft.batch_norm_backward(
        _dev(dy), _dev(x), _dev(w), sm, si, channels_last=cl,
        sums=(_dev(sums[0]), _dev(sums[1]), count))
    want_dx, _, _ = ref.batch_norm_backward(dy, x, w, hsm, hsi, channels_last=cl, sums=sums)
    assert dw is None and db is None
    tol = output_tol(dtype)
    assert_close(to_host(torch, dx), want_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx")


@pytest.mark.parametrize("shape,channels_last", LARGE, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_matches_torch_functional(shape, channels_last, dtype):
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype)
    C = shape[-1] if channels_last else shape[1]
    w, b = torch.rand(C, device="cuda") + 0.5, torch.randn(C, device="cuda")
    rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")
    trm, trv = rm.clone(), rv.clone()
    y, sm, si = ft.batch_norm_forward(x, w, b, rm, rv, training=True, channels_last=channels_last)
    xt = x.movedim(-1, 1) if channels_last else x
    xt = xt.detach().requires_grad_(True)
    wt, bt = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    yt = torch.nn.functional.batch_norm(xt, trm, trv, wt, bt, training=True)
    got = y.movedim(-1, 1) if channels_last else y
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-5
    torch.testing.assert_close(got.float(), yt.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(rm, trm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rv, trv, rtol=1e-5, atol=1e-6)
    dy = torch.randn_like(yt)
    yt.backward(dy)
    dyl = dy.movedim(1, -1).contiguous() if channels_last else dy
    dx, dw, db = ft.batch_norm_backward(dyl, x, w, sm, si, channels_last=channels_last)
    got_dx = dx.movedim(-1, 1) if channels_last else dx
    torch.testing.assert_close(got_dx.float(), xt.grad.float(), rtol=tol, atol=tol)
    # dweight / dbias are sums over every value of a channel: against float64 sums of the same
    # (rounded) inputs tightly; against torch as loosely as its own rounding needs (its bf16 NCHW
    # path rounds the normalized input to bf16 before the sum, about 1% on these shapes).
    x64 = xt.detach().double().requires_grad_(True)
    w64, b64 = w.double().requires_grad_(True), b.double().requires_grad_(True)
    torch.nn.functional.batch_norm(x64, None, None, w64, b64, training=True).backward(dy.double())
    for got, want, theirs in ((dw, w64.grad, wt.grad), (db, b64.grad, bt.grad)):
        scale = float(want.abs().max())
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale)
        loose = 2e-2 if dtype == torch.bfloat16 else 1e-4
        torch.testing.assert_close(theirs.double(), want, rtol=loose, atol=loose * scale)


def test_cuda_eval_mode_changes_nothing_and_stats_helpers():
    x = torch.randn(16, 8, 9, 9, device="cuda") * 3 + 1e4
    rm, rv = torch.full((8,), 1e4, device="cuda"), torch.full((8,), 9.0, device="cuda")
    rm0, rv0 = rm.clone(), rv.clone()
    y, _, _ = ft.batch_norm_forward(x, None, None, rm, rv, training=False)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
    torch.testing.assert_close(y, (x - 1e4) / torch.sqrt(torch.tensor(9.0 + 1e-5)), rtol=1e-4, atol=1e-3)
    mean, var, count = ft.batch_norm_stats(x)
    xd = x.double()
    torch.testing.assert_close(mean.double(), xd.mean(dim=(0, 2, 3)), rtol=1e-7, atol=1e-3)
    torch.testing.assert_close(var.double(), xd.var(dim=(0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-4)
    assert count == 16 * 81
    rm_held, rv_held = rm.clone(), rv.clone()
    ft.update_running_stats_(rm, rv, mean, var, count, momentum=0.5)
    torch.testing.assert_close(rm, 0.5 * rm0 + 0.5 * mean, rtol=1e-6, atol=1e-3)
    # A count on the device is read there (Note [device count]): the same bits.
    held = torch.tensor([float(count)], dtype=torch.float64, device="cuda")
    ft.update_running_stats_(rm_held, rv_held, mean, var, held, momentum=0.5)
    assert torch.equal(rm_held, rm) and torch.equal(rv_held, rv)


def test_cuda_bn_is_deterministic():
    x = torch.randn(64, 32, 28, 28, device="cuda")
    first = ft.batch_norm_forward(x, training=True)
    for _ in range(3):
        again = ft.batch_norm_forward(x, training=True)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("switch", ["rows_walk_prefetch", "reverse_second_pass", "dependent_launch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, cl", [((16, 28, 28, 32), True), ((4099, 1024), False), ((8, 14, 14, 64), True),
                                       ((16, 64, 28, 28), False), ((8, 32, 7, 7), False)], ids=str)
def test_cuda_row_and_pass_order_switches_change_no_bit(shape, cl, dtype, switch):
    """Note [row kernel switches]: the rows passes' next-batch prefetch (batch norm channels-last
    and 2-d, group norm channels-last) off, the elementwise passes in index order (Note [second
    pass in reverse]; planar, masked planar 7x7 and rows), and the kernels launched as usual
    rather than as dependents (Note [dependent launch]) give the same bits, forward and
    backward."""
    torch.manual_seed(2)
    x = (torch.randn(shape, device="cuda") * 3 + 1).to(dtype)
    dy = torch.randn_like(x)
    C = shape[-1] if cl or len(shape) == 2 else shape[1]
    w, b = torch.rand(C, device="cuda") + 0.5, torch.randn(C, device="cuda")

    def run():
        rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")
        y, sm, si = ft.batch_norm_forward(x, w, b, rm, rv, training=True, channels_last=cl)
        out = [y, sm, si, rm, rv, *ft.batch_norm_backward(dy, x, w, sm, si, channels_last=cl)]
        if cl:
            y, mean, rstd = ft.group_norm_forward(x, 8, w, b, channels_last=True)
            out += [y, mean, rstd, *ft.group_norm_backward(dy, x, 8, mean, rstd, w, channels_last=True)]
        return out

    want = run()
    before = ft._C._cuda_row_kernel_options(**{switch: False})
    try:
        got = run()
    finally:
        ft._C._cuda_row_kernel_options(**before)
    assert len(got) == len(want)
    assert all(torch.equal(a, c) for a, c in zip(got, want))


@pytest.mark.parametrize("dependent", [True, False], ids=["dependent-launch", "plain-launch"])
def test_cuda_norms_captured_in_a_graph_equal_eager(dependent):
    """Batch (planar, masked 7x7, channels-last), layer and group norm forward + backward captured
    in a CUDA graph (their scratch then comes from the graph's allocations, and on sm_90 their
    kernels are dependent launches, Note [dependent launch]) and replayed on new inputs: the same
    bits as eager calls on those inputs."""
    torch.manual_seed(4)
    before = ft._C._cuda_row_kernel_options(dependent_launch=dependent)
    try:
        cases = [((8, 32, 14, 14), False), ((16, 64, 7, 7), False), ((8, 14, 14, 64), True)]
        xs = [torch.randn(shape, device="cuda") for shape, _ in cases] + [torch.randn(96, 1024, device="cuda")]
        dys = [torch.randn_like(x) for x in xs]
        w = torch.rand(1024, device="cuda") + 0.5
        b = torch.randn(1024, device="cuda")

        def step():
            out = []
            for (shape, cl), x, dy in zip(cases, xs, dys):
                C = shape[-1] if cl else shape[1]
                y, sm, si = ft.batch_norm_forward(x, w[:C], b[:C], training=True, channels_last=cl)
                out += [y, sm, si, *ft.batch_norm_backward(dy, x, w[:C], sm, si, channels_last=cl)]
                if cl:
                    y, mean, rstd = ft.group_norm_forward(x, 8, w[:C], b[:C], channels_last=True)
                    out += [y, mean, rstd, *ft.group_norm_backward(dy, x, 8, mean, rstd, w[:C], channels_last=True)]
            y, mean, rstd = ft.layer_norm_forward(xs[-1], 1024, w, b)
            return out + [y, mean, rstd, *ft.layer_norm_backward(dys[-1], xs[-1], 1024, mean, rstd, w)]

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            step()  # warm-up outside the capture
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=s):
                captured = step()
        torch.cuda.current_stream().wait_stream(s)
        for t in xs + dys:
            t.copy_(torch.randn_like(t) * 2 + 1)
        g.replay()
        eager = step()
        torch.cuda.synchronize()
        assert len(captured) == len(eager)
        assert all(torch.equal(a, e) for a, e in zip(captured, eager))
    finally:
        ft._C._cuda_row_kernel_options(**before)


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (0, 5)])
def test_cuda_eval_mode_on_an_empty_batch_writes_the_saved_stats(shape):
    rm = torch.linspace(-1, 1, 5, device="cuda")
    rv = torch.linspace(0.5, 2, 5, device="cuda")
    x = torch.empty(shape, device="cuda")
    y, sm, si = ft.batch_norm_forward(x, None, None, rm, rv, training=False)
    torch.cuda.synchronize()
    assert y.shape == x.shape
    torch.testing.assert_close(sm, rm)
    torch.testing.assert_close(si, torch.rsqrt(rv + 1e-5), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("shape, channels_last", [((0, 3, 4), False), ((64, 8, 0), False),
                                                  ((0, 1), False), ((0, 5, 3), True),
                                                  ((4, 0, 1), True), ((4, 8, 0, 3), False)], ids=str)
def test_cuda_empty_batch_in_eval_and_stats(shape, channels_last, dtype):
    C = shape[-1] if channels_last else shape[1]
    x = torch.zeros(shape, device="cuda", dtype=dtype)
    rm = torch.linspace(-1, 1, C, device="cuda")
    rv = torch.linspace(0.5, 2, C, device="cuda")
    y, sm, si = ft.batch_norm_forward(x, None, None, rm, rv, training=False,
                                      channels_last=channels_last)
    mean, var, count = ft.batch_norm_stats(x, channels_last=channels_last)
    torch.cuda.synchronize()
    assert y.shape == x.shape and count == 0
    torch.testing.assert_close(sm.double(), rm.double())
    torch.testing.assert_close(si.double(), torch.rsqrt(rv.double() + 1e-5), rtol=1e-6, atol=0)
    assert not mean.any() and not var.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, channels_last", [((0, 3, 4), False), ((64, 8, 0), False),
                                                  ((0, 5, 3), True), ((4, 8, 0, 3), False)], ids=str)
def test_cuda_empty_batch_in_training(shape, channels_last, dtype):
    """Note [empty training batch] on the GPU: the same saved statistics as on the CPU, the
    running statistics kept, zero dweight / dbias; the module as torch's."""
    C = shape[-1] if channels_last else shape[1]
    x = torch.zeros(shape, device="cuda", dtype=dtype)
    w = torch.linspace(0.5, 1.5, C, device="cuda")
    rm = torch.linspace(-1, 1, C, device="cuda")
    rv = torch.linspace(0.5, 2, C, device="cuda")
    kept = rm.clone(), rv.clone()
    y, sm, si = ft.batch_norm_forward(x, w, None, rm, rv, training=True, eps=1e-3,
                                      channels_last=channels_last)
    _, want_m, want_i = ft.batch_norm_forward(x.cpu(), w.cpu(), None, training=True, eps=1e-3,
                                              channels_last=channels_last)
    dx, dw, db = ft.batch_norm_backward(x, x, w, sm, si, channels_last=channels_last)
    torch.cuda.synchronize()
    assert y.shape == x.shape and dx.shape == x.shape
    assert torch.equal(rm, kept[0]) and torch.equal(rv, kept[1])
    assert torch.equal(sm.cpu(), want_m) and torch.equal(si.cpu(), want_i)
    assert not dw.any() and not db.any()
    import fusedtrain.torch as ftt
    ref, ours = torch.nn.BatchNorm1d(C).cuda(), ftt.BatchNorm1d(C).cuda()
    for m in (ref, ours):
        xm = torch.zeros(0, C, device="cuda", requires_grad=True)
        m(xm).sum().backward()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    assert torch.equal(ours.weight.grad, ref.weight.grad) and torch.equal(ours.bias.grad, ref.bias.grad)
