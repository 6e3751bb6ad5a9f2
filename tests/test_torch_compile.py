"""ft.torch's normalization modules under torch.compile (Note [traced kernels]): every module and
option set traces as one graph (fullgraph=True) and gives the same bits as the same module in
eager mode, forward, backward and running statistics, train and eval; the custom operators'
fake implementations agree with the kernels (torch.library.opcheck) in every dtype; a small
network compiled by inductor with dynamic shapes matches eager."""
import copy

import pytest

torch = pytest.importorskip("torch")
import fusedtrain as ft  # noqa: E402
import fusedtrain.torch as ftt  # noqa: E402
from fusedtrain.torch import _traced  # noqa: E402
from module_support import ROW_MODULES, module_input  # noqa: E402

if not _traced.SUPPORTED:
    pytest.skip("this torch has no torch.library.custom_op", allow_module_level=True)

BN_MODULES = [
    ("BatchNorm1d", (16, 5), dict(num_features=5)),
    ("BatchNorm1d", (8, 5, 7), dict(num_features=5, affine=False)),
    ("BatchNorm2d", (4, 6, 5, 3), dict(num_features=6)),
    ("BatchNorm2d", (4, 6, 5, 3), dict(num_features=6, track_running_stats=False)),
    ("BatchNorm3d", (3, 4, 3, 5, 2), dict(num_features=4, momentum=0.3, eps=1e-3)),
]
# The channels_last inputs go to the kernels as permuted views (Note [traced kernels] keeps that).
CHANNELS_LAST = [
    ("GroupNorm", (4, 6, 5, 3), dict(num_groups=3, num_channels=6)),
    ("InstanceNorm2d", (2, 4, 5, 6), dict(num_features=4, affine=True, track_running_stats=True)),
    ("BatchNorm2d", (4, 6, 5, 3), dict(num_features=6)),
]
CASES = [(n, s, kw, None) for n, s, kw in ROW_MODULES + BN_MODULES] + \
    [(n, s, kw, torch.channels_last) for n, s, kw in CHANNELS_LAST]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _twins(name, kw, dtype):
    torch.manual_seed(0)
    eager = getattr(ftt, name)(**kw).to(dtype)
    with torch.no_grad():
        for p in eager.parameters():
            p.uniform_(0.5, 1.5)
    return eager, copy.deepcopy(eager)


@pytest.mark.parametrize("name,shape,kw,memory_format", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_module_is_one_graph_and_the_same_bits_as_eager(name, shape, kw, memory_format, dtype):
    _assert_compiled_steps_match(*_twins(name, kw, dtype), shape, memory_format, dtype,
                                 ((0, True), (1, True), (2, False)))


def _assert_compiled_steps_match(eager, traced, shape, memory_format, dtype, steps, device="cpu"):
    """Each (seed, training) step, forward and backward, through eager and through traced
    compiled with fullgraph=True: y (dtype, strides, bits), dx, every parameter grad and every
    buffer the same."""
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    for seed, training in steps:
        eager.train(training)
        traced.train(training)
        x = module_input(shape, seed, memory_format).detach().to(dtype).to(device)
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 100)).to(dtype).to(device)
        outs = []
        for run in (eager, compiled):
            xi = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
            y = run(xi)
            y.backward(dy)
            outs.append((y, xi.grad))
        (y_e, dx_e), (y_c, dx_c) = outs
        what = f"{dtype} step {seed}"
        assert y_c.dtype == y_e.dtype and y_c.stride() == y_e.stride()
        assert torch.equal(y_c, y_e), f"{what}: y differs"
        assert torch.equal(dx_c, dx_e), f"{what}: dx differs"
        for (n, pe), (_, pc) in zip(eager.named_parameters(), traced.named_parameters()):
            assert torch.equal(pc.grad, pe.grad), f"{what}: grad of {n} differs"
        _assert_same_buffers(eager, traced, what)


def _assert_same_buffers(eager, traced, what=""):
    for (n, be), (_, bc) in zip(eager.named_buffers(), traced.named_buffers()):
        assert torch.equal(bc, be), f"{what}: buffer {n} differs"


@pytest.mark.parametrize("name,shape,kw", [("LayerNorm", (8, 5, 12), dict(normalized_shape=12)),
                                            ("BatchNorm2d", (4, 6, 5, 3), dict(num_features=6)),
                                            ("InstanceNorm2d", (2, 4, 5, 6),
                                             dict(num_features=4, track_running_stats=True))],
                         ids=lambda v: str(v))
def test_compiled_inference_without_grad_matches_eager(name, shape, kw):
    """No graph to record (the modules in training mode still update their running statistics)."""
    eager, traced = _twins(name, kw, torch.float32)
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    for seed, context in ((0, torch.no_grad), (1, torch.inference_mode)):
        x = module_input(shape, seed).detach().float()
        with context():
            assert torch.equal(compiled(x), eager(x))
        _assert_same_buffers(eager, traced)


def test_eager_calls_do_not_go_through_the_operators(monkeypatch):
    """Note [eager apply]: the operators' dispatch is for traced graphs only."""
    def refuse(*args, **kwargs):
        raise AssertionError("an eager call went through a custom operator")
    for name in ("layer_norm_forward", "layer_norm_backward", "batch_norm_forward", "batch_norm_backward"):
        monkeypatch.setattr(_traced._Traced, name, staticmethod(refuse))
    assert _traced.kernels() is ft
    for module, shape in ((ftt.LayerNorm(12), (8, 12)), (ftt.BatchNorm1d(12), (8, 12))):
        x = torch.randn(shape, requires_grad=True)
        module(x).sum().backward()


def _op_samples(dtype, weight_dtype):
    """(operator, arguments) for every operator, in dtype, with weights in weight_dtype."""
    ops = torch.ops.fusedtrain
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 8, generator=g).to(dtype)
    w, b = (torch.rand(8, generator=g) + 0.5).to(weight_dtype), torch.randn(8, generator=g).to(weight_dtype)
    _, m, r = ft.layer_norm_forward(x, 8, w, b)
    _, rr = ft.rms_norm_forward(x, 8, w)
    xc = torch.randn(4, 6, 3, 3, generator=g).to(dtype)
    wc = (torch.rand(6, generator=g) + 0.5).to(weight_dtype)
    _, gm, gr = ft.group_norm_forward(xc, 3, wc, None)
    _, bm, bi = ft.batch_norm_forward(xc, wc, None, training=True)
    stats = torch.float64 if dtype == torch.float64 else torch.float32
    running = lambda: (torch.zeros(6, dtype=stats), torch.ones(6, dtype=stats))  # noqa: E731
    return [
        (ops.layer_norm_forward, (x, [8], w, b, 1e-5)),
        (ops.layer_norm_forward, (x, [6, 8], None, None, 1e-3)),
        (ops.rms_norm_forward, (x, [8], w, None)),
        (ops.layer_norm_backward, (torch.randn_like(x), x, [8], m, r, w, True, True)),
        (ops.layer_norm_backward, (torch.randn_like(x), x, [8], m, r, w, True, False)),
        (ops.layer_norm_backward, (torch.randn_like(x), x, [8], m, r, None, True, True)),
        (ops.rms_norm_backward, (torch.randn_like(x), x, [8], rr, w, True)),
        (ops.rms_norm_backward, (torch.randn_like(x), x, [8], rr, w, False)),
        (ops.group_norm_forward, (xc, 3, wc, wc, 1e-5, False)),
        (ops.group_norm_forward, (xc.permute(0, 2, 3, 1).contiguous(), 3, None, None, 1e-5, True)),
        (ops.group_norm_backward, (torch.randn_like(xc), xc, 3, gm, gr, wc, False, True)),
        (ops.group_norm_backward, (torch.randn_like(xc), xc, 3, gm, gr, wc, False, False)),
        (ops.instance_norm, (xc, *running(), wc, None, True, 0.1, 1e-5, False)),
        (ops.instance_norm, (xc, *running(), None, None, False, 0.1, 1e-5, False)),
        (ops.batch_norm_forward, (xc, wc, wc, *running(), True, 0.1, 1e-5, False)),
        (ops.batch_norm_forward, (xc, None, None, *running(), False, 0.1, 1e-5, False)),
        (ops.batch_norm_forward, (xc, None, None, None, None, True, 0.1, 1e-5, False)),
        (ops.batch_norm_backward, (torch.randn_like(xc), xc, wc, bm, bi, False, True)),
        (ops.batch_norm_backward, (torch.randn_like(xc), xc, wc, bm, bi, False, False)),
        (ops.batch_norm_backward, (torch.randn_like(xc), xc, None, bm, bi, False, True)),
    ]


@pytest.mark.parametrize("dtype,weight_dtype", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                                (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
                                                (torch.float16, torch.float32)], ids=str)
def test_operators_fake_shapes_and_schemas_match_the_kernels(dtype, weight_dtype):
    """opcheck runs each operator for real and on fake tensors and compares every output's shape,
    dtype and strides, checks the schema (mutations declared), and traces it as AOTAutograd does."""
    for op, args in _op_samples(dtype, weight_dtype):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_network_compiled_by_inductor_with_dynamic_shapes_matches_eager():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn, self.gn = ftt.BatchNorm2d(8), ftt.GroupNorm(2, 8)
            self.fc = torch.nn.Linear(8, 16)
            self.ln, self.rms = ftt.LayerNorm(16), ftt.RMSNorm(16)

        def forward(self, x):
            h = torch.relu(self.gn(self.bn(self.conv(x)))).mean((2, 3))
            return self.rms(torch.relu(self.ln(self.fc(h))))

    torch.manual_seed(0)
    eager = Net()
    traced = copy.deepcopy(eager)
    compiled = torch.compile(traced, fullgraph=True, dynamic=True)
    for n in (4, 7):
        x = torch.randn(n, 3, 6, 6)
        dy = torch.randn(n, 16)
        y_c = compiled(x)
        y_c.backward(dy)
        y_e = eager(x)
        y_e.backward(dy)
        # inductor compiles the convolution, linear and mean its own way: close, not the same bits.
        torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-5)
        for (n_, pe), (_, pc) in zip(eager.named_parameters(), traced.named_parameters()):
            torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=n_)
        for (n_, be), (_, bc) in zip(eager.named_buffers(), traced.named_buffers()):
            torch.testing.assert_close(bc, be, rtol=1e-5, atol=1e-6, msg=n_)


def test_batch_norm_with_cumulative_average_compiles_as_torch_s_does():
    """momentum=None reads the batch count off a tensor (1 / num_batches_tracked), which ends the
    graph there, in torch's BatchNorm as in ours; the results are still eager's."""
    eager, traced = _twins("BatchNorm2d", dict(num_features=6, momentum=None), torch.float32)
    compiled = torch.compile(traced, backend="aot_eager")
    for seed in range(3):
        x = module_input((4, 6, 5, 3), seed).detach().float()
        assert torch.equal(compiled(x), eager(x))
    _assert_same_buffers(eager, traced)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_torch_export_keeps_the_operators_and_the_results(training):
    """torch.export traces with the same operators: the exported program names them and gives
    the module's bits (and, in training, its running statistics)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), ftt.LayerNorm(16), torch.nn.ReLU(),
                                ftt.BatchNorm1d(16)).train(training)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 8)
    program = torch.export.export(model, (x,))
    called = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"fusedtrain.layer_norm_forward.default", "fusedtrain.batch_norm_forward.default"} <= called
    assert torch.equal(program.module()(x), twin(x))


@pytest.mark.gpu
@pytest.mark.parametrize("name,shape,kw,memory_format", [
    ("LayerNorm", (64, 9, 384), dict(normalized_shape=384), None),
    ("RMSNorm", (64, 9, 384), dict(normalized_shape=384), None),
    ("GroupNorm", (8, 32, 7, 9), dict(num_groups=8, num_channels=32), torch.channels_last),
    ("BatchNorm2d", (8, 32, 7, 9), dict(num_features=32), torch.channels_last),
    ("BatchNorm2d", (8, 32, 7, 9), dict(num_features=32), None),
], ids=lambda v: str(v))
def test_cuda_compiled_module_is_one_graph_and_the_same_bits_as_eager(name, shape, kw, memory_format):
    """The same on a GPU: the operators run on the current stream, in bfloat16 and float32."""
    from gpu_support import require_torch_cuda
    require_torch_cuda()
    for dtype in (torch.float32, torch.bfloat16):
        eager, traced = _twins(name, kw, dtype)
        _assert_compiled_steps_match(eager.cuda(), traced.cuda(), shape, memory_format, dtype,
                                     ((0, True), (1, False)), device="cuda")
        torch._dynamo.reset()


def test_compiled_under_autocast_is_the_same_bits_as_eager():
    """Under autocast the linears hand our modules bfloat16 with float32 weights, compiled as
    eager: the operators are not autocast ops, so they see the dtypes the eager calls see."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), ftt.LayerNorm(16), torch.nn.Linear(16, 16),
                                ftt.RMSNorm(16), ftt.BatchNorm1d(16))
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_c, y_e = compiled(x), twin(x)
    assert y_c.dtype == y_e.dtype == torch.bfloat16 and torch.equal(y_c, y_e)
    y_c.float().sum().backward()
    y_e.float().sum().backward()
    for (n, pc), (_, pe) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(pc.grad, pe.grad), n
