"""The rules generated from the rule table (Lion, NAdam): every layer exists and agrees with the
functional call bit for bit; ft.torch drop-ins keep torch's state layout and checkpoints."""

import inspect

import numpy as np
import pytest

import fusedtrain as ft
from fusedtrain._optim_rules import FUNCTIONS, SPECS
from stepping import seed_for

SHAPES = [(7,), (17, 33), (1,)]

# (spec name, class keywords, the same as functional keywords)
CASES = [
    ("Lion", dict(lr=0.01), dict(lr=0.01)),
    ("Lion", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, maximize=True),
     dict(lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.01), dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.04, weight_decay=0.0731,
                   decoupled_weight_decay=True),
     dict(lr=0.01, beta1=0.8, beta2=0.99, momentum_decay=0.04, weight_decay=0.0731,
          decoupled_weight_decay=True)),
]


def _id(case):
    return case[0] + "[" + ",".join(f"{k}={v}" for k, v in case[1].items()) + "]"


@pytest.mark.parametrize("name", list(SPECS))
def test_every_layer_is_generated_and_exported(name):
    spec = SPECS[name]
    fn = getattr(ft, spec.fn)
    assert spec.fn in ft.__all__ and fn is getattr(ft.functional, spec.fn)
    assert "Textbook form" in fn.__doc__
    sig = inspect.signature(fn)
    assert list(sig.parameters)[:2 + len(spec.states)] == \
        ["params", "grads", *[s for s, _ in spec.states]]
    assert ("step" in sig.parameters) == spec.takes_step
    assert name in ft.optim.__all__ and issubclass(getattr(ft.optim, name), ft.optim.Optimizer)
    assert hasattr(ft.reference, spec.fn)
    assert hasattr(ft._C, spec.options) and hasattr(ft._C, spec.fn)


def _problem(seed):
    rng = np.random.default_rng(seed)
    return rng, [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _functional_run(spec, params, grads_per_step, fkw):
    states = [[np.zeros_like(p) for p in params] for _ in spec.states]
    for t, grads in enumerate(grads_per_step, 1):
        step = {"step": t} if spec.takes_step else {}
        getattr(ft, spec.fn)(params, grads, *states, **step, **fkw)
    return states


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_optim_class_is_the_functional_call(case):
    name, kw, fkw = case
    spec = SPECS[name]
    rng, params = _problem(seed_for(_id(case), "optim"))
    ref = [p.copy() for p in params]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(9)]
    opt = getattr(ft.optim, name)(params, **kw)
    for g in grads:
        opt.step(g)
    states = _functional_run(spec, ref, grads, fkw)
    for i, (a, b) in enumerate(zip(params, ref)):
        np.testing.assert_array_equal(a, b)
        for (_, key), lists in zip(spec.states, states):
            np.testing.assert_array_equal(opt.state[i][key], lists[i])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_torch_drop_in_is_the_functional_call_with_torchs_layout(case):
    torch = pytest.importorskip("torch")
    name, kw, fkw = case
    spec = SPECS[name]
    rng, params = _problem(seed_for(_id(case), "torch"))
    ref = [p.copy() for p in params]
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(9)]
    opt = getattr(ft.torch, name)(tparams, **kw)
    assert isinstance(opt, torch.optim.Optimizer) and name in ft.torch.__all__
    for g in grads:
        for tp, gi in zip(tparams, g):
            tp.grad = torch.from_numpy(gi.copy())
        opt.step()
    states = _functional_run(spec, ref, grads, fkw)
    for i, tp in enumerate(tparams):
        np.testing.assert_array_equal(tp.detach().numpy(), ref[i])
        s = opt.state[tp]
        keys = {key for _, key in spec.states} | set(spec.scalar_state)
        assert set(s) == keys | ({"step"} if spec.takes_step else set())
        for (_, key), lists in zip(spec.states, states):
            np.testing.assert_array_equal(s[key].numpy(), lists[i])
        for key in spec.scalar_state:
            assert s[key].dtype == torch.float32 and s[key].shape == ()


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_torch_drop_in_checkpoint_resumes_bit_identically(case):
    torch = pytest.importorskip("torch")
    name, kw, _ = case
    g = torch.Generator().manual_seed(3)
    a = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(8)]
    from torch_checkpoints import assert_checkpoint_resumes, run_steps
    ours = getattr(ft.torch, name)(a, **kw)
    run_steps(ours, a, grads[:4])
    # lr=123: the hyperparameters must come from the checkpoint.
    assert_checkpoint_resumes(ours, a, lambda b: getattr(ft.torch, name)(b, lr=123.0), grads[4:])


def test_nadam_mu_product_follows_torchs_float32_state():
    torch = pytest.importorskip("torch")
    p = torch.zeros(5, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, ref = ft.torch.NAdam([p], momentum_decay=0.3), torch.optim.NAdam([q], momentum_decay=0.3)
    for k in range(30):
        p.grad = torch.full((5,), 0.5 + k)
        q.grad = p.grad.clone()
        ours.step()
        ref.step()
        assert torch.equal(ours.state[p]["mu_product"], ref.state[q]["mu_product"])
    from fusedtrain.reference.nadam import nadam_mu_product
    assert nadam_mu_product(30, 0.9, 0.3) == float(ref.state[q]["mu_product"])


def test_nadam_step_is_read_on_the_host_and_checked():
    p, g, m, v = (np.zeros(3, np.float32) for _ in range(4))
    ft.nadam_([p], [g], [m], [v], step=np.array([2.0]))
    for bad in (np.array([0.0]), np.array([1.5]), np.array([np.nan]), np.zeros(2)):
        with pytest.raises(ValueError, match="step"):
            ft.nadam_([p], [g], [m], [v], step=bad)
    with pytest.raises(ValueError, match="mu_product"):
        ft.nadam_([p], [g], [m], [v], step=1, mu_product=1.0)


def test_lion_moves_every_coordinate_by_lr():
    p = np.zeros(9, np.float32)
    g = np.linspace(-4, 4, 9).astype(np.float32)
    g[4] = 0.0
    ft.lion_([p], [g], [np.zeros(9, np.float32)], lr=0.5)
    np.testing.assert_array_equal(p, -0.5 * np.sign(g))


def test_stub_of_the_rules_is_what_the_module_registers():
    from fusedtrain import _stubgen
    assert _stubgen.rule_stubs() in _stubgen.STUB.read_text(), \
        "python/fusedtrain/_C.pyi is stale: run python -m fusedtrain._stubgen"


# Where a functional's signature departs from its Options field on purpose (Note [field bounds]).
SIGNATURE_OWN_DEFAULTS = {("sgd_", "lr"), ("momentum_", "lr"), ("adamw_", "weight_decay"),
                          ("adamw_", "decoupled_weight_decay")}


@pytest.mark.parametrize("fn", list(FUNCTIONS))
def test_hyperparameters_take_default_and_bound_from_the_kernel_struct(fn):
    spec = FUNCTIONS[fn]
    fields = {name: (default, bound)
              for name, default, bound in getattr(ft._C, spec.options).fields}
    filled = set()
    for h in spec.hypers:
        if h.field is None:
            continue                                  # host-side: state lists, NAdam's mu
        name = h.field or h.name
        assert name in fields, f"{fn}: {h.name} fills no field of {spec.options}"
        filled.add(name)
        default, bound = fields[name]
        assert h.check == bound, (fn, h.name)
        if (fn, h.name) in SIGNATURE_OWN_DEFAULTS:
            assert h.default != default, f"{fn}: {h.name} no longer departs from the struct"
        else:
            assert h.default == default and type(h.default) is type(default), (fn, h.name)
    # Every field a caller sets has a keyword; the internal ones (bound None) are derived.
    settable = {name for name, (_, bound) in fields.items() if bound is not None}
    assert settable <= filled, f"{fn}: fields {sorted(settable - filled)} have no keyword"


def test_a_spec_naming_no_field_fails_at_import_time():
    from fusedtrain._optim_rules import Hyper, Spec
    with pytest.raises(AssertionError, match="beta3 fills no field of AdamOptions"):
        Spec("", "adam_", "AdamOptions", (), (Hyper("beta3"),), True, "", "")
