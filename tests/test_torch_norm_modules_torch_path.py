"""The normalization modules on inputs our kernels cannot read (Note [torch's op where the
kernels cannot go]): under torch.func's transforms (vmap, per-sample gradients as vmap of grad
over functional_call, jacrev, jvp) and forward-mode AD, under torch.jit.trace and
torch.fx.symbolic_trace, on meta tensors,
under FakeTensorMode, on nested (jagged) tensors and on DTensors, they give torch.nn's results, and where torch.nn's
module refuses (batch norm updating its running statistics under vmap) ours refuses too."""
import pytest

torch = pytest.importorskip("torch")
import fusedtrain.torch as ftt  # noqa: E402
from torch.func import functional_call, grad, jacrev, jvp, vmap  # noqa: E402
from dist_support import run_ranks  # noqa: E402

# torch.func's first use scripts a helper of torch's with the deprecated torch.jit.script.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

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


@pytest.mark.parametrize("name, args, kwargs, shape, training", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")   # torch's own shape checks
def test_jit_trace_records_torchs_op(name, args, kwargs, shape, training):
    """torch.jit.trace (TorchScript, the ONNX exporter's tracing path) records torch ops only: the
    trace of ours is torch's functional op, so the traced module (saved and loaded) computes what
    the module does on new inputs, as the trace of torch.nn's does."""
    import io
    shape = shape[1:]
    g = torch.Generator().manual_seed(2)
    x, x2 = (torch.randn(shape, dtype=torch.float64, generator=g) for _ in range(2))
    outs = []
    for m in _pair(name, args, kwargs, training):
        traced = torch.jit.trace(m, x)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        with torch.no_grad():
            outs.append((traced(x2), loaded(x2), m(x2)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for traced, loaded, direct in outs:
        torch.testing.assert_close(traced, direct, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(loaded, direct, rtol=1e-12, atol=1e-12)


class _LeafTracer(torch.fx.Tracer):
    """torch.fx's tracer with our modules as leaves, as torch.nn's own are (README)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, FUSED_MODULES) or super().is_leaf_module(m, qualname)


FUSED_MODULES = tuple(getattr(ftt, c[0]) for c in CASES)


@pytest.mark.parametrize("name, args, kwargs, shape, training", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_fx_symbolic_trace(name, args, kwargs, shape, training):
    """torch.fx.symbolic_trace passes Proxy objects: layer, RMS and group norm record torch's
    functional op (their forwards are traceable), and with our modules as leaves (as torch.nn's
    are leaves) every one is a call of the module itself, our kernels at run time."""
    shape = shape[1:]
    ref, ours = _pair(name, args, kwargs, training)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref.eval(), ours.eval()
    want = ref(x)
    model = torch.nn.Sequential(ours)      # the root module is traced through, never a leaf
    graph = _LeafTracer().trace(model)
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "output"]
    torch.testing.assert_close(torch.fx.GraphModule(model, graph)(x), want, rtol=1e-12, atol=1e-12)
    if name in ("LayerNorm", "RMSNorm", "GroupNorm"):
        traced = torch.fx.symbolic_trace(model)
        assert any(n.op == "call_function" for n in traced.graph.nodes)
        torch.testing.assert_close(traced(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, args, kwargs, shape, training", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_meta_tensors_and_fake_tensor_mode_as_torch(name, args, kwargs, shape, training):
    """Deferred initialization (a model built on the meta device) and shape propagation under
    FakeTensorMode: outputs and input grads of torch's shapes, dtypes and devices."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    shape = shape[1:]
    for m in _pair(name, args, kwargs, training):
        with torch.device("meta"):
            m_meta = type(m)(*args, **kwargs).double().train(training)
            x = torch.empty(shape, dtype=torch.float64, requires_grad=True)
        y = m_meta(x)
        y.sum().backward()
        assert (y.shape, y.dtype, y.device.type) == (x.shape, x.dtype, "meta")
        assert x.grad.shape == x.shape
        with FakeTensorMode(allow_non_fake_inputs=True):
            y = m(torch.empty(shape, dtype=torch.float64))
        assert type(y).__name__ == "FakeTensor" and y.shape == shape


@pytest.mark.parametrize("name", ["LayerNorm", "RMSNorm"])
def test_nested_jagged_input_as_torch(name):
    torch.manual_seed(0)
    ref, ours = getattr(torch.nn, name)(8), getattr(ftt, name)(8)
    ours.load_state_dict(ref.state_dict())
    x = torch.nested.nested_tensor([torch.randn(3, 8), torch.randn(5, 8)], layout=torch.jagged)
    for got, want in zip(ours(x).unbind(), ref(x).unbind()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _dtensor_modules(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_module, distribute_tensor
    mesh = init_device_mesh("cpu", (world,))
    cases = [("LayerNorm", (8,), (4, 8), Shard(0)), ("RMSNorm", (8,), (4, 8), Replicate()),
             ("GroupNorm", (2, 4), (4, 4, 5), Replicate()), ("BatchNorm1d", (4,), (6, 4), Replicate())]
    for name, args, shape, placement in cases:
        torch.manual_seed(0)
        x = torch.randn(shape)
        outs = []
        for mod in (torch.nn, ftt):
            torch.manual_seed(1)
            m = distribute_module(getattr(mod, name)(*args), mesh)
            xd = distribute_tensor(x, mesh, [placement]).requires_grad_()
            y = m(xd)
            y.sum().backward()
            outs.append((type(y).__name__, y.full_tensor(), xd.grad.full_tensor()))
        assert outs[1][0] == "DTensor", name
        for got, want in zip(outs[1][1:], outs[0][1:]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_dtensor_input_as_torch():
    """Tensor parallelism: DTensor activations and replicated DTensor parameters run through
    torch's op, giving DTensors of torch's values and grads (two gloo ranks)."""
    run_ranks(_dtensor_modules, 2)


@pytest.mark.parametrize("name, args, kwargs, shape, training", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_forward_mode_ad_as_torch(name, args, kwargs, shape, training):
    import torch.autograd.forward_ad as fwAD
    x = torch.randn(shape[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    tangent = torch.ones_like(x)
    outs = []
    for m in _pair(name, args, kwargs, training):
        with fwAD.dual_level():
            y = m(fwAD.make_dual(x, tangent))
            outs.append(fwAD.unpack_dual(y))
    torch.testing.assert_close(outs[1].primal, outs[0].primal, rtol=0, atol=0)
    torch.testing.assert_close(outs[1].tangent, outs[0].tangent, rtol=0, atol=0)
