"""One call of each kernel the GPU targets time, for Nsight Compute (ncu) to read the hardware
counters of: an AdamW step on 64M params, and batch norm forward + backward on the shapes that
stress each path (planar with 16-byte vectors, planar with an odd inner size, rows with a narrow
and a wide C).  Usage: ncu --clock-control none -k regex:... python bench/gpu_ncu_targets.py"""

from __future__ import annotations

import sys


def main():
    import torch
    import fusedtrain as ft

    n = 64 << 20
    p = torch.randn(n, device="cuda")
    g = torch.randn(n, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    ft.adamw_([p], [g], [m], [v], step=1)
    del p, g, m, v
    for shape, layout, dtype in [((256, 64, 112, 112), "nchw", torch.float32),
                                 ((256, 2048, 7, 7), "nchw", torch.bfloat16),
                                 ((256, 56, 56, 32), "nhwc", torch.float32),
                                 ((8192, 1024), "2d", torch.float32)]:
        x = torch.randn(shape, device="cuda", dtype=dtype)
        C = shape[-1] if layout != "nchw" else shape[1]
        w, b = torch.ones(C, device="cuda"), torch.zeros(C, device="cuda")
        rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")
        cl = layout == "nhwc"
        y, sm, si = ft.batch_norm_forward(x, w, b, rm, rv, training=True, channels_last=cl)
        ft.batch_norm_backward(torch.randn_like(x), x, w, sm, si, channels_last=cl)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
