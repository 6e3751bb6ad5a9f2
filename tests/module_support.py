"""Running a fusedtrain torch module and its torch.nn namesake side by side (float64): outputs,
input and parameter grads, state_dict."""
import torch


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
