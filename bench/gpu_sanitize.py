"""Runs every fusedtrain CUDA kernel once on small inputs, for compute-sanitizer (memcheck,
racecheck, synccheck, initcheck).  Inputs are made on the host and copied to the device, so no
other library's kernels run and every report is about ours.  Exits nonzero if an output is not
finite.  Usage: compute-sanitizer --tool memcheck python bench/gpu_sanitize.py"""

from __future__ import annotations

import sys

import numpy as np


def main():
    import ml_dtypes
    import torch
    import fusedtrain as ft

    rng = np.random.default_rng(0)
    bf16 = np.dtype(ml_dtypes.bfloat16)
    def dev(a):
        a = np.ascontiguousarray(a)
        if a.dtype == bf16:
            return torch.from_numpy(a.view(np.int16)).cuda().view(torch.bfloat16)
        return torch.from_numpy(a).cuda()

    def host_rand(shape, dtype=np.float32, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32).astype(dtype)

    def rand(shape, dtype=np.float32, scale=1.0):
        return dev(host_rand(shape, dtype, scale))

    def host(t):
        # A copy, not a torch kernel: the sanitizers should see only fusedtrain's kernels.
        t = t.detach().cpu()
        return t.view(torch.int16).numpy().view(bf16) if t.dtype == torch.bfloat16 else t.numpy()

    def zeros(shape, dtype=np.float32):
        return dev(np.zeros(shape, dtype))

    outputs = []
    sizes = [1, 7, 4097, 70_001]          # scalar tails, vector bodies, several chunks

    # Every rule with float32, and Adam with every (param, grad) pair and master weights.
    def state(n, dtype=np.float32):
        return [zeros(k, dtype) for k in n]
    for pd, gd, master in [(np.float32, np.float32, False), (np.float64, np.float64, False),
                           (np.float32, np.float16, False), (np.float32, bf16, False),
                           (np.float16, np.float16, True), (np.float16, np.float32, False),
                           (bf16, bf16, True), (bf16, np.float32, False)]:
        sdt = np.float64 if pd is np.float64 else np.float32
        p_host = [host_rand(n, pd) for n in sizes]
        p = [dev(h) for h in p_host]
        g = [rand(n, gd) for n in sizes]
        kw = {"master_params": [dev(h.astype(np.float32)) for h in p_host]} if master else {}
        ft.adam_(p, g, state(sizes, sdt), state(sizes, sdt), step=1, lr=1e-3,
                 max_exp_avg_sqs=state(sizes, sdt), amsgrad=True, **kw)
        outputs += p
    p, g = [rand(n) for n in sizes], [rand(n) for n in sizes]
    ft.sgd_(p, g, lr=0.1, weight_decay=0.01)
    ft.momentum_(p, g, state(sizes), step=1, lr=0.1, nesterov=True)
    ft.adagrad_(p, g, state(sizes), step=1, lr=0.1)
    ft.rmsprop_(p, g, state(sizes), lr=0.01, momentum=0.9, momentum_buffers=state(sizes),
                centered=True, grad_avgs=state(sizes))
    ft.adadelta_(p, g, state(sizes), state(sizes))
    ft.adamw_(p, g, state(sizes), state(sizes), step=1)
    avg = state(sizes)
    ft.ema_(avg, p, decay=0.9)
    outputs += p + avg

    # Device scalars: capturable lr / step, AMP grad_scale / found_inf, fused clipping.
    m, v = state(sizes), state(sizes)
    ft.adam_(p, g, m, v, step=dev(np.array([2.0], np.float32)), lr=dev(np.array([1e-3], np.float32)),
             grad_scale=dev(np.array([4.0], np.float32)), found_inf=dev(np.zeros(1, np.float32)),
             max_grad_norm=0.5)
    # Views at odd offsets: the scalar path.
    base = rand(4099)
    ft.sgd_([base[1:]], [rand(4098)], lr=0.1)
    outputs += p + [base]

    # Norms over mixed dtypes, every norm kind; clipping's scale kernel.
    mixed = [rand(70_001), rand(7, np.float64), rand(4097, np.float16), rand(33, bf16)]
    norms = [ft.global_norm(mixed, t) for t in (1.0, 2.0, 3.0, float("inf"))]
    norms.append(ft.clip_grad_norm_(mixed, 0.1))
    outputs += mixed

    # Batch norm: planar (runs of 35 and 33 values: the masked planar walk, its last vector past the
    # array end) and rows layouts (narrow, odd and wide C), every dtype, train and eval.
    for dtype in (np.float32, bf16, np.float16, np.float64):
        sdt = np.float64 if dtype is np.float64 else np.float32
        for shape, cl in [((4, 8, 5, 7), False), ((6, 5, 7, 16), True), ((300, 3), False),
                          ((257, 100), False), ((2, 3, 33), False)]:
            C = shape[-1] if cl else shape[1]
            x = rand(shape, dtype, 2.0)
            w, b = rand(C, sdt), rand(C, sdt)
            rm, rv = zeros(C, sdt), dev(np.ones(C, sdt))
            y, sm, si = ft.batch_norm_forward(x, w, b, rm, rv, training=True, channels_last=cl)
            dx, dw, db = ft.batch_norm_backward(rand(shape, dtype), x, w, sm, si, channels_last=cl)
            ye, _, _ = ft.batch_norm_forward(x, w, b, rm, rv, training=False, channels_last=cl)
            mean, var, count = ft.batch_norm_stats(x, channels_last=cl)
            ft.update_running_stats_(rm, rv, mean, var, count, momentum=0.1)
            outputs += [y, sm, si, dx, dw, db, ye, mean, var, rm, rv]
    # Full-batch passes (L-BFGS, CG): every pass, float32 / float64 state, half params.
    for pd in (np.float32, np.float64, bf16):
        sdt = np.float64 if pd is np.float64 else np.float32
        st = torch.cuda.current_stream().cuda_stream
        p, g = [rand(n, pd) for n in sizes], [rand(n, pd) for n in sizes]
        gc, d, prev, x0 = state(sizes, sdt), state(sizes, sdt), state(sizes, sdt), state(sizes, sdt)
        hist = dev(host_rand((6, sum(sizes)), sdt))
        ft._C.fullbatch_grad_copy_(g, gc, None, st)
        ft._C.fullbatch_combine_(d, gc, gc, prev, False, 0.0, -1.0, 1.0, st)
        ft._C.fullbatch_history_(gc, prev, d, hist, 2, 0.5, st)
        ft._C.fullbatch_direction_(gc, d, hist, [0, 2, 1], [0.5, 0.25, 0.125], 0.9, st)
        ft._C.fullbatch_dots(gc, [d, prev, gc], st)
        ft._C.fullbatch_combine_(d, gc, gc, prev, True, 0.3, -1.0, 1.0, st)
        ft._C.fullbatch_grad_copy_(g, gc, d, st)
        for mode in (1, 0, 2, 3):
            ft._C.fullbatch_param_step_(p, d, x0, mode, 0.01, st)
        outputs += p + d + [hist]

    # Layer / RMS norm (rows in registers: 1-8 row slots, 1-8 vectors per thread, column sums in
    # registers and in shared memory or none (frozen weights), rows staged and not (Note [staged
    # row]); odd rows, a row of one) and group / instance norm (both layouts, instance running
    # statistics both ways), every dtype.
    for dtype in (np.float32, bf16, np.float16, np.float64):
        sdt = np.float64 if dtype is np.float64 else np.float32
        for staged in (True, False):
            before = ft._C._cuda_row_kernel_options(staged_rows=staged)
            for shape in [(33, 64), (40, 1024), (9, 2048), (6, 8192), (7, 4097), (5, 1)]:
                x, w, b = rand(shape, dtype, 2.0), rand(shape[-1], sdt), rand(shape[-1], sdt)
                dy = rand(shape, dtype)
                y, mean, rstd = ft.layer_norm_forward(x, shape[-1], w, b)
                outputs += [y, mean, rstd, *ft.layer_norm_backward(dy, x, shape[-1], mean, rstd, w)]
                outputs.append(ft.layer_norm_backward(dy, x, shape[-1], mean, rstd, w, weight_grads=False)[0])
                y, rstd = ft.rms_norm_forward(x, shape[-1], w)
                outputs += [y, rstd, *ft.rms_norm_backward(dy, x, shape[-1], rstd, w)]
            ft._C._cuda_row_kernel_options(**before)
        for shape, groups, cl in [((4, 8, 5, 7), 4, False), ((3, 5, 7, 16), 8, True), ((2, 6, 1), 3, False)]:
            C = shape[-1] if cl else shape[1]
            x, w, b = rand(shape, dtype, 2.0), rand(C, sdt), rand(C, sdt)
            y, mean, rstd = ft.group_norm_forward(x, groups, w, b, channels_last=cl)
            g = ft.group_norm_backward(rand(shape, dtype), x, groups, mean, rstd, w, channels_last=cl)
            rm, rv = zeros(C, sdt), dev(np.ones(C, sdt))
            outputs += [y, mean, rstd, *g, rm, rv]
            if int(np.prod(shape)) // (shape[0] * C) > 1:
                for use_input_stats in (True, False):
                    outputs += list(ft.instance_norm(x, rm, rv, w, b, use_input_stats=use_input_stats,
                                                     channels_last=cl))
    torch.cuda.synchronize()

    bad = [i for i, t in enumerate(outputs)
           if t is not None and not np.isfinite(host(t).astype(np.float64)).all()]
    bad_norms = [n for n in norms if not np.isfinite(n)]
    print(f"gpu_sanitize: {len(outputs)} outputs checked, kernels launched: "
          f"{ft._C.cuda_launch_count()}, non-finite outputs: {bad}, norms: {norms}")
    return 1 if bad or bad_norms else 0


if __name__ == "__main__":
    sys.exit(main())
