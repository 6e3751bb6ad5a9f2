"""ft.torch.SyncBatchNorm's synchronized path on CUDA tensors over NCCL, in a process group of
this process alone (one GPU): the statistics row gathered on the device, Chan's merge, the
running statistics and the two-half backward (Note [synchronized batch norm]) against
torch.nn.BatchNorm*d in float64 on the host, with one collective each way; and
RunningStats.all_reduce over NCCL. The multi-rank equalities run over gloo in
test_distributed_batch_norm.py. Skipped without a GPU."""
import socket

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.torch as ftt
from gpu_support import require_torch_cuda

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()
dist = torch.distributed
from dist_support import Collectives, assert_close  # noqa: E402
from fusedtrain.torch.sync_batch_norm import _SyncBatchNormFunction  # noqa: E402

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
CL = torch.channels_last
TOL = {F32: 1e-5, F64: 1e-10, BF16: 3e-2}
# (dtype, shape, memory format, mean of x)
CASES = [
    (F32, (8, 16, 6, 6), None, 0.5),
    (F32, (6, 32, 5, 5), CL, 0.5),
    (F32, (64, 24), None, -1.0),
    (F32, (4, 8, 7, 7), CL, 1e4),
    (F64, (5, 6, 4, 3), None, 0.5),
    (BF16, (6, 16, 3, 3), CL, 0.5),
]


@pytest.fixture(scope="module")
def nccl_group():
    if not (dist.is_available() and dist.is_nccl_available()):
        pytest.skip("torch.distributed has no NCCL backend in this build of torch")
    if dist.is_initialized():
        pytest.skip("a default process group is already up in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def _reference(shape):
    return {2: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](shape[1]).to(F64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{'cl' if c[2] else 'plain'}-{c[3]:g}")
def test_synchronized_path_over_nccl_matches_float64_batch_norm(nccl_group, case):
    dtype, shape, fmt, loc = case
    C = shape[1]
    ours = ftt.SyncBatchNorm(C).to(device="cuda", dtype=dtype)
    ref = _reference(shape)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(C, generator=g, dtype=F64) + 0.5)
        ours.bias.copy_(torch.randn(C, generator=g, dtype=F64))
    ref.load_state_dict({k: v.cpu().to(F64) if v.is_floating_point() else v.cpu()
                         for k, v in ours.state_dict().items()})
    for step in range(2):
        x_all = (torch.randn(shape, generator=g, dtype=F64) * 2 + loc).to(dtype)
        dy_all = torch.randn(shape, generator=g, dtype=F64).to(dtype)
        if fmt is not None:
            x_all, dy_all = x_all.contiguous(memory_format=fmt), dy_all.contiguous(memory_format=fmt)
        x_ref = x_all.to(F64, copy=True).requires_grad_(True)
        y_ref = ref(x_ref)
        y_ref.backward(dy_all.to(F64))
        x = x_all.cuda().requires_grad_(True)
        # The module takes the local path in a group of one; the function is the path a
        # multi-GPU job runs, here with NCCL moving the rows.
        with Collectives() as fwd:
            y = _SyncBatchNormFunction.apply(x, ours.weight, ours.bias, ours.running_mean,
                                             ours.running_var, ours.momentum, ours.eps, nccl_group)
        with Collectives() as bwd:
            y.backward(dy_all.cuda())
        what = f"{case} step {step}"
        assert (len(fwd.names), len(bwd.names)) == (1, 1), (fwd.names, bwd.names)
        assert y.is_cuda and y.dtype == dtype
        if fmt is not None:
            assert y.is_contiguous(memory_format=fmt), f"{what}: output lost its memory format"
        tol = TOL[dtype]
        assert_close(y.cpu(), y_ref, tol, f"{what} y")
        assert_close(x.grad.cpu(), x_ref.grad, tol, f"{what} x.grad")
        for name in ("weight", "bias"):
            p, p_ref = getattr(ours, name), getattr(ref, name)
            assert_close(p.grad.cpu(), p_ref.grad, tol, f"{what} {name}.grad")
            p.grad = p_ref.grad = None
        for name in ("running_mean", "running_var"):
            assert_close(getattr(ours, name).cpu(), getattr(ref, name), tol, f"{what} {name}")


@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "nhwc"])
def test_synchronized_step_never_waits_for_the_device(nccl_group, fmt):
    """Note [merge on the device]: no op of the forward or backward makes the host wait (torch
    raises on a synchronizing op in sync-debug mode "error"); the rows, the merge, the count
    and the running statistics stay on the device."""
    bn = ftt.SyncBatchNorm(16).cuda()
    x = torch.randn(8, 16, 6, 6, device="cuda")
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    x.requires_grad_(True)
    dy = torch.randn_like(x)
    args = (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, nccl_group)
    _SyncBatchNormFunction.apply(x, *args).backward(dy)   # warm: allocations, NCCL setup
    torch.cuda.synchronize()
    before = bn.running_var.clone()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = _SyncBatchNormFunction.apply(x, *args)
        y.backward(dy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert not torch.equal(bn.running_var, before)


def test_group_of_one_takes_the_local_path(nccl_group):
    x = torch.randn(4, 8, 5, 5, device="cuda")
    ours, local = ftt.SyncBatchNorm(8).cuda(), ftt.BatchNorm2d(8).cuda()
    with Collectives() as calls:
        y = ours(x)
    assert calls.names == []
    torch.testing.assert_close(y, local(x), rtol=0, atol=0)


def test_running_stats_all_reduce_over_nccl(nccl_group):
    rng = np.random.default_rng(3)
    batch = (3.0 + rng.standard_normal((50, 6))).astype(np.float32)
    rs = ft.RunningStats(6)
    rs.update(batch)
    mean, var, count = np.array(rs.mean), np.array(rs.var), rs.count
    with Collectives() as calls:
        rs.all_reduce(nccl_group)
    assert len(calls.names) == 1, calls.names
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rs.var, var, rtol=1e-12, atol=1e-12)
    assert rs.count == count
