"""ft.torch optimizers: torch.optim trajectories, state_dict both ways, GradScaler, param groups."""

import copy
import subprocess
import sys

import pytest

import fusedtrain as ft
from fusedtrain._optim_rules import RULES
from precisions import Tolerance, assert_close

torch = pytest.importorskip("torch")
from torch_checkpoints import assert_checkpoint_resumes, run_steps  # noqa: E402 (needs torch)

F32 = Tolerance(2e-5, 2e-6)
SHAPES = [(7,), (5, 13), (1,)]

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.02, momentum=0.9, dampening=0.3, weight_decay=0.0437)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.0731)),
    ("RMSprop", dict(lr=0.01, alpha=0.9)),
    ("Adadelta", dict(rho=0.95, lr=0.5, maximize=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.0731)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), decoupled_weight_decay=True, weight_decay=0.02)),
    ("AdamW", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.0731)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.04, decoupled_weight_decay=True,
                   weight_decay=0.02, maximize=True)),
]
# torch.optim's Adam-family classes also take betas as one-element tensors (NAdam 0-dim ones).
TENSOR_BETAS = [(name, dict(lr=0.01, betas=(torch.tensor(0.8), torch.tensor(shape))))
                for name, shape in (("Adam", [0.99]), ("AdamW", [0.99]), ("NAdam", 0.99))]
CASES += TENSOR_BETAS


def _id(case):
    return case[0] + "[" + ",".join(f"{k}={v}" for k, v in case[1].items()) + "]"


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def _clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


def _grad_stream(seed, n):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(n)]


_run = run_steps


def _assert_same(ours, params, ref, ref_params, tol=F32):
    for i, (p, q) in enumerate(zip(params, ref_params)):
        assert_close(p.detach().numpy(), q.detach().numpy(), tol, f"params[{i}]")
        s, t = ours.state[p], ref.state[q]
        assert set(s) == set(t), (set(s), set(t))
        for key in t:
            assert s[key].dtype == t[key].dtype and s[key].shape == t[key].shape, key
            assert_close(s[key].numpy(), t[key].numpy(), tol, f"state[{i}][{key}]")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_trajectory_and_state_layout_match_torch(case):
    name, kw = case
    a = _params(1)
    b = _clone(a)
    ours = getattr(ft.torch, name)(a, **kw)
    ref = getattr(torch.optim, name)(b, foreach=False, **kw)
    assert isinstance(ours, torch.optim.Optimizer) and ours._step_supports_amp_scaling
    grads = _grad_stream(2, 12)
    _run(ours, a, grads)
    _run(ref, b, grads)
    _assert_same(ours, a, ref, b)


@pytest.mark.parametrize("case", TENSOR_BETAS, ids=_id)
def test_tensor_betas_changed_in_place_take_effect_as_in_torch(case):
    """A scheduler may move tensor betas with fill_ between steps: the next step reads them."""
    name, kw = case
    a = _params(6)
    b = _clone(a)
    runs = []
    for opt_of, params in ((getattr(ft.torch, name), a), (getattr(torch.optim, name), b)):
        betas = tuple(t.clone() for t in kw["betas"])
        opt = opt_of(params, lr=kw["lr"], betas=betas)
        grads = _grad_stream(7, 6)
        _run(opt, params, grads[:3])
        betas[0].fill_(0.5)
        betas[1].fill_(0.9)
        _run(opt, params, grads[3:])
        runs.append(opt)
    _assert_same(runs[0], a, runs[1], b)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_state_dict_moves_both_ways_with_torch_optim(case):
    name, kw = case
    grads = _grad_stream(3, 10)

    # ours -> torch.optim: both continue from our checkpoint
    a = _params(4)
    ours = getattr(ft.torch, name)(a, **kw)
    _run(ours, a, grads[:5])
    b = _clone(a)
    ref = getattr(torch.optim, name)(b, foreach=False, **kw)
    ref.load_state_dict(copy.deepcopy(ours.state_dict()))
    _run(ours, a, grads[5:])
    _run(ref, b, grads[5:])
    _assert_same(ours, a, ref, b)

    # torch.optim -> ours: both continue from torch's checkpoint
    c = _params(5)
    ref = getattr(torch.optim, name)(c, foreach=False, **kw)
    _run(ref, c, grads[:5])
    d = _clone(c)
    ours = getattr(ft.torch, name)(d, lr=123.0)       # hyperparameters come from the checkpoint
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    _run(ref, c, grads[5:])
    _run(ours, d, grads[5:])
    _assert_same(ours, d, ref, c)


def _as_real(t):
    t = t.detach()
    return torch.view_as_real(t) if t.is_complex() else t


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_complex_params_step_as_torch_steps_them(case, dtype):
    """Note [complex params]: complex params (beside a real one in the same group) follow
    torch.optim's trajectory, their state is complex as torch's, and the checkpoint moves to
    torch.optim and continues there as here."""
    name, kw = case
    cdt = getattr(torch, dtype)
    rdt = torch.float32 if cdt == torch.complex64 else torch.float64
    if torch.is_tensor(kw.get("betas", (None,))[0]):
        # torch's bias corrections are computed in the betas' tensor dtype, ours in float64.
        kw = dict(kw, betas=tuple(t.to(rdt) for t in kw["betas"]))
    g = torch.Generator().manual_seed(11)
    shapes = [(7,), (3, 5), (1,)]
    a = [torch.randn(s, generator=g, dtype=cdt).requires_grad_() for s in shapes]
    a.append(torch.randn(4, generator=g, dtype=rdt).requires_grad_())
    b = _clone(a)
    grads = [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in a] for _ in range(10)]
    ours = getattr(ft.torch, name)(a, **kw)
    ref = getattr(torch.optim, name)(b, foreach=False, **kw)
    _run(ours, a, grads[:6])
    _run(ref, b, grads[:6])
    tol = F32 if rdt == torch.float32 else Tolerance(1e-10, 1e-12)
    for i, (p, q) in enumerate(zip(a, b)):
        assert_close(_as_real(p).numpy(), _as_real(q).numpy(), tol, f"params[{i}]")
        for key, t in ref.state[q].items():
            assert ours.state[p][key].dtype == t.dtype, key
            assert_close(_as_real(ours.state[p][key]).numpy(), _as_real(t).numpy(), tol, key)
    again = getattr(torch.optim, name)(_clone(a), foreach=False, **kw)
    again.load_state_dict(copy.deepcopy(ours.state_dict()))
    moved = again.param_groups[0]["params"]
    _run(ours, a, grads[6:])
    _run(again, moved, grads[6:])
    for i, (p, q) in enumerate(zip(a, moved)):
        assert_close(_as_real(p).numpy(), _as_real(q).numpy(), tol, f"params[{i}] after the move")


def test_our_checkpoint_resumes_bit_identically():
    grads = _grad_stream(6, 10)
    a = _params(7)
    ours = ft.torch.Adam(a, lr=0.01, amsgrad=True)
    _run(ours, a, grads[:4])
    assert_checkpoint_resumes(ours, a, ft.torch.Adam, grads[4:])


def test_param_groups_with_different_lr():
    a = _params(8)
    b = _clone(a)
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.3, "betas": (0.5, 0.9)}]
    ours = ft.torch.Adam(groups(a), lr=0.01)
    ref = torch.optim.Adam(groups(b), lr=0.01, foreach=False)
    grads = _grad_stream(9, 6)
    _run(ours, a, grads)
    _run(ref, b, grads)
    _assert_same(ours, a, ref, b)


def test_one_call_per_group_and_params_without_grads(monkeypatch):
    """Params that miss a step keep their own step count, as in torch.optim (then that group
    takes one call per step count)."""
    calls = []
    real = ft.functional.adam_
    monkeypatch.setattr(ft.functional, "adam_", lambda *a, **k: (calls.append(len(a[0])),
                                                                 real(*a, **k)))
    a = _params(10)
    b = _clone(a)
    ours = ft.torch.Adam(a, lr=0.05)
    ref = torch.optim.Adam(b, lr=0.05, foreach=False)
    for k, gs in enumerate(_grad_stream(11, 8)):
        for i, (p, q, g) in enumerate(zip(a, b, gs)):
            skip = i == 1 and k in (2, 3)
            p.grad = None if skip else g.clone()
            q.grad = None if skip else g.clone()
        ours.step()
        ref.step()
    _assert_same(ours, a, ref, b)
    assert calls == [3, 3, 2, 2] + [2, 1] * 4
    assert float(ours.state[a[1]]["step"]) == 6.0


def _amp_steps(opt, params, grads, scaler, inf_at, unscale_first=False):
    for k, gs in enumerate(grads):
        opt.zero_grad()
        scaler.scale(sum((p * g).sum() for p, g in zip(params, gs))).backward()   # grads: g * scale
        if k == inf_at:
            params[0].grad[0] = float("inf")
        if unscale_first:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 10.0)
        scaler.step(opt)
        scaler.update()


@pytest.mark.parametrize("unscale_first", [False, True], ids=["fused-unscale", "unscale_"])
@pytest.mark.parametrize("name,kw", [
    pytest.param(name, kw, id=name) for name, kw in [
        ("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.5)),
        ("NAdam", dict(lr=0.01))]])
def test_grad_scaler_matches_torch_and_skips_inf_steps(name, kw, unscale_first):
    a = _params(12)
    b = _clone(a)
    ours = getattr(ft.torch, name)(a, **kw)
    ref = getattr(torch.optim, name)(b, foreach=False, **kw)
    sa = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    sb = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    grads = _grad_stream(13, 8)
    # a skipped first step too: SGD must then start its momentum buffers on the next one
    for inf_at, chunk in ((0, grads[:1]), (2, grads[1:])):
        _amp_steps(ours, a, chunk, sa, inf_at, unscale_first)
        _amp_steps(ref, b, chunk, sb, inf_at, unscale_first)
    assert sa.get_scale() == sb.get_scale()
    _assert_same(ours, a, ref, b)
    if RULES[name].takes_step:
        assert float(ours.state[a[0]]["step"]) == 6.0    # two of eight steps skipped


def test_grad_scaler_skipped_step_changes_nothing():
    a = _params(14)
    ours = ft.torch.AdamW(a, lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    _amp_steps(ours, a, _grad_stream(15, 1), scaler, inf_at=None)
    before = [p.detach().clone() for p in a]
    state = copy.deepcopy(ours.state_dict())
    _amp_steps(ours, a, _grad_stream(16, 1), scaler, inf_at=0)
    for p, q in zip(a, before):
        assert torch.equal(p, q)
    for i, p in enumerate(a):
        for key, value in ours.state[p].items():
            assert torch.equal(value, state["state"][i][key]), key


def test_half_params_keep_float32_state():
    a = [torch.randn(9, dtype=torch.bfloat16, requires_grad=True)]
    ours = ft.torch.Adam(a, lr=0.01)
    a[0].grad = torch.randn(9, dtype=torch.bfloat16)
    ours.step()
    assert ours.state[a[0]]["exp_avg"].dtype == torch.float32
    ref = torch.optim.Adam(_clone(a), lr=0.01)
    ref.load_state_dict(ours.state_dict())            # torch casts the state to the param dtype
    ours.load_state_dict(ref.state_dict())
    ours.step()
    assert ours.state[a[0]]["exp_avg"].dtype == torch.float32


def test_rmsprop_nesterov_keyword():
    a = _params(17)
    ref = [p.detach().clone() for p in a]
    sq, buf = [torch.zeros_like(p) for p in ref], [torch.zeros_like(p) for p in ref]
    ours = ft.torch.RMSprop(a, lr=0.01, momentum=0.5, nesterov=True)
    for gs in _grad_stream(18, 4):
        for p, g in zip(a, gs):
            p.grad = g.clone()
        ours.step()
        ft.rmsprop_(ref, gs, sq, lr=0.01, momentum=0.5, momentum_buffers=buf, nesterov=True)
    for p, q in zip(a, ref):
        assert torch.equal(p.detach(), q)
    assert ours.param_groups[0]["nesterov"] is True


def test_rmsprop_nesterov_in_every_group_and_checkpoint():
    # nesterov is a group key torch.optim.RMSprop lacks: new groups take the constructor's, a
    # torch checkpoint loads as nesterov=False, and ours loads back into torch.
    a, b = _params(20), _params(21)
    ours = ft.torch.RMSprop(a, lr=0.01, momentum=0.5, nesterov=1)
    ours.add_param_group({"params": b, "lr": 0.1})
    assert [g["nesterov"] for g in ours.param_groups] == [True, True]
    assert ours.defaults["nesterov"] is True
    ref = torch.optim.RMSprop(_clone(a), lr=0.01)
    ours = ft.torch.RMSprop(a, lr=0.01, momentum=0.5, nesterov=True)
    ours.load_state_dict(ref.state_dict())
    assert ours.param_groups[0]["nesterov"] is False
    ref.load_state_dict(ours.state_dict())
    with pytest.raises(ValueError, match="nesterov requires momentum > 0"):
        ft.torch.RMSprop(a, lr=0.01, nesterov=True)


def test_closure_is_called():
    a = _params(19)
    ours = ft.torch.SGD(a, lr=0.1)

    def closure():
        ours.zero_grad()
        loss = sum((p ** 2).sum() for p in a)
        loss.backward()
        return loss

    assert float(ours.step(closure).detach()) > 0


BAD = [
    ("SGD", dict(lr=-1.0)),
    ("SGD", dict(lr=0.1, nesterov=True)),
    ("RMSprop", dict(lr=0.1, nesterov=True)),
    ("Adam", dict(betas=(1.5, 0.9))),
    ("Adagrad", dict(lr_decay=-0.1)),
    ("Adadelta", dict(rho=1.5)),
    ("AdamW", dict(differentiable=True)),
]


@pytest.mark.parametrize("name,kw", BAD, ids=str)
def test_bad_constructor_arguments_raise_value_error(name, kw):
    with pytest.raises(ValueError):
        getattr(ft.torch, name)(_params(20), **kw)


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate")
@pytest.mark.parametrize("name", list(RULES))
def test_a_param_listed_twice_in_a_group_is_refused(name):
    """torch.optim warns and steps such a param twice; ours refuses the group, naming both places,
    at construction and in add_param_group (which then adds nothing)."""
    a, b = _params(21)[:2]
    with pytest.raises(ValueError, match=rf"^{name}: params\[2\] is params\[0\], listed twice"):
        getattr(ft.torch, name)([a, b, a])
    opt = getattr(ft.torch, name)([a])
    with pytest.raises(ValueError, match=rf"^{name}: params\[1\] is params\[0\]"):
        opt.add_param_group({"params": [b, b]})
    assert len(opt.param_groups) == 1


def test_import_fusedtrain_does_not_import_torch():
    code = ("import sys, fusedtrain as ft; assert 'torch' not in sys.modules; "
            "ft.optim.Adam; ft.schedules.cosine; assert 'torch' not in sys.modules; "
            "ft.torch.Adam; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
