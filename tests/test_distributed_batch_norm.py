"""ft.torch.SyncBatchNorm and RunningStats.all_reduce across processes (gloo, loopback).

Each rank holds a slice of one batch; the reference is one process's float64 batch norm on the
whole batch (torch.nn.BatchNorm*d on the concatenation). Outputs, input grads, weight/bias
grads (summed over ranks, as data parallelism does) and running statistics must agree to 1e-5
for float32 input and 1e-10 for float64, for NCHW, channels_last and 2-d/3-d input, uneven
splits, an empty slice and mean 1e4; every training forward and backward issues exactly one
collective, evaluation none. The in-process tests cover what needs no second rank.
"""
import copy

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this build of torch",
                allow_module_level=True)

import fusedtrain as ft  # noqa: E402
import fusedtrain.torch as ftt  # noqa: E402
from dist_support import Collectives, assert_close, run_ranks  # noqa: E402

dist = torch.distributed
F32, F64 = torch.float32, torch.float64
CL, CL3 = torch.channels_last, torch.channels_last_3d
BF16 = torch.bfloat16
TOL = {F32: 1e-5, F64: 1e-10, BF16: 3e-2}     # bfloat16: 8 bits of mantissa in x, y and dx

# (dtype, whole batch shape, memory format, batch size per rank, mean of x, module options)
CASES_2 = [
    (F32, (6, 5, 4, 3), None, [2, 4], 0.5, {}),
    (F32, (7, 5, 4, 3), CL, [4, 3], 0.5, {"momentum": None}),
    (F32, (9, 6), None, [5, 4], -1.0, {"affine": False}),
    (F32, (5, 4, 7), None, [1, 4], 0.5, {"eps": 1e-3}),
    (F32, (6, 4, 5, 5), None, [2, 4], 1e4, {}),
    (F32, (4, 6, 5, 5), CL, [3, 1], 1e4, {"momentum": 0.3}),
    (F32, (4, 3, 2, 3, 2), CL3, [2, 2], 0.5, {"track_running_stats": False}),
    (F64, (6, 5, 4, 3), None, [3, 3], 0.5, {}),
    (F64, (6, 5, 4, 3), CL, [1, 5], 0.5, {"momentum": None}),
    (F64, (8, 3), None, [2, 6], 3.0, {"bias": False}),
    (F64, (5, 4, 6), None, [4, 1], 1e4, {}),
    (BF16, (6, 4, 3, 3), CL, [4, 2], 0.5, {}),
]
CASES_3 = [
    (F32, (7, 5, 3, 3), None, [3, 0, 4], 0.5, {}),
    (F64, (6, 4, 3, 2), CL, [0, 5, 1], -2.0, {"momentum": None}),
    (F32, (7, 6), None, [2, 4, 1], 1e4, {}),
]
STEPS = 2


def _reference_class(x):
    return {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
            5: torch.nn.BatchNorm3d}[x.dim()]


def _data(case_id, step, dtype, shape, memory_format, loc):
    g = torch.Generator().manual_seed(1000 * case_id + step)
    x = (torch.randn(shape, generator=g, dtype=F64) * 2 + loc).to(dtype)
    dy = torch.randn(shape, generator=g, dtype=F64).to(dtype)
    if memory_format is not None:
        x, dy = x.contiguous(memory_format=memory_format), dy.contiguous(memory_format=memory_format)
    return x, dy


def _modules(case_id, dtype, shape, options, group=None):
    ours = ftt.SyncBatchNorm(shape[1], process_group=group, **options).to(dtype)
    ref = _reference_class(torch.empty(shape))(shape[1], **options).to(F64)
    if ours.weight is not None:
        g = torch.Generator().manual_seed(case_id)
        with torch.no_grad():
            ours.weight.copy_(torch.rand(shape[1], generator=g, dtype=F64) + 0.5)
            if ours.bias is not None:
                ours.bias.copy_(torch.randn(shape[1], generator=g, dtype=F64))
    ref.load_state_dict({k: v.to(F64) if v.is_floating_point() else v
                         for k, v in ours.state_dict().items()})
    return ours, ref


def _check_case(case_id, case, rank, group=None, ranks=None):
    """One case on this rank: STEPS training steps then one evaluation step against the
    float64 reference; exactly one collective per training forward and backward."""
    dtype, shape, fmt, sizes, loc, options = case
    ranks = list(range(len(sizes))) if ranks is None else ranks
    pos = ranks.index(rank)
    lo, hi = sum(sizes[:pos]), sum(sizes[:pos + 1])
    ours, ref = _modules(case_id, dtype, shape, options, group)
    tol, what = TOL[dtype], f"case {case_id} {case[:4]} rank {rank}"
    # Evaluation never synchronizes: without running statistics it normalizes each rank's
    # slice by itself, which the whole-batch reference does not model.
    for step in range(STEPS + (ref.running_mean is not None)):
        training = step < STEPS
        ours.train(training), ref.train(training)
        x_all, dy_all = _data(case_id, step, dtype, shape, fmt, loc)
        x_ref = x_all.to(F64).requires_grad_(True)
        y_ref = ref(x_ref)
        y_ref.backward(dy_all.to(F64))
        x = x_all[lo:hi].detach().requires_grad_(True)
        with Collectives() as fwd:
            y = ours(x)
        with Collectives() as bwd:
            y.backward(dy_all[lo:hi])
        expected = 1 if training else 0
        assert (len(fwd.names), len(bwd.names)) == (expected, expected), \
            f"{what} step {step}: collectives forward {fwd.names}, backward {bwd.names}"
        assert y.dtype == dtype and y.shape == x.shape
        if fmt is not None and hi > lo:
            assert y.is_contiguous(memory_format=fmt), f"{what}: output lost its memory format"
        assert_close(y, y_ref[lo:hi], tol, f"{what} step {step} y")
        assert_close(x.grad, x_ref.grad[lo:hi], tol, f"{what} step {step} x.grad")
        for name in ("weight", "bias"):
            p, p_ref = getattr(ours, name), getattr(ref, name)
            if p is None:
                continue
            grad = p.grad.detach().clone()
            dist.all_reduce(grad, group=group)   # the data-parallel sum of the rank grads
            assert_close(grad, p_ref.grad, tol, f"{what} step {step} {name}.grad")
            p.grad = p_ref.grad = None
        for name in ("running_mean", "running_var"):
            if getattr(ref, name) is not None:
                assert_close(getattr(ours, name), getattr(ref, name), tol,
                             f"{what} step {step} {name}")
    if ref.num_batches_tracked is not None:
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == STEPS


def _two_ranks(rank, world):
    for i, case in enumerate(CASES_2):
        _check_case(i, case, rank)
    _check_ddp_after_conversion(rank, world)
    _check_too_few_values(rank)


def _check_too_few_values(rank):
    """One value per channel over all ranks (rank 1 holds none): every rank raises after the
    one gather, naming the global count, and changes no running statistic."""
    bn = ftt.SyncBatchNorm(3)
    x = torch.randn(1 if rank == 0 else 0, 3)
    with Collectives() as calls:
        try:
            bn(x)
        except ValueError as e:
            assert "expected more than 1 value per channel" in str(e) and "got 1 over all ranks" in str(e), e
        else:
            raise AssertionError("a global count of 1 did not raise")
    assert len(calls.names) == 1, calls.names
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))


def _three_ranks(rank, world):
    for i, case in enumerate(CASES_3):
        _check_case(100 + i, case, rank)
    # A process group of ranks 0 and 2: rank 1 creates it too (a collective) and stays out.
    pair = dist.new_group([0, 2])
    if rank != 1:
        _check_case(200, (F32, (5, 4, 3, 3), None, [2, 3], 0.5, {}), rank, pair, [0, 2])
    dist.barrier()
    _check_running_stats_all_reduce(rank, world)


def _check_ddp_after_conversion(rank, world):
    """DDP on CPU refuses a model with SyncBatchNorm at construction; converting the wrapped
    model works, and one DDP backward gives the whole-batch gradient (mean over ranks)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    ref = copy.deepcopy(model).double()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp = ftt.SyncBatchNorm.convert_sync_batchnorm(ddp)
    assert isinstance(ddp.module[1], ftt.SyncBatchNorm)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 4, 4, generator=g)
    sizes = [2, 4]
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    # A sum over the batch; DDP averages the ranks' grads, so the reference divides by world.
    ddp(x[lo:hi]).sum().backward()
    ref(x.double()).sum().backward()
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert_close(p.grad, p_ref.grad / world, 1e-5, f"DDP + SyncBatchNorm {name}.grad")
    assert_close(model[1].running_var, ref[1].running_var, 1e-5, "DDP running_var")


def _check_running_stats_all_reduce(rank, world):
    g = torch.Generator().manual_seed(7)
    data = (torch.randn(11, 3, 4, 5, generator=g, dtype=F64) + 1e4).float()
    shards = [data[:6], data[6:6], data[6:]]          # rank 1 sees nothing

    def seen(shard):
        rs = ft.RunningStats(3)
        for batch in shard.split(4):
            rs.update(batch.numpy())
        return rs
    rs = seen(shards[rank])
    with Collectives() as c:
        assert rs.all_reduce() is rs
    assert len(c.names) == 1, c.names
    # What one process merging the three shards' statistics gets, and the exact statistics.
    merged = seen(shards[0]).merge(seen(shards[1])).merge(seen(shards[2]))
    assert rs.count == merged.count == 11 * 20
    for name in ("mean", "var"):
        assert_close(torch.from_numpy(getattr(rs, name)), torch.from_numpy(getattr(merged, name)),
                     1e-13, f"rs.{name}")
    assert_close(torch.from_numpy(rs.var), data.double().var((0, 2, 3), unbiased=False), 1e-6,
                 "rs.var (exact)")
    # The same bits on every rank.
    mine = torch.from_numpy(rs.var)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    assert all(torch.equal(v, mine) for v in everyone)
    # channels_last batches and a subgroup
    pair = dist.new_group([0, 1])
    if rank < 2:
        rs2 = ft.RunningStats(3, channels_last=True).update(
            data[rank::2].permute(0, 2, 3, 1).contiguous().numpy())
        with Collectives() as c:
            rs2.all_reduce(group=pair)
        assert len(c.names) == 1, c.names
        both = torch.cat([data[0::2], data[1::2]])
        assert_close(torch.from_numpy(rs2.mean), both.double().mean((0, 2, 3)), 1e-9,
                     "subgroup mean")


def test_sync_batch_norm_two_ranks():
    run_ranks(_two_ranks, 2)


def test_sync_batch_norm_three_ranks_empty_rank_subgroup_and_running_stats():
    run_ranks(_three_ranks, 3)


# ------------------------------------------------------------------ in one process

def test_without_process_group_is_the_local_batch_norm():
    torch.manual_seed(0)
    ours, ref = ftt.SyncBatchNorm(5).double(), torch.nn.BatchNorm2d(5).double()
    ref.load_state_dict(ours.state_dict())
    for training in (True, True, False):
        ours.train(training), ref.train(training)
        x = torch.randn(4, 5, 3, 3, dtype=F64)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)


def test_state_dict_and_arguments_are_torch_syncbatchnorm():
    ours = ftt.SyncBatchNorm(6, eps=1e-3, momentum=None, affine=True)
    theirs = torch.nn.SyncBatchNorm(6, eps=1e-3, momentum=None)
    assert isinstance(ours, torch.nn.SyncBatchNorm)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.running_mean.fill_(2.0)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(ours.running_mean, theirs.running_mean)
    assert repr(ours) == repr(theirs)


def test_convert_sync_batchnorm_replaces_every_batch_norm_and_shares_tensors():
    bn2 = torch.nn.BatchNorm2d(4).eval()
    inner = torch.nn.Sequential(torch.nn.BatchNorm1d(3, affine=False, momentum=None),
                                ftt.BatchNorm3d(2), torch.nn.SyncBatchNorm(5, eps=1e-3))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), bn2, inner, torch.nn.LayerNorm(3))
    group = object()
    out = ftt.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    assert out is model
    assert type(model[0]) is torch.nn.Conv2d and type(model[3]) is torch.nn.LayerNorm
    for m in (model[1], *model[2]):
        assert type(m) is ftt.SyncBatchNorm and m.process_group is group
    assert model[1].weight is bn2.weight and model[1].running_var is bn2.running_var
    assert model[1].num_batches_tracked is bn2.num_batches_tracked and not model[1].training
    assert model[2][0].weight is None and model[2][0].momentum is None
    assert model[2][2].eps == 1e-3
    single = ftt.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(3, bias=False))
    assert type(single) is ftt.SyncBatchNorm and single.bias is None
    with pytest.raises(ValueError, match="not initialized"):
        ftt.SyncBatchNorm.convert_sync_batchnorm(torch.nn.LazyBatchNorm2d())
    with pytest.raises(TypeError, match="module"):
        ftt.SyncBatchNorm.convert_sync_batchnorm("model")


@pytest.mark.parametrize("bad,error,match", [
    ("x", TypeError, "input must be a torch.Tensor"),
    (torch.randn(4), ValueError, "at least 2D"),
    (torch.randn(4, 3, 2), ValueError, "3 channels"),
    (torch.ones(4, 5, dtype=torch.int32), TypeError, "floating-point"),
])
def test_bad_input_raises_before_counting_the_batch(bad, error, match):
    m = ftt.SyncBatchNorm(5)
    with pytest.raises(error, match=match):
        m(bad)
    assert int(m.num_batches_tracked) == 0 and torch.equal(m.running_mean, torch.zeros(5))


def test_running_stats_all_reduce_needs_a_process_group():
    rs = ft.RunningStats(2).update(torch.randn(3, 2).numpy())
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="init_process_group"):
            rs.all_reduce()
    with pytest.raises(TypeError, match="group"):
        rs.all_reduce(group="world")
    assert rs.count == 3
