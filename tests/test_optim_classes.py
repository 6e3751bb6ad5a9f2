"""ft.optim classes: against the functional calls (bitwise), torch.optim trajectories, state_dict
round trips, param groups, schedules, clipping, EMA, AMP arguments and constructor checks."""

import copy
import pickle

import numpy as np
import pytest

import fusedtrain as ft
from precisions import Tolerance, assert_close, dtype_named
from stepping import seed_for

SHAPES = [(7,), (17, 33), (1,)]
F32 = Tolerance(2e-5, 2e-6)

# (class name, constructor keywords) covering each class's option sets
CLASS_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.02, momentum=0.9, dampening=0.3, weight_decay=0.0437)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.0731)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, maximize=True)),
    ("Adadelta", dict(rho=0.95, lr=0.5, weight_decay=0.0731)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.0731)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, decoupled_weight_decay=True,
                  weight_decay=0.02)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.04, weight_decay=0.0731)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), decoupled_weight_decay=True, weight_decay=0.02)),
]


def _case_id(case):
    name, kw = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in kw.items()) + "]"


def _problem(seed, dtype=np.float32, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]
    return rng, params


def _grads(rng, params, dtype=None):
    return [rng.standard_normal(p.shape).astype(np.float32).astype(dtype or p.dtype)
            for p in params]


@pytest.mark.parametrize("case", CLASS_CASES, ids=_case_id)
def test_trajectory_matches_torch_optim(case, torch):
    name, kw = case
    rng, params = _problem(seed_for(_case_id(case), "torch"))
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = getattr(ft.optim, name)(params, **kw)
    topt = getattr(torch.optim, name)(tparams, foreach=False, **kw)
    for _ in range(15):
        grads = _grads(rng, params)
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    for i, tp in enumerate(tparams):
        assert_close(params[i], tp.detach().numpy(), F32, f"params[{i}]")
        for key, value in opt.state[i].items():
            assert_close(value, topt.state[tp][key].numpy(), F32, f"state[{i}][{key}]")


def test_rmsprop_nesterov_matches_functional():
    rng, params = _problem(1)
    ref = [p.copy() for p in params]
    sq, buf = [np.zeros_like(p) for p in ref], [np.zeros_like(p) for p in ref]
    opt = ft.optim.RMSprop(params, lr=0.01, momentum=0.5, nesterov=True)
    for _ in range(5):
        grads = _grads(rng, params)
        opt.step(grads)
        ft.rmsprop_(ref, grads, sq, lr=0.01, momentum=0.5, momentum_buffers=buf, nesterov=True)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)


def test_schedule_clip_and_ema_match_functional_calls():
    """The class is the functional call with lr = schedule(t), step = t + 1, fused clipping,
    then ft.ema_: bit for bit."""
    rng, params = _problem(2)
    ref = [p.copy() for p in params]
    ema = [p.copy() for p in params]
    m, v = [np.zeros_like(p) for p in ref], [np.zeros_like(p) for p in ref]
    sched = ft.schedules.warmup(ft.schedules.cosine(0.05, 12), 3)
    opt = ft.optim.AdamW(params, lr=sched, max_grad_norm=0.5, ema_decay=0.9)
    for t in range(12):
        grads = _grads(rng, params)
        opt.step(grads)
        ft.adamw_(ref, grads, m, v, step=t + 1, lr=sched(t), max_grad_norm=0.5)
        ft.ema_(ema, ref, decay=0.9)
    assert opt.steps == 12
    for a, b, e, oe in zip(params, ref, ema, opt.ema_params):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(oe, e)


def test_param_groups_have_their_own_hyperparameters():
    rng, params = _problem(3)
    ref = [p.copy() for p in params]
    bufs = [np.zeros_like(p) for p in ref]
    opt = ft.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5,
                                                 "momentum": 0.0}], lr=0.01, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.5]
    for t in range(4):
        grads = _grads(rng, params)
        opt.step(grads if t % 2 else [grads[:2], grads[2:]])    # flat or one list per group
        ft.momentum_(ref[:2], grads[:2], bufs[:2], step=t + 1, lr=0.01, momentum=0.9)
        ft.sgd_(ref[2:], grads[2:], lr=0.5)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)
    assert "momentum_buffer" not in opt.state[2]


def test_one_kernel_call_per_group(monkeypatch):
    calls = []
    real = ft.functional.adam_
    monkeypatch.setattr(ft.functional, "adam_", lambda *a, **k: (calls.append(1), real(*a, **k)))
    rng, params = _problem(4)
    opt = ft.optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}])
    opt.step(_grads(rng, params))
    assert len(calls) == 2


@pytest.mark.parametrize("precision", ["float32", "float64", "float16", "bfloat16"])
def test_state_dict_round_trip_resumes_bit_identically(precision):
    dtype = dtype_named(precision)
    rng, params = _problem(seed_for("resume", precision), dtype)
    kw = dict(lr=ft.schedules.step_decay(0.01, 3, 0.5), amsgrad=True, max_grad_norm=2.0,
              ema_decay=0.8)
    opt = ft.optim.Adam([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.01}],
                        **kw)
    grads = [_grads(rng, params) for _ in range(10)]
    for g in grads[:5]:
        opt.step(g)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    snapshot = [p.copy() for p in params]
    for g in grads[5:]:
        opt.step(g)

    resumed_params = [p.copy() for p in snapshot]
    other = ft.optim.Adam([{"params": resumed_params[:1]}, {"params": resumed_params[1:]}],
                          lr=1.0)
    other.load_state_dict(saved)
    assert other.steps == 5 and other.param_groups[1]["weight_decay"] == 0.01
    for g in grads[5:]:
        other.step(g)
    for a, b in zip(params, resumed_params):
        np.testing.assert_array_equal(a, b)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for i in range(len(params)):
            np.testing.assert_array_equal(opt.state[i][key], other.state[i][key])
    for a, b in zip(opt.ema_params, other.ema_params):
        np.testing.assert_array_equal(a, b)
    if precision in ("float16", "bfloat16"):
        assert all(m.dtype == np.float32 for m in opt.master_params)
        assert all(s.dtype == np.float32 for s in opt.state[0].values())
        for a, b in zip(opt.master_params, other.master_params):
            np.testing.assert_array_equal(a, b)


def test_state_dict_holds_copies():
    rng, params = _problem(5)
    opt = ft.optim.Adagrad(params)
    opt.step(_grads(rng, params))
    sd = opt.state_dict()
    before = copy.deepcopy(sd)
    opt.step(_grads(rng, params))
    np.testing.assert_array_equal(sd["state"][0]["sum"], before["state"][0]["sum"])
    assert not np.array_equal(sd["state"][0]["sum"], opt.state[0]["sum"])


def test_load_state_dict_checks_before_changing_anything():
    rng, params = _problem(6)
    opt = ft.optim.Adam(params, lr=0.01)
    opt.step(_grads(rng, params))
    sd = opt.state_dict()
    sd["state"][2]["exp_avg"] = np.zeros(3, np.float32)        # wrong shape, last param
    sd["param_groups"][0]["lr"] = 0.5
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 0.01 and after["steps"] == before["steps"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict({**before, "param_groups": before["param_groups"] * 2})


def test_grad_scale_and_found_inf():
    rng, params = _problem(7)
    ref = [p.copy() for p in params]
    opt, ref_opt = ft.optim.Adam(params, lr=0.01), ft.optim.Adam(ref, lr=0.01)
    grads = _grads(rng, params)
    assert opt.step([g * 64 for g in grads], grad_scale=np.array([64.0], np.float32))
    ref_opt.step(grads)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)
    frozen = [p.copy() for p in params]
    assert not opt.step(grads, found_inf=np.array([1.0], np.float32))
    assert opt.steps == 1
    for a, b in zip(params, frozen):
        np.testing.assert_array_equal(a, b)


def test_step_checks_grads_before_updating():
    rng, params = _problem(8)
    opt = ft.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    before = [p.copy() for p in params]
    grads = _grads(rng, params)
    grads[2] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"grads\[2\]"):
        opt.step(grads)
    with pytest.raises(ValueError, match="grads"):
        opt.step(grads[:2])
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)


BAD_CONSTRUCTORS = [
    ("SGD", dict(lr=-0.1), "lr"),
    ("SGD", dict(momentum=-0.5), "momentum"),
    ("SGD", dict(nesterov=True), "nesterov"),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    ("Adagrad", dict(lr_decay=-1.0), "lr_decay"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("RMSprop", dict(alpha=1.5), "alpha"),
    ("RMSprop", dict(nesterov=True), "nesterov"),
    ("Adadelta", dict(rho=-0.1), "rho"),
    ("Adam", dict(betas=(1.0, 0.999)), "beta1"),
    ("Adam", dict(betas=(0.9,)), "betas"),
    ("AdamW", dict(eps=-1e-8), "eps"),
    ("Adam", dict(weight_decay="0.1"), "weight_decay"),
    ("Adam", dict(max_grad_norm=-1.0), "max_grad_norm"),
    ("Adam", dict(ema_decay=1.5), "ema_decay"),
    ("Adam", dict(lr=10 ** 400), "lr"),
    ("SGD", dict(lr=0.1, max_grad_norm=10 ** 400), "max_grad_norm"),
    ("Lion", dict(betas=(1.5, 0.99)), "beta1"),
    ("Lion", dict(weight_decay=-0.1), "weight_decay"),
    ("NAdam", dict(betas=(0.9, 1.0)), "beta2"),
    ("NAdam", dict(momentum_decay=-1.0), "momentum_decay"),
]


@pytest.mark.parametrize("name,kw,arg", BAD_CONSTRUCTORS, ids=lambda x: str(x))
def test_bad_constructor_arguments_raise_value_error(name, kw, arg):
    with pytest.raises(ValueError, match=arg):
        getattr(ft.optim, name)([np.zeros(3, np.float32)], **kw)


def test_bad_param_lists():
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="empty"):
        ft.optim.Adam([])
    with pytest.raises(ValueError, match="more than once"):
        ft.optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="unknown"):
        ft.optim.Adam([{"params": [p], "momentum": 0.9}])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        ft.optim.SGD([[1.0, 2.0]])
