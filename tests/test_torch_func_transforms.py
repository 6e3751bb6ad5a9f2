"""The normalization modules under torch.func's transforms (Note [torch.func transforms]): vmap,
per-sample gradients (vmap of grad over functional_call), jacrev and jvp give torch.nn's results,
and where torch.nn's module refuses a transform (batch norm updating its running statistics
under vmap) ours refuses it too."""
import pytest

torch = pytest.importorskip("torch")
import fusedtrain.torch as ftt  # noqa: E402
from torch.func import functional_call, grad, jacrev, jvp, vmap  # noqa: E402

# (module, args, kwargs, batch of inputs (vmapped over dim 0), training)
CASES = [
    ("LayerNorm", (8,), {}, (5, 3, 8), True),
    ("LayerNorm", ((2, 4),), {"bias": False}, (5, 3, 2, 4), True),
    ("RMSNorm", (8,), {}, (5, 3, 8), True),
    ("GroupNorm", (2, 4), {}, (5, 3, 4, 5), True),
    ("GroupNorm", (4, 4), {"affine": False}, (5, 2, 4, 3, 3), True),
    ("InstanceNorm1d", (4,), {"affine": True}, (5, 3, 4, 6), True),
    ("InstanceNorm2d", (4,), {"track_running_stats": True}, (5, 2, 4, 3, 3), False),
    ("BatchNorm1d", (4,), {}, (5, 3, 4), False),
    ("BatchNorm2d", (4,), {"affine": False}, (5, 3, 4, 2, 2), False),
    ("BatchNorm1d", (4,), {"track_running_stats": False}, (5, 3, 4), True),
]


def _pair(name, args, kwargs, training):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(*args, **kwargs).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5)
        for b in ref.buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    ours = getattr(ftt, name)(*args, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    ref.train(training), ours.train(training)
    return ref, ours


def _transformed(m, x):
    """vmap of the module, per-sample grads of its parameters, jacrev and jvp at one sample."""
    params = dict(m.named_parameters())
    out = [vmap(m)(x), jacrev(lambda xi: m(xi).sum(0))(x[0]),
           jvp(m, (x[0],), (torch.ones_like(x[0]),))[1]]
    if params:
        def loss(p, xi):
            return (functional_call(m, p, (xi,)) ** 2).sum()
        out += list(vmap(grad(loss), in_dims=(None, 0))(params, x).values())
    return out


@pytest.mark.parametrize("name, args, kwargs, shape, training", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_transforms_match_torch(name, args, kwargs, shape, training):
    ref, ours = _pair(name, args, kwargs, training)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want, got = _transformed(ref, x), _transformed(ours, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    torch.testing.assert_close(ours(x[0]), ref(x[0]), rtol=1e-12, atol=1e-12)  # our kernels here


def test_running_statistics_under_vmap_are_refused_as_torch_refuses_them():
    ref, ours = _pair("BatchNorm1d", (4,), {}, True)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError) as want:
        vmap(ref)(x)
    with pytest.raises(RuntimeError) as got:
        vmap(ours)(x)
    assert type(got.value) is type(want.value)
    assert torch.equal(ours.running_mean, ref.running_mean)


def test_without_transforms_the_kernels_run(monkeypatch):
    """The fallback is for transforms only: a plain call goes to our kernels."""
    import fusedtrain as ft
    calls = []
    real = ft.layer_norm_forward
    monkeypatch.setattr(ft, "layer_norm_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    ftt.LayerNorm(8)(torch.randn(3, 8))
    assert calls == [1]
    vmap(ftt.LayerNorm(8))(torch.randn(2, 3, 8))
    assert calls == [1]
