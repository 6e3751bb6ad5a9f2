"""ft.torch.BatchNorm1d/2d/3d against torch.nn.BatchNorm1d/2d/3d: outputs, grads, buffers, state_dict."""
import pytest

torch = pytest.importorskip("torch")
import fusedtrain.torch as ftt  # noqa: E402
from module_support import (compare_double_backward, compare_frozen, compare_modules,  # noqa: E402
                            compare_one_step, compare_without_graph, module_input)

SHAPES = {1: [(16, 5), (8, 5, 7)], 2: [(4, 6, 5, 3)], 3: [(3, 4, 3, 5, 2)]}
CASES = [(d, s) for d, shapes in SHAPES.items() for s in shapes]
OPTIONS = [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False),
           dict(momentum=0.3, eps=1e-3)]


def _pair(dim, num_features, **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, f"BatchNorm{dim}d")(num_features, **kw).double()
    ours = getattr(ftt, f"BatchNorm{dim}d")(num_features, **kw).double()
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("dim,shape", CASES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_train_then_eval_match_torch(dim, shape, options):
    ref, ours = _pair(dim, shape[1], **options)
    compare_modules(ref, ours, shape, seeds=range(3))            # training: batch stats, running updates
    ref.eval(), ours.eval()
    compare_modules(ref, ours, shape, seeds=range(3, 5))         # eval: running stats, constant


@pytest.mark.parametrize("dim,shape", CASES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_forward_without_a_graph_matches_torch(dim, shape, options):
    """Under no_grad, and with grad on but nothing requiring it, the modules skip
    autograd.Function (torch/_norm_autograd.apply): same outputs, running statistics and batch
    count as torch's, train and eval, and no grad_fn."""
    ref, ours = _pair(dim, shape[1], **options)
    compare_without_graph(ref, ours, [(module_input(shape, seed).detach(), training)
                                      for seed, training in ((0, True), (1, True), (2, False))])


@pytest.mark.parametrize("dim,shape", CASES)
def test_frozen_parameters_match_torch(dim, shape):
    """Frozen affine (fine-tuning), training and eval: x's grad as torch's; in eval mode the
    weight gradients' extra passes are skipped (_eval_backward without weight_grads)."""
    ref, ours = _pair(dim, shape[1])
    compare_frozen(ref, ours, shape, seeds=range(2))


EMPTY = [(1, (0, 5)), (1, (4, 5, 0)), (2, (0, 4, 3, 3)), (3, (2, 3, 0, 2, 2))]


@pytest.mark.parametrize("dim,shape", EMPTY, ids=str)
@pytest.mark.parametrize("options", [dict(), dict(momentum=None)], ids=["default", "momentum=None"])
def test_training_on_an_empty_batch_matches_torch(dim, shape, options):
    """An empty batch in training mode (a rank's share of a small one, a detection head with no
    boxes): as torch's, an empty output, the running statistics kept, the batch counted, zero
    weight gradients (Note [empty training batch])."""
    ref, ours = _pair(dim, shape[1], **options)
    for m in (ref, ours):
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=0, atol=0)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=0)
    compare_modules(ref, ours, (3, shape[1]) + (4,) * dim, seeds=range(2))  # still in step


def test_eval_backward_of_an_empty_batch_gives_zero_weight_grads():
    """Eval mode's weight gradients come from the channel-sum kernel: an empty batch (a rank's
    share of a small one) gives zeros, as torch's."""
    ref, ours = _pair(2, 4)
    ref.eval(), ours.eval()
    for m in (ref, ours):
        x = torch.zeros(0, 4, 3, 3, dtype=torch.float64, requires_grad=True)
        m(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=0)


@pytest.mark.parametrize("dim,shape", CASES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_the_gradient_differentiates_as_torchs(dim, shape, options):
    """Note [double backward]: a gradient penalty through batch norm trains as through torch's,
    in training (the running statistics updated once, by the forward) and in eval; channels_last
    inputs as well."""
    ref, ours = _pair(dim, shape[1], **options)
    compare_double_backward(ref, ours, module_input(shape, 0))
    if dim > 1:
        fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
        compare_double_backward(ref, ours, module_input(shape, 1, fmt))
    ref.eval(), ours.eval()
    compare_double_backward(ref, ours, module_input(shape, 2))


@pytest.mark.parametrize("dim,memory_format", [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_channels_last_input_matches_and_keeps_format(dim, memory_format):
    shape = SHAPES[dim][0]
    ref, ours = _pair(dim, shape[1])
    compare_modules(ref, ours, shape, seeds=range(2), memory_format=memory_format)
    x = module_input(shape, 7, memory_format)
    assert ours(x).is_contiguous(memory_format=memory_format)
    ref(x)                                                # keeps the running stats in step
    ours.eval(), ref.eval()
    compare_modules(ref, ours, shape, seeds=range(2), memory_format=memory_format)


def test_channels_last_input_is_not_copied(monkeypatch):
    """The kernels must see the caller's own memory, as the (N, H, W, C) view."""
    import fusedtrain as ft
    seen = []
    real = ft.batch_norm_forward

    def spy(x, *args, **kw):
        seen.append((x.data_ptr(), kw["channels_last"], x.is_contiguous()))
        return real(x, *args, **kw)
    monkeypatch.setattr(ft, "batch_norm_forward", spy)
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    ftt.BatchNorm2d(8)(x)
    assert seen == [(x.data_ptr(), True, True)]


def test_state_dict_loads_both_ways_and_counts_batches():
    ref, ours = _pair(2, 6, momentum=None)
    for seed in range(4):
        ours(module_input((4, 6, 3, 3), seed))
    assert int(ours.num_batches_tracked) == 4
    fresh_ref = torch.nn.BatchNorm2d(6, momentum=None).double()
    fresh_ref.load_state_dict(ours.state_dict())                 # ours -> torch
    back = ftt.BatchNorm2d(6, momentum=None).double()
    back.load_state_dict(fresh_ref.state_dict())                 # torch -> ours
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)
    assert isinstance(ours, torch.nn.BatchNorm2d)
    assert "momentum=None" in repr(ours)


def test_float32_module_matches_torch():
    torch.manual_seed(0)
    ref, ours = torch.nn.BatchNorm2d(16), ftt.BatchNorm2d(16)
    ours.load_state_dict(ref.state_dict())
    compare_one_step(ref, ours, torch.randn(8, 16, 7, 7) * 3 + 1, (1e-5, 1e-5), (1e-4, 1e-4))
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-5, atol=1e-6)


def test_one_value_per_channel_raises_like_torch():
    with pytest.raises(ValueError):
        ftt.BatchNorm1d(3)(torch.randn(1, 3))
