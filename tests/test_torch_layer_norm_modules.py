"""ft.torch.LayerNorm / RMSNorm / GroupNorm / InstanceNorm1d/2d/3d against their torch.nn
namesakes: outputs, grads, buffers, state_dict, channels-last inputs, and a model that trains to
the same losses with ours swapped in."""
import copy

import pytest

torch = pytest.importorskip("torch")
import fusedtrain as ft  # noqa: E402
import fusedtrain.torch as ftt  # noqa: E402
from module_support import (ROW_MODULES, compare_double_backward, compare_frozen,  # noqa: E402
                            compare_modules, compare_one_step, compare_without_graph, module_input)


def _pair(name, kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(**kw).double()
    ours = getattr(ftt, name)(**kw).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("name,shape,kw", ROW_MODULES, ids=lambda v: str(v))
def test_train_then_eval_match_torch(name, shape, kw):
    ref, ours = _pair(name, kw)
    assert isinstance(ours, getattr(torch.nn, name)) and repr(ours) == repr(ref)
    compare_modules(ref, ours, shape, seeds=range(3))
    ref.eval(), ours.eval()
    compare_modules(ref, ours, shape, seeds=range(3, 5))


@pytest.mark.parametrize("name,shape,kw", ROW_MODULES, ids=lambda v: str(v))
def test_forward_without_a_graph_matches_torch(name, shape, kw):
    """Under no_grad, and with grad on but nothing requiring it, the modules skip
    autograd.Function (torch/_norm_autograd.apply): same outputs and buffers as torch's, train
    and eval, and no grad_fn."""
    ref, ours = _pair(name, kw)
    compare_without_graph(ref, ours, [
        (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), training)
        for seed, training in ((0, True), (1, True), (2, False))])


@pytest.mark.parametrize("name,shape,kw", [
    ("GroupNorm", (3, 4, 0, 5), dict(num_groups=2, num_channels=4)),
    ("GroupNorm", (2, 4, 0), dict(num_groups=4, num_channels=4, affine=False)),
    ("InstanceNorm1d", (3, 2, 0), dict(num_features=2, affine=True)),
    ("InstanceNorm2d", (2, 3, 4, 0), dict(num_features=3, affine=True, track_running_stats=True)),
    ("InstanceNorm3d", (2, 3, 0, 2, 2), dict(num_features=3)),
], ids=lambda v: str(v))
def test_input_without_values_per_group_as_torch(name, shape, kw):
    """A spatial size of 0 with samples and channels: the kernels refuse it (no values per group),
    the modules give torch.nn's empty output, parameter grads (NaN for GroupNorm's weight, as
    torch's) and running statistics, in training and in eval."""
    ref, ours = _pair(name, kw)
    for training in (True, False):
        ref.train(training), ours.train(training)
        outs = []
        for m in (ref, ours):
            x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            y = m(x)
            if y.requires_grad:
                y.sum().backward()
            outs.append((y, x.grad, [p.grad for p in m.parameters()]))
        (y1, gx1, gp1), (y2, gx2, gp2) = outs
        assert y2.shape == y1.shape == shape and y2.dtype == y1.dtype
        assert (gx2 is None) == (gx1 is None)
        for a, b in zip(gp2, gp1):
            torch.testing.assert_close(a, b, equal_nan=True)
        for a, b in zip(ours.buffers(), ref.buffers()):
            torch.testing.assert_close(a, b)
        ref.zero_grad(), ours.zero_grad()


@pytest.mark.parametrize("name,shape,kw", ROW_MODULES + [
    ("BatchNorm2d", (4, 3, 5, 5), dict(num_features=3)),
], ids=lambda v: str(v))
def test_the_gradient_differentiates_as_torchs(name, shape, kw):
    """A graph of the gradient (create_graph=True) is torch's (Note [double backward]): a gradient
    penalty trains as through torch.nn's module, in training and in eval."""
    ref, ours = _pair(name, kw)
    compare_double_backward(ref, ours, module_input(shape, 0))
    ref.eval(), ours.eval()
    compare_double_backward(ref, ours, module_input(shape, 1))


def test_the_gradient_differentiates_as_torchs_in_any_layout():
    """Note [double backward] where the kernels read another tensor than the caller's x: a
    channels_last GroupNorm input (the permuted view) and a transposed LayerNorm input (a
    contiguous copy); the recompute differentiates the caller's x."""
    ref, ours = _pair("GroupNorm", dict(num_groups=2, num_channels=4))
    compare_double_backward(ref, ours, module_input((3, 4, 5, 2), 0, torch.channels_last))
    ref, ours = _pair("LayerNorm", dict(normalized_shape=6))
    compare_double_backward(ref, ours, module_input((6, 5), 1).detach().t().requires_grad_())


@pytest.mark.parametrize("name,shape,kw", ROW_MODULES, ids=lambda v: str(v))
def test_frozen_parameters_match_torch_and_skip_the_weight_grads(name, shape, kw, monkeypatch):
    ref, ours = _pair(name, kw)
    asked = []
    for fn in ("layer_norm_backward", "rms_norm_backward", "group_norm_backward"):
        real = getattr(ft, fn)
        monkeypatch.setattr(ft, fn, lambda *a, _real=real, **k: asked.append(k["weight_grads"]) or _real(*a, **k))
    compare_frozen(ref, ours, shape, seeds=range(2))
    assert not any(asked)


@pytest.mark.parametrize("frozen_bias", [False, True], ids=["no bias", "frozen bias"])
def test_layer_norm_without_bias_grads_matches_torch_and_skips_dbias(frozen_bias, monkeypatch):
    """A LayerNorm without a bias, or with its bias frozen, asks the backward for no dbias
    (bias_grads=False) and gets torch's input and weight grads."""
    ref, ours = _pair("LayerNorm", dict(normalized_shape=12, bias=frozen_bias))
    if frozen_bias:
        ref.bias.requires_grad_(False), ours.bias.requires_grad_(False)
    asked = []
    real = ft.layer_norm_backward
    monkeypatch.setattr(ft, "layer_norm_backward",
                        lambda *a, **k: asked.append(k["bias_grads"]) or real(*a, **k))
    compare_modules(ref, ours, (8, 5, 12), seeds=range(2))
    assert asked and not any(asked)


@pytest.mark.parametrize("name,kw", [("GroupNorm", dict(num_groups=2, num_channels=8)),
                                     ("InstanceNorm2d", dict(num_features=8, affine=True,
                                                             track_running_stats=True))])
def test_channels_last_input_matches_keeps_format_and_is_not_copied(name, kw, monkeypatch):
    shape = (3, 8, 5, 6)
    ref, ours = _pair(name, kw)
    compare_modules(ref, ours, shape, seeds=range(2), memory_format=torch.channels_last)
    import fusedtrain as ft
    seen = []
    fn = "group_norm_forward" if name == "GroupNorm" else "instance_norm"
    real = getattr(ft, fn)

    def spy(x, *args, **kw):
        seen.append((x.data_ptr(), kw["channels_last"]))
        return real(x, *args, **kw)
    monkeypatch.setattr(ft, fn, spy)
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert ours(x).is_contiguous(memory_format=torch.channels_last)
    assert seen == [(x.data_ptr(), True)]


def test_float32_and_bfloat16_layer_norm_match_torch():
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        ref = torch.nn.LayerNorm(64).to(dtype)
        ours = ftt.LayerNorm(64).to(dtype)
        ours.load_state_dict(ref.state_dict())
        x = (torch.randn(32, 64) * 3 + 1).to(dtype)
        compare_one_step(ref, ours, x, (tol, tol * 4), (tol * 4, tol * 4))
        torch.testing.assert_close(ours.weight.grad.float(), ref.weight.grad.float(), rtol=tol * 4, atol=tol * 40)


MIXED = [(x, w) for x in ("float32", "bfloat16", "float16", "float64")
         for w in ("float32", "bfloat16", "float16", "float64") if w != x and w != "float32"]


# torch's own rms_norm warns that a mixed pair takes its unfused path.
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight:UserWarning")
@pytest.mark.parametrize("x_dtype, w_dtype", MIXED, ids=str)
def test_rms_norm_takes_a_weight_of_another_dtype_as_torch(x_dtype, w_dtype):
    """torch's RMSNorm takes any float weight beside any float input and returns the input's
    dtype; ours too (the weight widened to float32 for the kernels), with a weight gradient
    of the weight's dtype."""
    xd, wd = getattr(torch, x_dtype), getattr(torch, w_dtype)
    torch.manual_seed(0)
    ref, ours = torch.nn.RMSNorm(16).to(wd), ftt.RMSNorm(16).to(wd)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 16).to(xd)
    outs = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(torch.ones_like(y))
        outs.append((y, xi.grad, m.weight.grad))
    tol = {"float64": 1e-6, "float32": 1e-5}.get(x_dtype, 2e-2)   # float64 x: a float32 weight
    for got, want in zip(outs[1], outs[0]):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)


def _swap_layer_norms(model):
    for name, child in model.named_children():
        if type(child) is torch.nn.LayerNorm:
            ours = ftt.LayerNorm(child.normalized_shape, eps=child.eps,
                                 elementwise_affine=child.elementwise_affine,
                                 bias=child.bias is not None).to(child.weight.dtype)
            ours.load_state_dict(child.state_dict())
            setattr(model, name, ours)
        else:
            _swap_layer_norms(child)
    return model


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_model_with_layer_norm_swapped_trains_to_the_same_losses(dtype, tol):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.LayerNorm(64), torch.nn.GELU(),
        torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.GELU(),
        torch.nn.Linear(64, 4)).to(dtype)
    ours = _swap_layer_norms(copy.deepcopy(model))
    assert sum(type(m) is ftt.LayerNorm for m in ours.modules()) == 2
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(16, 4, generator=g, dtype=dtype)  # a learnable labelling
    xs = [torch.randn(32, 16, generator=g, dtype=dtype) for _ in range(15)]
    data = [(x, (x @ teacher).argmax(dim=1)) for x in xs] * 2
    losses = []
    for m in (model, ours):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        run = []
        for x, t in data:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), t)
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0][-1] < losses[0][0] * 0.7  # it trains
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=tol, atol=tol)
