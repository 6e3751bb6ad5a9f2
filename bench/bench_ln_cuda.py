"""Times fusedtrain layer, RMS and group norm on CUDA against torch (same GPU, same run): layer
and RMS norm forward+backward at hidden sizes 1024-8192 (16K tokens), group norm at
(32, 256, 56, 56) G=32 NCHW and NHWC; fp32 and bf16. torch runs torch.nn.functional and its
autograd backward; ours the functional API. Layer/RMS rows also time the backward with the affine
parameters frozen ("bwd frozen": weight_grads=False against torch's autograd asked for dx alone),
layer rows without a bias ("bwd no dbias": bias_grads=False against torch's layer norm without
one), and ours with the row kernels' L2 prefetch, shared-memory column sums, staged backward rows
and dependent launch each turned off; channels-last group norm with its elementwise passes in
index order, launched as usual, and in bf16 with its rows walk prefetch off ("switches", Note
[row kernel switches]), so one run tells whether each pays."""

from __future__ import annotations

import sys

import common
import norm_bench_cuda
from bench_optim_cuda import cuda_timer
from norm_bench_cuda import LAUNCH_SWITCHES, ORDER_SWITCHES, ROW_SWITCHES, ROWS_WALK_SWITCHES, switch_times

HIDDEN = (1024, 2048, 4096, 8192)


def workloads(quick):
    tokens = 2048 if quick else 16384
    out = [(f"{kind} {tokens}x{h}", kind, (tokens, h), False) for kind in ("layer", "rms") for h in HIDDEN]
    n = 8 if quick else 32
    out += [(f"group {n}x256x56x56 g32 {'nhwc' if cl else 'nchw'}", "group", (n, 256, 56, 56), cl)
            for cl in (False, True)]
    return out


def calls(torch, ft, kind, shape, channels_last, dtype):
    """(ours: fwd, bwd, both), (torch: fwd, bwd, both) on the same data, and the backward variants
    {name: (ours, torch)}: for layer/RMS norm with the affine parameters frozen ("bwd frozen":
    weight_grads=False; torch's autograd asked for dx alone), for layer norm without a bias ("bwd
    no dbias": bias_grads=False; torch's layer norm without one)."""
    F = torch.nn.functional
    x = torch.randn(shape, device=norm_bench_cuda.DEVICE, dtype=dtype) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    P = shape[-1] if kind != "group" else shape[1]
    w = torch.rand(P, device=norm_bench_cuda.DEVICE) + 0.5
    b = torch.randn(P, device=norm_bench_cuda.DEVICE)
    if dtype != torch.float32:  # torch wants the parameters in the input's dtype
        w, b = w.to(dtype), b.to(dtype)
    H = shape[-1]
    if kind == "group":
        xo, dyo = (t.permute(0, 2, 3, 1) for t in (x, dy)) if channels_last else (x, dy)
        fwd = lambda: ft.group_norm_forward(xo, 32, w, b, channels_last=channels_last)  # noqa: E731
        bwd_of = lambda s: ft.group_norm_backward(dyo, xo, 32, s[1], s[2], w, channels_last=channels_last)  # noqa: E731
        t_fwd = lambda xt, wt, bt: F.group_norm(xt, 32, wt, bt)  # noqa: E731
    elif kind == "layer":
        fwd = lambda: ft.layer_norm_forward(x, H, w, b)  # noqa: E731
        bwd_of = lambda s, grads=True, bias=True: ft.layer_norm_backward(  # noqa: E731
            dy, x, H, s[1], s[2], w, weight_grads=grads, bias_grads=bias)
        t_fwd = lambda xt, wt, bt: F.layer_norm(xt, (H,), wt, bt)  # noqa: E731
    else:
        fwd = lambda: ft.rms_norm_forward(x, H, w)  # noqa: E731
        bwd_of = lambda s, grads=True: ft.rms_norm_backward(dy, x, H, s[1], w, weight_grads=grads)  # noqa: E731
        t_fwd = lambda xt, wt, bt: F.rms_norm(xt, (H,), wt)  # noqa: E731
    saved = fwd()
    ours = (fwd, lambda: bwd_of(saved), lambda: bwd_of(fwd()))
    xt, wt, bt = (t.detach().clone(memory_format=torch.preserve_format).requires_grad_(True) for t in (x, w, b))
    inputs = (xt, wt) if kind == "rms" else (xt, wt, bt)
    t_saved = t_fwd(xt, wt, bt)
    theirs = (lambda: t_fwd(xt, wt, bt),
              lambda: torch.autograd.grad(t_saved, inputs, dy, retain_graph=True),
              lambda: torch.autograd.grad(t_fwd(xt, wt, bt), inputs, dy))
    variants = {}
    if kind != "group":
        x_only = x.detach().clone().requires_grad_(True)
        f_saved = t_fwd(x_only, w, b)
        variants["bwd frozen"] = (lambda: bwd_of(saved, False),
                                  lambda: torch.autograd.grad(f_saved, (x_only,), dy, retain_graph=True))
    if kind == "layer":
        nb_saved = t_fwd(xt, wt, None)
        variants["bwd no dbias"] = (lambda: bwd_of(saved, True, False),
                                    lambda: torch.autograd.grad(nb_saved, (xt, wt), dy, retain_graph=True))
    return ours, theirs, variants, x.numel() * x.element_size()


def measure(session, workload, dtype):
    torch, ft, steps, flush, copy_bw = session
    label, kind, shape, cl = workload
    ours, theirs, variants, nbytes = calls(torch, ft, kind, shape, cl, dtype)
    row = {"workload": label, "kind": kind, "shape": list(shape), "channels_last": cl,
           "dtype": str(dtype).replace("torch.", "")}
    # Roofline bytes: every tensor read or written once (x, y: 2; dy, x, dx: 3).
    for name, f_ft, f_t, arrays in zip(("fwd", "bwd", "fwd+bwd"), ours, theirs, (2, 3, 5)):
        g_ft, h_ft = cuda_timer(torch, f_ft, steps, flush)
        g_t, h_t = cuda_timer(torch, f_t, steps, flush)
        row[name] = {"ft_ms": g_ft * 1e3, "torch_ms": g_t * 1e3, "speedup": g_t / g_ft,
                     "ft_host_ms": h_ft * 1e3, "torch_host_ms": h_t * 1e3,
                     "pct_copy_bw": 100.0 * arrays * nbytes / g_ft / copy_bw}
    for name, (f_ft, f_t) in variants.items():
        g_ft, _ = cuda_timer(torch, f_ft, steps, flush)
        g_t, _ = cuda_timer(torch, f_t, steps, flush)
        row[name] = {"ft_ms": g_ft * 1e3, "torch_ms": g_t * 1e3, "speedup": g_t / g_ft,
                     "pct_copy_bw": 100.0 * 3 * nbytes / g_ft / copy_bw}
    if kind != "group":
        row["switches"] = switch_times(torch, ft, ours[2], steps, flush, ROW_SWITCHES + LAUNCH_SWITCHES)
    elif cl:
        rows_walk = ROWS_WALK_SWITCHES if dtype == torch.bfloat16 else ()
        row["switches"] = switch_times(torch, ft, ours[2], steps, flush, ORDER_SWITCHES + LAUNCH_SWITCHES + rows_walk)
    common.log(f"{label:>32} {row['dtype']:>8}: fwd+bwd x{row['fwd+bwd']['speedup']:.2f}")
    return row


def table(rows):
    headers = ["workload", "dtype", "fwd x", "bwd x", "fwd+bwd ms", "torch ms", "x torch", "% copy bw"]
    cells = [[r["workload"], r["dtype"], f"{r['fwd']['speedup']:.2f}", f"{r['bwd']['speedup']:.2f}",
              f"{r['fwd+bwd']['ft_ms']:.3f}", f"{r['fwd+bwd']['torch_ms']:.3f}",
              f"{r['fwd+bwd']['speedup']:.2f}", f"{r['fwd+bwd']['pct_copy_bw']:.0f}"] for r in rows]
    return headers, cells, [False] * 2 + [True] * 6


def main(argv=None):
    return norm_bench_cuda.main(__doc__, argv, "ln", workloads, measure, table)


if __name__ == "__main__":
    sys.exit(main())
