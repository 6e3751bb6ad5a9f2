"""One call of each kernel the GPU targets time, for Nsight Compute (ncu) to read the hardware
counters of: an AdamW step on 64M params; batch norm forward + backward on the shapes that
stress each path (planar with 16-byte vectors, planar with an odd inner size, rows with a narrow
and a wide C) and on the shortest of the last run (7x7 channels-last bfloat16, BatchNorm1d
8192x1024 bfloat16, and 256x512x7x7 float32 NCHW, whose forward alone was 0.75x torch); layer
and RMS norm forward + backward at hidden 1024, 4096, 8192 (bfloat16: layer norm's backward
unstaged, RMS norm's staged with one column sum) and 8192 float32; group norm channels-last,
bfloat16.  Usage: ncu --clock-control none -k regex:... python bench/gpu_ncu_targets.py
[--only bn,ln]"""

from __future__ import annotations

import argparse
import sys


def optimizer(torch, ft):
    n = 64 << 20
    p = torch.randn(n, device="cuda")
    g = torch.randn(n, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    ft.adamw_([p], [g], [m], [v], step=1)


def batch_norm(torch, ft):
    bf16 = torch.bfloat16
    for shape, layout, dtype in [((256, 64, 112, 112), "nchw", torch.float32),
                                 ((256, 512, 7, 7), "nchw", torch.float32),
                                 ((256, 2048, 7, 7), "nchw", bf16),
                                 ((256, 56, 56, 32), "nhwc", torch.float32),
                                 ((256, 7, 7, 512), "nhwc", bf16),
                                 ((8192, 1024), "2d", torch.float32),
                                 ((8192, 1024), "2d", bf16)]:
        x = torch.randn(shape, device="cuda", dtype=dtype)
        C = shape[-1] if layout != "nchw" else shape[1]
        w, b = torch.ones(C, device="cuda"), torch.zeros(C, device="cuda")
        rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")
        cl = layout == "nhwc"
        y, sm, si = ft.batch_norm_forward(x, w, b, rm, rv, training=True, channels_last=cl)
        ft.batch_norm_backward(torch.randn_like(x), x, w, sm, si, channels_last=cl)


def layer_norms(torch, ft):
    for hidden, dtype in [(1024, torch.bfloat16), (4096, torch.bfloat16), (8192, torch.bfloat16),
                          (8192, torch.float32)]:
        x = torch.randn(16384, hidden, device="cuda", dtype=dtype)
        dy = torch.randn_like(x)
        w = torch.rand(hidden, device="cuda", dtype=dtype) + 0.5
        b = torch.randn(hidden, device="cuda", dtype=dtype)
        _, mean, rstd = ft.layer_norm_forward(x, hidden, w, b)
        ft.layer_norm_backward(dy, x, hidden, mean, rstd, w)
        _, rstd = ft.rms_norm_forward(x, hidden, w)
        ft.rms_norm_backward(dy, x, hidden, rstd, w)
    x = torch.randn(32, 56, 56, 256, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(256, device="cuda", dtype=x.dtype) + 0.5
    b = torch.randn(256, device="cuda", dtype=x.dtype)
    _, mean, rstd = ft.group_norm_forward(x, 32, w, b, channels_last=True)
    ft.group_norm_backward(torch.randn_like(x), x, 32, mean, rstd, w, channels_last=True)


PARTS = {"optim": optimizer, "bn": batch_norm, "ln": layer_norms}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated: optim, bn, ln")
    args = ap.parse_args(argv)
    import torch
    import fusedtrain as ft
    for name in args.only.split(","):
        PARTS[name](torch, ft)
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
