"""Times fusedtrain batch norm on CUDA against torch (same GPU, same run): the ResNet-50 BN
shapes at batch 256, fp32 and bf16, NCHW and NHWC, plus BatchNorm1d with a large batch. Every row
also times ours with the elementwise passes in index order and with its kernels launched as
usual instead of as dependents, and the bf16 channels-last and 2-d rows with the rows walk
prefetch off ("switches", Note [row kernel switches])."""

from __future__ import annotations

import math
import sys

import common
import norm_bench_cuda
from bench_optim_cuda import cuda_timer
from norm_bench_cuda import LAUNCH_SWITCHES, ORDER_SWITCHES, ROWS_WALK_SWITCHES, switch_times

RESNET50 = [(64, 112), (64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14),
            (512, 7), (2048, 7)]


def workloads(quick):
    n = 32 if quick else 256
    out = [(f"{n}x{c}x{hw}x{hw}", (n, c, hw, hw), layout)
           for c, hw in RESNET50 for layout in ("nchw", "nhwc")]
    out += [(f"{n}x32x56x56", (n, 32, 56, 56), "nhwc"), (f"{n}x16x112x112", (n, 16, 112, 112), "nchw"),
            ("bn1d 262144x256", (262144 // (8 if quick else 1), 256), "2d"),
            ("bn1d 8192x1024", (8192, 1024), "2d")]
    return out


def measure(session, workload, dtype):
    torch, ft, steps, flush, copy_bw = session
    label, shape, layout = workload
    C = shape[1]
    if layout == "nhwc":
        x_t = torch.randn(shape, device=norm_bench_cuda.DEVICE, dtype=dtype).to(memory_format=torch.channels_last)
        x_ft = x_t.permute(0, 2, 3, 1)          # the same memory as (N, H, W, C)
    else:
        x_t = torch.randn(shape, device=norm_bench_cuda.DEVICE, dtype=dtype)
        x_ft = x_t
    w = torch.ones(C, device=norm_bench_cuda.DEVICE)
    b = torch.zeros(C, device=norm_bench_cuda.DEVICE)
    rm, rv = torch.zeros(C, device=norm_bench_cuda.DEVICE), torch.ones(C, device=norm_bench_cuda.DEVICE)
    cl = layout == "nhwc"
    saved = {}

    def ft_fwd():
        saved["out"] = ft.batch_norm_forward(x_ft, w, b, rm, rv, training=True, channels_last=cl)
    ft_fwd()
    dy_ft = torch.randn_like(saved["out"][0])

    def ft_bwd():
        y, sm, si = saved["out"]
        ft.batch_norm_backward(dy_ft, x_ft, w, sm, si, channels_last=cl)

    def ft_both():
        ft_fwd()
        ft_bwd()
    xt = x_t.detach().requires_grad_(True)
    wt, bt = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    dy_t = torch.randn_like(x_t)

    def t_fwd():
        saved["t"] = torch.nn.functional.batch_norm(xt, rm, rv, wt, bt, training=True)

    def t_both():
        t_fwd()
        saved["t"].backward(dy_t)
    t_fwd()

    def t_bwd():
        saved["t"].backward(dy_t, retain_graph=True)
    numel = math.prod(shape)
    esize = x_t.element_size()
    row = {"shape": label, "layout": layout, "dtype": str(dtype).replace("torch.", ""),
           "numel": numel}
    # Roofline bytes: every tensor read or written once (x, y: 2; dy, x, dx: 3).  A
    # two-pass kernel (statistics, then the elementwise pass) must read x twice in the
    # forward and dy, x twice in the backward unless they stay in cache: 3 and 5.
    for kind, f_ft, f_t, nbytes, two_pass in (
            ("fwd", ft_fwd, t_fwd, 2 * numel * esize, 3 * numel * esize),
            ("bwd", ft_bwd, t_bwd, 3 * numel * esize, 5 * numel * esize),
            ("fwd+bwd", ft_both, t_both, 5 * numel * esize, 8 * numel * esize)):
        g_ft, _ = cuda_timer(torch, f_ft, steps, flush)
        g_t, _ = cuda_timer(torch, f_t, steps, flush)
        row[kind] = {"ft_ms": g_ft * 1e3, "torch_ms": g_t * 1e3, "speedup": g_t / g_ft,
                     "pct_roofline": 100 * nbytes / g_ft / copy_bw,
                     "pct_two_pass_bw": 100 * two_pass / g_ft / copy_bw}
    rows_walk = ROWS_WALK_SWITCHES if layout != "nchw" and dtype == torch.bfloat16 else ()
    row["switches"] = switch_times(torch, ft, ft_both, steps, flush, ORDER_SWITCHES + LAUNCH_SWITCHES + rows_walk)
    common.log(f"{label:>22} {layout} {row['dtype']:>8}: fwd+bwd x{row['fwd+bwd']['speedup']:.2f}")
    return row


def table(rows):
    headers = ["shape", "layout", "dtype", "fwd x", "bwd x", "fwd+bwd ms", "torch ms", "x torch",
               "% roofline", "% 2-pass bw"]
    cells = [[r["shape"], r["layout"], r["dtype"], f"{r['fwd']['speedup']:.2f}", f"{r['bwd']['speedup']:.2f}",
              f"{r['fwd+bwd']['ft_ms']:.3f}", f"{r['fwd+bwd']['torch_ms']:.3f}",
              f"{r['fwd+bwd']['speedup']:.2f}", f"{r['fwd+bwd']['pct_roofline']:.0f}",
              f"{r['fwd+bwd']['pct_two_pass_bw']:.0f}"] for r in rows]
    return headers, cells, [False] * 3 + [True] * 7


def main(argv=None):
    return norm_bench_cuda.main(__doc__, argv, "bn", workloads, measure, table)


if __name__ == "__main__":
    sys.exit(main())
