"""ft.torch optimizers and our norms under torch.distributed (gloo, loopback, 2 ranks).

- DDP + ft.torch.AdamW / SGD(momentum): after 10 steps the params of one process on the whole
  batch.
- ZeroRedundancyOptimizer(optimizer_class=ft.torch.AdamW): the params of
  ZeroRedundancyOptimizer(optimizer_class=torch.optim.AdamW); its consolidated state_dict()
  loads into either class and continues the same trajectory.
- FSDP2 (fully_shard, DTensor params): ft.torch.AdamW steps the local shards in one fused call
  per param group and gives torch.optim.AdamW's params; clipping DTensor grads
  (ft.clip_grad_norm_, ft.global_norm, a rule's max_grad_norm) takes the norm across ranks
  with exactly one all-reduce, as torch.nn.utils.clip_grad_norm_ does.
float64 models, so that every difference is a bug and not rounding (1e-10).
"""
import copy
import math

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this build of torch",
                allow_module_level=True)

import fusedtrain as ft  # noqa: E402
import fusedtrain.torch as ftt  # noqa: E402
from dist_support import Collectives, assert_close, run_ranks  # noqa: E402

dist = torch.distributed
F64 = torch.float64
TOL = 1e-10
STEPS = 10


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3),
                               torch.nn.Tanh(), torch.nn.Linear(3, 1)).to(F64)


def _batch(step, n=8):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(n, 6, generator=g, dtype=F64), torch.randn(n, 1, generator=g, dtype=F64)


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def _whole_batch_run(make_opt, steps):
    """One process on the whole batch: the reference."""
    model = _model()
    opt = make_opt(model.parameters())
    for step in range(steps):
        opt.zero_grad()
        _loss(model, *_batch(step)).backward()
        opt.step()
    return model, opt


def _my_slice(rank, world, step):
    x, y = _batch(step)
    n = x.shape[0] // world              # equal slices: DDP averages the ranks' mean losses
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def _ddp_run(rank, world, make_opt, steps):
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = make_opt(ddp.parameters())
    for step in range(steps):
        opt.zero_grad()
        _loss(ddp, *_my_slice(rank, world, step)).backward()
        opt.step()
    return model, opt


def _assert_params(model, ref, what, tol=TOL):
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert_close(p.detach(), q.detach(), tol, f"{what}: {name}")


OPTIMIZERS = {
    "AdamW": lambda cls: lambda ps: cls(ps, lr=0.05, weight_decay=0.1),
    "SGD(momentum)": lambda cls: lambda ps: cls(ps, lr=0.1, momentum=0.9, nesterov=True),
}


def _ddp_and_zero(rank, world):
    for name, make in OPTIMIZERS.items():
        ours = getattr(ftt, name.split("(")[0])
        theirs = getattr(torch.optim, name.split("(")[0])
        model, _ = _ddp_run(rank, world, make(ours), STEPS)
        ref, _ = _whole_batch_run(make(ours), STEPS)
        _assert_params(model, ref, f"DDP + ft.torch.{name} vs one process")
        ref_torch, _ = _whole_batch_run(make(theirs), STEPS)
        _assert_params(model, ref_torch, f"DDP + ft.torch.{name} vs torch.optim, one process")
    _check_zero(rank, world)


def _check_zero(rank, world):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    def zero(cls):
        return lambda ps: ZeroRedundancyOptimizer(ps, optimizer_class=cls, lr=0.05,
                                                  weight_decay=0.1)
    steps = 6
    model, opt = _ddp_run(rank, world, zero(ftt.AdamW), steps)
    model_t, opt_t = _ddp_run(rank, world, zero(torch.optim.AdamW), steps)
    assert isinstance(opt.optim, ftt.AdamW)
    _assert_params(model, model_t, "ZeRO(ft.torch.AdamW) vs ZeRO(torch.optim.AdamW)")
    opt.consolidate_state_dict(to=0)
    opt_t.consolidate_state_dict(to=0)
    # A copy: the consolidated dict holds rank 0's live state tensors.
    sd, sd_t = (copy.deepcopy(opt.state_dict()), opt_t.state_dict()) if rank == 0 else (0, 0)
    # The next step of the sharded run, to compare the reloaded optimizers with.
    nxt = _model()
    nxt.load_state_dict(model.state_dict())
    opt.zero_grad()
    _loss(model, *_batch(steps)).backward()          # whole batch: every rank the same grads
    opt.step()
    if rank != 0:
        return
    assert sd["state"].keys() == sd_t["state"].keys()
    for i, s in sd["state"].items():
        assert s.keys() == sd_t["state"][i].keys()
        for k in s:
            assert_close(torch.as_tensor(s[k]), torch.as_tensor(sd_t["state"][i][k]), TOL,
                         f"consolidated state {i}.{k}")
    for cls in (ftt.AdamW, torch.optim.AdamW):
        start = _model()
        start.load_state_dict(nxt.state_dict())
        loaded = cls(start.parameters(), lr=0.05, weight_decay=0.1)
        loaded.load_state_dict(copy.deepcopy(sd))     # load_state_dict keeps sd's tensors
        loaded.zero_grad()
        _loss(start, *_batch(steps)).backward()
        loaded.step()
        _assert_params(start, model, f"ZeRO state_dict loaded into {cls.__module__}.AdamW")


# ------------------------------------------------------------------ FSDP2

def _sharded(model, mesh):
    from torch.distributed.fsdp import fully_shard
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


class _CountCalls:
    """Counts the calls of fusedtrain's compiled rule kernels and what they were given."""

    def __init__(self, module):
        self.module, self.real, self.calls = module, module._C, []
        counter = self

        class _Proxy:
            def __getattr__(self, name):
                attr = getattr(counter.real, name)
                if not name.endswith("_") or not callable(attr):
                    return attr

                def call(*args, **kw):
                    counter.calls.append((name, [type(a).__name__ for a in args[0]]))
                    return attr(*args, **kw)
                return call
        module._C = _Proxy()

    def restore(self):
        self.module._C = self.real


def _groups(model, extra=()):
    """Two param groups: weights with weight decay, biases (and ``extra``) without."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": list(extra) + biases, "weight_decay": 0.0}]


def _plain_param():
    """A param outside FSDP2 (a plain tensor, the same on every rank) in a DTensor group."""
    return torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=F64))


def _fsdp2(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    import fusedtrain.functional as F
    mesh = init_device_mesh("cpu", (world,))
    model, model_t = _sharded(_model(), mesh), _sharded(_model(), mesh)
    p0 = next(model.parameters())
    assert type(p0).__name__ == "DTensor"
    # Linear(3, 1) has one output row: rank 1's shards of it are empty.
    plain, plain_t = _plain_param(), _plain_param()
    opt = ftt.AdamW(_groups(model, [plain]), lr=0.05, weight_decay=0.1)
    opt_t = torch.optim.AdamW(_groups(model_t, [plain_t]), lr=0.05, weight_decay=0.1,
                              foreach=False)
    for step in range(STEPS):
        for m, o, q in ((model, opt, plain), (model_t, opt_t, plain_t)):
            o.zero_grad()
            (_loss(m, *_my_slice(rank, world, step)) + q.square().sum()).backward()
        grads = [p.grad for p in model.parameters()]
        with Collectives() as clip:
            norm = ft.clip_grad_norm_(grads, max_norm=0.5)
        norm_t = torch.nn.utils.clip_grad_norm_(model_t.parameters(), max_norm=0.5)
        assert clip.names == ["c10d.allreduce_.default"], clip.names
        assert math.isclose(norm, norm_t.full_tensor().item(), rel_tol=1e-12), (norm, norm_t)
        counter = _CountCalls(F)
        try:
            opt.step()
        finally:
            counter.restore()
        # One fused call per group, on the plain local shards (the group that mixes in a
        # plain param: one call for it, one for the DTensors).
        assert [c[0] for c in counter.calls] == ["adam_"] * 3, counter.calls
        assert not any("DTensor" in types for _, types in counter.calls), counter.calls
        opt_t.step()
    assert_close(plain.detach(), plain_t.detach(), TOL, "plain param beside DTensors")
    for (name, p), q in zip(model.named_parameters(), model_t.parameters()):
        assert_close(p.to_local(), q.to_local(), TOL, f"FSDP2 AdamW {name}")
        for k in ("exp_avg", "exp_avg_sq"):
            assert_close(opt.state[p][k].to_local(), opt_t.state[q][k].to_local(), TOL,
                         f"FSDP2 AdamW state {name}.{k}")
    # The state (DTensors, torch's layout) loads into torch.optim.AdamW and back.
    again = torch.optim.AdamW(_groups(model, [plain]), lr=0.05, weight_decay=0.1,
                              foreach=False)
    again.load_state_dict(opt.state_dict())
    ftt.AdamW(_groups(model, [plain]), lr=0.05).load_state_dict(again.state_dict())
    _check_dtensor_norms(rank, model, model_t)


def _check_dtensor_norms(rank, model, model_t):
    """ft.global_norm (2, inf, 1.5), a rule's max_grad_norm, ema_ and bad lists on DTensors."""
    for m in (model, model_t):
        m.zero_grad()
        _loss(m, *_my_slice(rank, 2, 99)).backward()
    grads = [p.grad for p in model.parameters()]
    # The whole grads (torch's DTensor norm refuses inf on rank 1's empty shards).
    whole = torch.cat([q.grad.full_tensor().flatten() for q in model_t.parameters()])
    for p in (2.0, math.inf, 1.5):
        with Collectives() as c:
            ours = ft.global_norm(grads, norm_type=p)
        assert len(c.names) == 1, c.names
        theirs = torch.linalg.vector_norm(whole, p).item()
        assert math.isclose(ours, theirs, rel_tol=1e-12), (p, ours, theirs)
    # max_grad_norm of a rule: clip to the norm across ranks, then step.
    params = [p.detach() for p in model.parameters()]
    clipped = [p.detach().clone() for p in model_t.parameters()]
    state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    state_t = [[torch.zeros_like(p) for p in clipped] for _ in range(2)]
    with Collectives() as c:       # scaled grads, as under GradScaler: the norm is unscaled
        ft.adamw_(params, [g * 4 for g in grads], *state, step=1, lr=0.1, max_grad_norm=0.01,
                  grad_scale=4.0)
    assert len(c.names) == 1, c.names
    torch.nn.utils.clip_grad_norm_(model_t.parameters(), max_norm=0.01)
    ft.adamw_(clipped, [q.grad for q in model_t.parameters()], *state_t, step=1, lr=0.1)
    for i, (a, b) in enumerate(zip(params, clipped)):
        assert_close(a.to_local(), b.to_local(), TOL, f"adamw_(max_grad_norm) params[{i}]")
    averages = [torch.zeros_like(p) for p in params]
    ft.ema_(averages, params, decay=0.75)              # shard by shard, no collective
    for i, (a, p) in enumerate(zip(averages, params)):
        assert_close(a.to_local(), 0.25 * p.to_local(), TOL, f"ema_ averages[{i}]")
    plain = [g.to_local() for g in grads]
    with pytest.raises(TypeError, match=r"grads\[1\]"):
        ft.clip_grad_norm_([grads[0], plain[1]], max_norm=1.0)
    with pytest.raises(TypeError, match=r"grads\[2\]"):
        ft.adamw_(params[:3], grads[:2] + plain[2:3], *[s[:3] for s in state], step=1)
    # A DTensor behind a plain tensor: refused by name, not read at its null data pointer.
    with pytest.raises(TypeError, match=r"arrays\[1\].*no memory of its own"):
        ft.global_norm([plain[0], grads[1]])


def _all_checks(rank, world, fsdp2):
    _ddp_and_zero(rank, world)
    if fsdp2:
        _fsdp2(rank, world)


def test_ddp_zero_and_fsdp2():
    """One spawned group for all (starting ranks costs seconds)."""
    fsdp = pytest.importorskip("torch.distributed.fsdp")
    fsdp2 = hasattr(fsdp, "fully_shard")
    run_ranks(_all_checks, 2, fsdp2)
    if not fsdp2:
        pytest.skip("DDP and ZeRO checked; this torch has no FSDP2 "
                    "(torch.distributed.fsdp.fully_shard)")
