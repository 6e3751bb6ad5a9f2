"""Torch CPU tensors handed straight to the kernels are updated in their own storage, like NumPy arrays."""

import numpy as np
import pytest

import fusedtrain as ft
from bits import same_bits
from optim_cases import FIRST_OF_EACH_RULE
from stepping import seed_for

SHAPES = [(5, 3), (4097,), (1,)]
STEPS = 3


def _pair(torch, arrays, requires_grad=False):
    """Torch copies of arrays, with their data pointers, to check later that storage was not swapped."""
    tensors = [torch.tensor(a, requires_grad=requires_grad) for a in arrays]
    return tensors, [t.data_ptr() for t in tensors]


def _assert_same_bits(tensors, arrays, what):
    for i, (t, a) in enumerate(zip(tensors, arrays)):
        assert same_bits(t.detach().numpy(), a), f"{what}[{i}]"


@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_rule_updates_torch_tensors_in_place(case, isa, torch):
    rng = np.random.default_rng(seed_for(case, "torch-in-place"))
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    state = {n: [np.zeros(s, np.float32) for s in SHAPES] for n in case.state_names}
    start = [p.copy() for p in params]
    # Trainable leaves, as a torch model's parameters would be.
    t_params, p_ptrs = _pair(torch, params, requires_grad=True)
    t_state = {n: _pair(torch, arrays) for n, arrays in state.items()}

    rule = case.rule
    for k in range(1, STEPS + 1):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        extra = {"step": k} if rule.takes_step else {}
        for p, s, g in ((params, state, grads),
                        (t_params, {n: v[0] for n, v in t_state.items()}, [torch.from_numpy(g) for g in grads])):
            kw = {n: s[n] for n in rule.keyword_state(case.options)}
            getattr(ft, rule.name)(p, g, *[s[n] for n in rule.positional_state], **kw, **extra, **case.options)

    assert [t.data_ptr() for t in t_params] == p_ptrs
    assert all(t.requires_grad for t in t_params)
    assert not any(np.array_equal(t.detach().numpy(), s) for t, s in zip(t_params, start))
    _assert_same_bits(t_params, params, "params")
    for name, (tensors, ptrs) in t_state.items():
        assert [t.data_ptr() for t in tensors] == ptrs, name
        _assert_same_bits(tensors, state[name], name)


def test_bfloat16_torch_params_with_master(isa, torch):
    rng = np.random.default_rng(seed_for("torch-bf16"))
    t_params = [torch.randn(s, generator=torch.Generator().manual_seed(i)).to(torch.bfloat16) for i, s in enumerate(SHAPES)]
    ptrs = [t.data_ptr() for t in t_params]
    master = [t.float() for t in t_params]
    m = [torch.zeros(s) for s in SHAPES]
    v = [torch.zeros(s) for s in SHAPES]
    for k in range(1, STEPS + 1):
        grads = [torch.from_numpy(rng.standard_normal(s).astype(np.float32)).to(torch.bfloat16) for s in SHAPES]
        ft.adam_(t_params, grads, m, v, step=k, lr=0.05, master_params=master)
    assert [t.data_ptr() for t in t_params] == ptrs
    for i, (p, mp) in enumerate(zip(t_params, master)):
        # The half weights are always the master copy rounded to nearest even.
        assert torch.equal(p, mp.to(torch.bfloat16)), f"params[{i}]"


def test_utilities_accept_torch_tensors(isa, torch):
    rng = np.random.default_rng(seed_for("torch-utils"))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    tensors, ptrs = _pair(torch, arrays)
    for norm_type in (2.0, 1.0, float("inf")):
        assert ft.global_norm(tensors, norm_type) == ft.global_norm(arrays, norm_type)

    assert ft.clip_grad_norm_(tensors, 0.5) == ft.clip_grad_norm_(arrays, 0.5)
    assert [t.data_ptr() for t in tensors] == ptrs
    _assert_same_bits(tensors, arrays, "grads")

    averages = [np.zeros(s, np.float32) for s in SHAPES]
    t_averages, a_ptrs = _pair(torch, averages)
    ft.ema_(averages, arrays, decay=0.9)
    ft.ema_(t_averages, tensors, decay=0.9)
    assert [t.data_ptr() for t in t_averages] == a_ptrs
    _assert_same_bits(t_averages, averages, "averages")
