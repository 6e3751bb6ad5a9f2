"""Running a fusedtrain torch module and its torch.nn namesake side by side (float64, or one step
in the modules' own dtype): outputs, input and parameter grads, state_dict."""
import torch

# The layer, RMS, group and instance norm modules under test: (torch.nn name, input shape, kwargs).
ROW_MODULES = [
    ("LayerNorm", (8, 5, 12), dict(normalized_shape=12)),
    ("LayerNorm", (4, 3, 6, 7), dict(normalized_shape=(6, 7), eps=1e-3)),
    ("LayerNorm", (6, 9), dict(normalized_shape=9, elementwise_affine=False)),
    ("LayerNorm", (6, 9), dict(normalized_shape=9, bias=False)),
    ("LayerNorm", (3, 1), dict(normalized_shape=1)),
    ("RMSNorm", (8, 5, 12), dict(normalized_shape=12)),
    ("RMSNorm", (4, 6, 7), dict(normalized_shape=[6, 7], eps=1e-4)),
    ("RMSNorm", (6, 9), dict(normalized_shape=9, elementwise_affine=False)),
    ("GroupNorm", (4, 6, 5, 3), dict(num_groups=3, num_channels=6)),
    ("GroupNorm", (1, 8, 7), dict(num_groups=8, num_channels=8, eps=1e-3)),
    ("GroupNorm", (5, 4), dict(num_groups=2, num_channels=4, affine=False)),
    ("InstanceNorm1d", (4, 3, 9), dict(num_features=3)),
    ("InstanceNorm1d", (3, 9), dict(num_features=3, affine=True)),  # unbatched
    ("InstanceNorm2d", (2, 4, 5, 6), dict(num_features=4, affine=True, track_running_stats=True)),
    ("InstanceNorm2d", (2, 4, 5, 6), dict(num_features=4, track_running_stats=True, momentum=None)),
    ("InstanceNorm3d", (2, 3, 3, 4, 5), dict(num_features=3, affine=True, track_running_stats=True,
                                             momentum=0.3)),
]


def module_input(shape, seed, memory_format=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    return x.requires_grad_(True)


def module_step(module, x, dy):
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = module(x)
    y.backward(dy)
    grads = [x.grad] + [p.grad for p in module.parameters()]
    return y, grads


def compare_one_step(ref, ours, x, y_tol, grad_tol):
    """One forward and backward of sum(y**2) through each module on its own copy of x (any dtype,
    any device): y and x's grad of the same dtypes, and within (rtol, atol) y_tol and grad_tol
    compared in float32. The parameter grads are left for the caller."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), ours(x2)
    assert y2.dtype == y1.dtype
    torch.testing.assert_close(y2.float(), y1.float(), rtol=y_tol[0], atol=y_tol[1])
    y1.float().square().sum().backward()
    y2.float().square().sum().backward()
    assert x2.grad.dtype == x1.grad.dtype
    torch.testing.assert_close(x2.grad.float(), x1.grad.float(), rtol=grad_tol[0], atol=grad_tol[1])


def compare_modules(ref, ours, shape, seeds, memory_format=None):
    for seed in seeds:
        x = module_input(shape, seed, memory_format)
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 100),
                         dtype=torch.float64)
        y_ref, g_ref = module_step(ref, x, dy)
        y_ours, g_ours = module_step(ours, x, dy)
        torch.testing.assert_close(y_ours, y_ref, rtol=1e-10, atol=1e-10)
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        for p in list(ref.parameters()) + list(ours.parameters()):
            p.grad = None
    sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
    assert list(sd_ours) == list(sd_ref)
    for k in sd_ref:
        torch.testing.assert_close(sd_ours[k], sd_ref[k], rtol=1e-12, atol=1e-12)


def compare_without_graph(ref, ours, inputs):
    """Forward of each (x, training) of `inputs` through both modules, parameters frozen, under
    no_grad and with grad on but nothing requiring it (where ours skips autograd.Function): ours
    gives no grad_fn and torch's outputs, and the buffers end as torch's."""
    for p in list(ref.parameters()) + list(ours.parameters()):
        p.requires_grad_(False)
    for x, training in inputs:
        ref.train(training), ours.train(training)
        for grad_mode in (False, True):
            with torch.set_grad_enabled(grad_mode):
                y_ref, y_ours = ref(x), ours(x)
            assert y_ours.grad_fn is None and not y_ours.requires_grad
            torch.testing.assert_close(y_ours, y_ref, rtol=1e-10, atol=1e-10)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-12, atol=1e-12)


def compare_frozen(ref, ours, shape, seeds):
    """Parameters frozen (fine-tuning): x's grad through both modules agrees, train and eval, and
    no parameter gets a grad (ours skips the weight gradients: weight_grads=False)."""
    for p in list(ref.parameters()) + list(ours.parameters()):
        p.requires_grad_(False)
    for training in (True, False):
        ref.train(training), ours.train(training)
        for seed in seeds:
            x = module_input(shape, seed)
            dy = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 100),
                             dtype=torch.float64)
            (y_ref, (g_ref, *_)), (y_ours, (g_ours, *_)) = module_step(ref, x, dy), module_step(ours, x, dy)
            torch.testing.assert_close(y_ours, y_ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-9)
    assert all(p.grad is None for p in ours.parameters())


def compare_double_backward(ref, ours, x):
    """Note [double backward]: a gradient penalty through each module, ``|d(sum(y * c))/dx|^2``
    (the gradient itself differentiated, create_graph=True): the first gradients with a graph,
    agreeing with the plain backward's; the penalty's grads of x and the parameters; the
    buffers (the recompute leaves the running statistics alone) all as torch.nn's."""
    shape = x.shape
    c = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype).to(x.device)
    results = []
    for m in (ref, ours):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        inputs = [xi, *m.parameters()]
        plain = torch.autograd.grad((m(xi) * c).sum(), inputs, allow_unused=True)
        first = torch.autograd.grad((m(xi) * c).sum(), inputs, create_graph=True,
                                    allow_unused=True)
        for a, b in zip(first, plain):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert first[0] is None or first[0].requires_grad
        penalty = sum((g ** 2).sum() for g in first if g is not None)
        for p in m.parameters():
            p.grad = None
        penalty.backward()
        results.append([xi.grad] + [p.grad for p in m.parameters()] + list(m.buffers()))
    for a, b in zip(*results):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
