"""Shared by the CPU and CUDA tests: fused clipping under AMP against torch's recipe (unscale,
clip, step), and arrays whose norm must come out NaN."""

import numpy as np

import fusedtrain as ft
from precisions import dtype_named

SCALE = 65536.0      # a power of two: unscaling is exact, so both sides see the same grads
MAX_NORM = 0.5
SHAPES = [(33,), (4097,), (1,)]


def run_amp_clip_case(torch, device):
    """ft.adam_(grad_scale=s, max_grad_norm=c) over 5 steps vs GradScaler's order: grads / s,
    clip_grad_norm_(c), torch.optim.Adam.step()."""
    rng = np.random.default_rng(11)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours = [torch.tensor(a, device=device) for a in init]
    m = [torch.zeros_like(p) for p in ours]
    v = [torch.zeros_like(p) for p in ours]
    theirs = [torch.tensor(a, device=device, requires_grad=True) for a in init]
    opt = torch.optim.Adam(theirs, lr=0.01, foreach=False)
    for k in range(1, 6):
        grads = [torch.tensor(rng.standard_normal(s).astype(np.float32) * 3, device=device)
                 for s in SHAPES]
        scaled = [g * SCALE for g in grads]
        ft.adam_(ours, scaled, m, v, step=k, lr=0.01, grad_scale=SCALE, max_grad_norm=MAX_NORM)
        for p, g in zip(theirs, scaled):
            p.grad = g / SCALE
        torch.nn.utils.clip_grad_norm_(theirs, MAX_NORM, foreach=False)
        opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def nan_norm_arrays():
    """Lists holding one NaN: in a SIMD body (unrolled or a block's last single vectors), in a
    scalar tail, in a later array; every dtype."""
    out = []
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        dt = dtype_named(dtype)
        for n, at in ((4096, 1000), (4144, 4140), (4099, 4098), (70_000, 65_537), (3, 0)):
            a = np.linspace(-2, 2, n).astype(np.float32)
            a[at] = np.nan
            out.append([a.astype(dt)])
        first = np.ones(100, np.float32).astype(dt)
        second = np.full(37, 5.0, np.float32)
        second[36] = np.nan
        out.append([first, second.astype(dt)])
    return out
