"""ft.torch optimizers never step stale memory: new grads every step, `p.data = ...` swaps,
replaced state, params that gain or lose grads, mixed dtypes and channels_last models all
follow torch.optim step for step (foreach=False is the reference)."""

import pytest

import fusedtrain as ft
from precisions import Tolerance, assert_close

torch = pytest.importorskip("torch")

F32 = Tolerance(2e-5, 2e-6)
F64 = Tolerance(1e-12, 1e-13)


def _pair(name, params, **kw):
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    return (getattr(ft.torch, name)(params, **kw),
            getattr(torch.optim, name)(ref_params, foreach=False, **kw), ref_params)


def _assert_same(ours, params, ref, ref_params, tol=F32):
    for i, (p, q) in enumerate(zip(params, ref_params)):
        assert p.dtype == q.dtype and p.shape == q.shape
        assert_close(p.detach().double().numpy(), q.detach().double().numpy(), tol, f"params[{i}]")
        s, t = ours.state[p], ref.state[q]
        assert set(s) == set(t), (set(s), set(t))
        for key in t:
            assert_close(s[key].double().numpy(), t[key].double().numpy(), tol, f"state[{i}][{key}]")


def _set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def _step_both(ours, params, ref, ref_params, grads):
    """One step of each optimizer with the same grads (None: that param has no grad)."""
    _set_grads(params, grads)
    _set_grads(ref_params, grads)
    ours.step()
    ref.step()


CASES = [("AdamW", dict(lr=0.02, weight_decay=0.03)),
         ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True))]


@pytest.mark.parametrize("name,kw", CASES)
def test_new_grad_tensors_every_step(name, kw):
    """zero_grad(set_to_none=True) + backward: every step's grads are new tensors."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    ref_model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    ref_model.load_state_dict(model.state_dict())
    ours = getattr(ft.torch, name)(model.parameters(), **kw)
    ref = getattr(torch.optim, name)(ref_model.parameters(), foreach=False, **kw)
    seen = set()
    for step in range(6):
        x = torch.randn(9, 7)
        for m, opt in ((model, ours), (ref_model, ref)):
            opt.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            opt.step()
        seen.update(p.grad.data_ptr() for p in model.parameters())
    assert len(seen) > len(list(model.parameters()))     # the grads did live in new memory
    _assert_same(ours, list(model.parameters()), ref, list(ref_model.parameters()))


def _trajectory(name, kw, shapes, seed, steps, before_step):
    """Both optimizers over the same random grads; before_step(step, ours, params, ref,
    ref_params, gen) changes things between steps. Returns (ours, params)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    ours, ref, ref_params = _pair(name, params, **kw)
    for step in range(steps):
        before_step(step, ours, params, ref, ref_params, gen)
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        _step_both(ours, params, ref, ref_params, grads)
    _assert_same(ours, params, ref, ref_params)
    return ours, params


@pytest.mark.parametrize("name,kw", CASES)
def test_param_data_swaps_are_stepped(name, kw):
    swapped = []

    def swap(step, ours, params, ref, ref_params, gen):
        if swapped:
            old, kept = swapped.pop()
            assert torch.equal(old, kept)                 # the old storage is no longer written
        if step in (2, 3):
            # New storage for params[0] (and a different value), as a reload or .to() would do.
            fresh = torch.randn(params[0].shape, generator=gen)
            swapped.append((params[0].data, params[0].detach().clone()))
            params[0].data = fresh.clone()
            ref_params[0].data = fresh.clone()
    _trajectory(name, kw, [(5, 3), (11,), (1,)], 1, 5, swap)


def test_param_dtype_change_converts_state():
    def to_double(step, ours, params, ref, ref_params, gen):
        if step != 2:
            return
        for p, q in zip(params, ref_params):
            p.data, q.data = p.data.double(), q.data.double()
        for q in ref_params:                              # torch.optim leaves that to the caller
            for k in ("exp_avg", "exp_avg_sq"):
                ref.state[q][k] = ref.state[q][k].double()
    ours, params = _trajectory("Adam", dict(lr=0.01), [(4, 3), (6,)], 2, 4, to_double)
    assert ours.state[params[0]]["exp_avg"].dtype == torch.float64


def test_replaced_state_tensors_are_used():
    def replace(step, ours, params, ref, ref_params, gen):
        if step == 2:
            for opt, ps in ((ours, params), (ref, ref_params)):
                opt.state[ps[1]]["exp_avg"] = torch.full((8,), 0.25)
                opt.state[ps[0]]["step"] = torch.tensor(40.0)
    ours, params = _trajectory("Adam", dict(lr=0.01), [(3, 3), (8,)], 3, 5, replace)
    assert float(ours.state[params[0]]["step"]) == 43.0


def test_deleted_state_starts_over():
    def forget(step, ours, params, ref, ref_params, gen):
        if step == 3:
            del ours.state[params[1]]
            del ref.state[ref_params[1]]
    ours, params = _trajectory("AdamW", dict(lr=0.02), [(6,), (2, 5), (3,)], 8, 6, forget)
    assert [float(ours.state[p]["step"]) for p in params] == [6.0, 3.0, 6.0]


def test_frozen_params_and_params_that_start_or_stop_having_grads():
    g = torch.Generator().manual_seed(4)
    shapes = [(4,), (3, 2), (5,), (1,)]
    params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    ours, ref, ref_params = _pair("AdamW", params, lr=0.03)
    # None: no grad that step. params[3] is frozen for a while, then trains; params[1] stops.
    for step in range(9):
        grads = [torch.randn(s, generator=g) for s in shapes]
        if step < 4:
            grads[3] = None
        if step >= 6:
            grads[1] = None
        _step_both(ours, params, ref, ref_params, grads)
    _assert_same(ours, params, ref, ref_params)
    assert float(ours.state[params[3]]["step"]) == 5.0


def test_mixed_dtypes_in_one_group():
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(5, generator=g, dtype=dt).requires_grad_()
              for dt in (torch.float32, torch.float64, torch.float32, torch.float64)]
    ours, ref, ref_params = _pair("AdamW", params, lr=0.01)
    for step in range(4):
        grads = [torch.randn(5, generator=g, dtype=p.dtype) for p in params]
        _step_both(ours, params, ref, ref_params, grads)
    _assert_same(ours, params, ref, ref_params)


@pytest.mark.parametrize("name,kw", CASES)
def test_channels_last_model(name, kw):
    """A channels_last conv net (its 4-d weights are dense but not C order) trains in place."""
    torch.manual_seed(6)

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, 5, 3), torch.nn.Flatten())

    model, ref_model = net(), net()
    ref_model.load_state_dict(model.state_dict())
    model.to(memory_format=torch.channels_last)
    ref_model.to(memory_format=torch.channels_last)
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights and not any(p.is_contiguous() for p in weights)
    ptrs = [p.data_ptr() for p in model.parameters()]
    ours = getattr(ft.torch, name)(model.parameters(), **kw)
    ref = getattr(torch.optim, name)(ref_model.parameters(), foreach=False, **kw)
    for step in range(4):
        x = torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)
        for m, opt in ((model, ours), (ref_model, ref)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert not any(p.is_contiguous() for p in weights)
    _assert_same(ours, list(model.parameters()), ref, list(ref_model.parameters()))


@pytest.mark.parametrize("name,kw", CASES)
def test_grads_in_another_layout_than_their_params(name, kw):
    """C-order grads set on channels_last params (and the reverse) step like torch.optim's, each
    step, with the params left in place in their own layout."""
    g = torch.Generator().manual_seed(8)
    shapes = [(3, 4, 5, 6), (2, 3, 1, 7), (7,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params[0] = params[0].contiguous(memory_format=torch.channels_last)
    params = [p.requires_grad_() for p in params]
    ptrs = [p.data_ptr() for p in params]
    ours, ref, ref_params = _pair(name, params, **kw)
    for step in range(4):
        grads = [torch.randn(s, generator=g) for s in shapes]
        if step % 2:
            grads = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                     for t in grads]
        _step_both(ours, params, ref, ref_params, grads)
    assert [p.data_ptr() for p in params] == ptrs and not params[0].is_contiguous()
    _assert_same(ours, params, ref, ref_params)


def test_step_counts_are_views_of_one_buffer_and_survive_a_checkpoint():
    g = torch.Generator().manual_seed(7)
    params = [torch.randn(s, generator=g).requires_grad_() for s in [(3,), (2, 2), (5,)]]
    ours = ft.torch.Adam(params, lr=0.01)
    for _ in range(3):
        _set_grads(params, [torch.randn(p.shape, generator=g) for p in params])
        ours.step()
    steps = [ours.state[p]["step"] for p in params]
    assert all(s.dim() == 0 and s.dtype == torch.float32 and float(s) == 3.0 for s in steps)
    ref = torch.optim.Adam([p.detach().clone().requires_grad_() for p in params], lr=0.01)
    ref.load_state_dict(ours.state_dict())
    assert [float(ref.state[q]["step"]) for q in ref.param_groups[0]["params"]] == [3.0] * 3
    ours.load_state_dict(ref.state_dict())
    _set_grads(params, [torch.randn(p.shape, generator=g) for p in params])
    ours.step()
    assert [float(ours.state[p]["step"]) for p in params] == [4.0] * 3
