"""Benchmark suite of batch norm forward, backward and both: fusedtrain vs PyTorch's kernels or the NumPy reference."""
from __future__ import annotations

import numpy as np

from .cases import OURS, Case, Spec

EPS, MOMENTUM = 1e-5, 0.1
# Minimum bytes per element in units of the element size: forward reads x and writes y,
# backward reads dy and x and writes dx.
ARRAYS = {"forward": 2, "backward": 3, "fwd+bwd": 5}


def _workloads(quick, device):
    n = 16 if quick else 64
    if device == "cuda":
        n = 32 if quick else 128
    return [(f"{n}x256x28x28 nchw", (n, 256, 28, 28), False),
            (f"{n}x28x28x256 nhwc", (n, 28, 28, 256), True),
            ("512x1024", (512, 1024), False)]


def specs(*, quick, device, torch=None, cupy=None):
    import fusedtrain as ft
    suite = f"{device} batch norm"
    out = []
    for wname, shape, cl in _workloads(quick, device):
        for kind in ARRAYS:
            out.append(Spec(suite, kind, wname,
                            lambda kind=kind, wname=wname, shape=shape, cl=cl:
                            _build(ft, kind, wname, shape, cl, device, torch, cupy, suite)))
    return out


def data(shape, channels_last, device, torch=None, cupy=None):
    """(x, dy, weight, bias, running_mean, running_var) on the device, and its sync (or None)."""
    rng = np.random.default_rng(0)
    C = shape[-1] if channels_last else shape[1]
    arrays = [rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5,
              rng.standard_normal(shape, dtype=np.float32),
              rng.uniform(0.5, 1.5, C).astype(np.float32), rng.standard_normal(C).astype(np.float32),
              np.zeros(C, np.float32), np.ones(C, np.float32)]
    if device == "cuda":
        if torch is not None:
            return [torch.from_numpy(a).cuda() for a in arrays], torch.cuda.synchronize
        return [cupy.asarray(a) for a in arrays], cupy.cuda.get_current_stream().synchronize
    return arrays, None


def calls(mod, x, dy, w, b, rm, rv, cl):
    """forward, backward, fwd+bwd of `mod` (fusedtrain or its NumPy reference) on the arrays."""
    def fwd():
        return mod.batch_norm_forward(x, w, b, rm, rv, momentum=MOMENTUM, eps=EPS, channels_last=cl)
    _, mean, invstd = fwd()

    def bwd():
        return mod.batch_norm_backward(dy, x, w, mean, invstd, channels_last=cl)

    def both():
        _, m, s = fwd()
        return mod.batch_norm_backward(dy, x, w, m, s, channels_last=cl)
    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def torch_calls(torch, x, dy, w, b, rm, rv, cl):
    """ATen's own kernels on the same memory; a channels-last tensor for the NHWC layout."""
    if not torch.is_tensor(x):
        x, dy, w, b = (torch.from_numpy(a) for a in (x, dy, w, b))
        rm, rv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    else:
        rm, rv = rm.clone(), rv.clone()
    if cl:
        x, dy = (t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)) for t in (x, dy))
    aten = torch.ops.aten
    _, mean, invstd = aten.native_batch_norm(x, w, b, rm, rv, True, MOMENTUM, EPS)

    def fwd():
        return aten.native_batch_norm(x, w, b, rm, rv, True, MOMENTUM, EPS)

    def bwd():
        return aten.native_batch_norm_backward(dy, x, w, rm, rv, mean, invstd, True, EPS,
                                               [True, True, True])

    def both():
        _, m, s = fwd()
        return aten.native_batch_norm_backward(dy, x, w, rm, rv, m, s, True, EPS,
                                               [True, True, True])
    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def _build(ft, kind, wname, shape, cl, device, torch, cupy, suite):
    (x, dy, w, b, rm, rv), sync = data(shape, cl, device, torch, cupy)
    fns = {OURS: calls(ft, x, dy, w, b, rm, rv, cl)[kind]}
    if torch is not None:
        fns["torch"] = torch_calls(torch, x, dy, w, b, rm, rv, cl)[kind]
    elif device == "cpu":
        from .. import reference
        fns["numpy reference"] = calls(reference, x, dy, w, b, rm.copy(), rv.copy(), cl)[kind]
    numel = int(np.prod(shape))
    return Case(suite, kind, wname, "float32", ARRAYS[kind] * 4 * numel, fns, sync,
                {"shape": list(shape), "channels_last": cl})
