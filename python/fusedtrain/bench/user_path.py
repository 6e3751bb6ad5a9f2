"""Benchmark suite of the path PyTorch users take: ``ft.torch`` optimizers stepping the parameter
lists of real models against ``torch.optim`` (foreach, fused); also the import-cost timers that
bench/bench_torch_user_path.py reports per tensor.

The parameter lists are built from the models' layer shapes (no torchvision or transformers
needed): a ResNet-50's 161 tensors (25.6M values), a GPT-2 small's 148 (124M), and many tiny
tensors, where per-tensor costs dominate. Each step is timed as the user sees it: ``opt.step()``
with ``.grad`` set, Python overhead, tensor import and kernel together (on CUDA: up to the
launch, plus the synchronized total).
"""
from __future__ import annotations

from .cases import OURS, Case, Spec


def resnet50_shapes():
    """Parameter shapes of torchvision's resnet50 in model.parameters() order."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(width, inplanes if b == 0 else 4 * width, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, inplanes, 1, 1), (4 * width,), (4 * width,)]
        inplanes = 4 * width
    return shapes + [(1000, 2048), (1000,)]


def gpt2_small_shapes():
    """Parameter shapes of GPT-2 small (12 layers, d=768, vocab 50257, context 1024)."""
    d = 768
    shapes = [(50257, d), (1024, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def model_shapes(quick):
    """(name, shapes, channels_last) of the workloads; quick keeps a short smoke-test pair."""
    if quick:
        return [("ResNet-50 channels_last", resnet50_shapes(), True),
                ("1000 x 1K", [(1024,)] * 1000, False)]
    return [("ResNet-50", resnet50_shapes(), False),
            ("ResNet-50 channels_last", resnet50_shapes(), True),
            ("GPT-2 small", gpt2_small_shapes(), False),
            ("1000 x 1K", [(1024,)] * 1000, False),
            ("10000 x 64", [(64,)] * 10000, False)]


# name: (torch.optim class, hyperparameters, arrays touched per element)
OPTIMIZERS = {
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 0.01}, 7),
    "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}, 5),
}
TORCH_IMPLS = {"torch foreach": {"foreach": True}, "torch fused": {"fused": True}}


def make_params(torch, shapes, device="cpu", channels_last=False, seed=0):
    """Leaf parameters of these shapes with small grads set, as after a backward pass."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        fmt = torch.channels_last if channels_last and len(s) == 4 else torch.contiguous_format
        p = torch.nn.Parameter((torch.randn(s, device=device, generator=gen) * 0.02)
                               .contiguous(memory_format=fmt))
        p.grad = (torch.randn(s, device=device, generator=gen) * 1e-3).contiguous(memory_format=fmt)
        params.append(p)
    return params


def optimizer_steps(torch, name, params):
    """{implementation: opt.step} for ft.torch and each torch.optim implementation, all over
    the same params (each with its own state), so they take turns on the same memory."""
    import fusedtrain.torch as ftt
    cls, hyper, _ = OPTIMIZERS[name]
    out = {OURS: getattr(ftt, cls)(params, **hyper).step}
    for impl, kw in TORCH_IMPLS.items():
        try:
            out[impl] = getattr(torch.optim, cls)(params, **hyper, **kw).step
        except (RuntimeError, ValueError, TypeError):  # this torch lacks that implementation
            pass
    return out


def import_steps(torch, n, device="cpu"):
    """{route: import n float32 tensors once} (C exchange API, __dlpack__, NumPy arrays)."""
    from .. import _C
    tensors = [torch.nn.Parameter(torch.randn(64, device=device)) for _ in range(n)]

    def through_dlpack():
        _C._set_exchange_route(False)
        try:
            _C._import_views(tensors, True, False)
        finally:
            _C._set_exchange_route(True)

    out = {OURS: lambda: _C._import_views(tensors, True, False), "torch __dlpack__": through_dlpack}
    if device == "cpu":
        arrays = [t.detach().numpy() for t in tensors]
        out["numpy arrays"] = lambda: _C._import_views(arrays, True, False)
    return out


def specs(*, quick, device, torch=None, cupy=None):
    """The cases of this suite ('cpu' or 'cuda'); none without torch."""
    if torch is None:
        return []
    suite = f"{device} torch user path"
    out = []
    for wname, shapes, channels_last in model_shapes(quick):
        for name in OPTIMIZERS:
            out.append(Spec(suite, name, wname,
                            lambda name=name, wname=wname, shapes=shapes, cl=channels_last:
                            _build(torch, suite, name, wname, shapes, cl, device)))
    return out


def _build(torch, suite, name, wname, shapes, channels_last, device):
    params = make_params(torch, shapes, device, channels_last)
    numel = sum(p.numel() for p in params)
    sync = torch.cuda.synchronize if device == "cuda" else None
    return Case(suite, name, wname, "float32", OPTIMIZERS[name][2] * 4 * numel,
                optimizer_steps(torch, name, params), sync,
                {"tensors": len(params), "numel": numel})
