"""Times the fusedtrain CUDA rules against torch.optim fused and foreach on the same GPU, same run."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

import common
from optim_rules import RULES_BY_NAME, make_ft_step, make_torch_optimizer

# (name, label, tensor sizes, rules) — the workloads; many-tensor lists are host-bound, so they
# time the rules the targets name (the others only repeat the import cost).
MANY_TENSOR_RULES = ("adamw", "momentum")
# How samples start cold (gpu_session), as the result JSON records it.
L2_FLUSH = "read 256 MB before each sample (clean L2)"


def workloads(quick):
    big = (16 if quick else 64) << 20
    rng = np.random.default_rng(0)
    # 10,000 tensors of 1 to 13,000 elements: about 65M params, most tensors small.
    mixed = [int(x) for x in rng.integers(1, 13_001, size=10_000)]
    if quick:
        mixed = mixed[:2000]
    return [("big1", f"{big >> 20}M x 1", [big], None),
            ("big256", f"{big >> 20}M in 256", [big // 256] * 256, MANY_TENSOR_RULES),
            ("mixed10k", f"{len(mixed)} x 1-13K", mixed, MANY_TENSOR_RULES)]


def cuda_timer(torch, fn, steps, flush):
    """Median GPU time and median host time per call.

    Host time: the call's wall time, from an idle device.  GPU time: CUDA events around the call
    while the stream is held busy by a spin longer than the call's host time, so the start event
    fires only once every launch of the call is queued: what the host spends issuing the call
    (Python, argument import) is not counted as device time, gaps between the call's launches on
    the device are.
    """
    host = []
    for _ in range(max(3, steps // 4)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    spin_cycles = int((2 * max(host) + 2e-4) * 2.0e9)    # clocks run at up to ~2 GHz
    if max(host) > 0.02:
        steps = max(5, min(steps, int(1.0 / max(host))))  # slow calls: about a second of samples
    gpu = []
    for _ in range(steps):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(spin_cycles)
        start.record()
        fn()
        end.record()
        end.synchronize()
        gpu.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(gpu), statistics.median(host)


def copy_bandwidth(torch, nbytes=1 << 30):
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = max(best, 2 * nbytes / (start.elapsed_time(end) * 1e-3))
    return best


def gpu_session(args):
    """(torch, fusedtrain, steps, L2 flush, copy bandwidth) on a GPU machine, else None."""
    import torch
    import fusedtrain as ft
    if not torch.cuda.is_available() or not ft.info()["cuda_devices"]:
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return None
    steps = 10 if args.quick else args.steps
    # Evicts the 50 MB L2 between samples by reading 256 MB: L2 is then full of clean lines, so
    # the timed call pays no write-back of the flush's data (a flush that writes, as zero_()
    # does, leaves ~50 MB of dirty lines that the call's own traffic must first write to DRAM:
    # on a 4 TB/s GPU about 12 us, charged to every sample, ours and torch's alike).
    flush_buf = torch.ones(64 << 20, dtype=torch.float32, device="cuda")
    flush = lambda: flush_buf.sum()  # noqa: E731
    copy_bw = copy_bandwidth(torch)
    common.log(f"device-to-device copy bandwidth: {copy_bw / 1e9:.0f} GB/s")
    return torch, ft, steps, flush, copy_bw


def norm_bench_session(doc, argv):
    """(args, session) of a normalization bench: --quick, --steps (20), --json; gpu_session."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    return args, gpu_session(args)


def geomean_speedup(rows, kind="fwd+bwd"):
    """Prints and returns the geometric mean of the rows' speedups of `kind`."""
    speedups = [r[kind]["speedup"] for r in rows]
    geomean = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
    print(f"geomean {kind} speedup {geomean:.2f}x, slowest {min(speedups):.2f}x")
    return geomean


def write_cuda_results(bench, args, torch, ft, copy_bw, steps, **fields):
    """bench/results/cuda_<bench>_<gpu>.json (or --json) with device, versions, sha and date."""
    name = torch.cuda.get_device_name()
    doc = {"bench": f"{bench}_cuda",
           "device": {"kind": "cuda", "name": name, "copy_bandwidth_gbs": copy_bw / 1e9},
           "versions": {**common.versions(ft.info(), torch), "cuda": torch.version.cuda},
           "git_sha": common.git_sha(), "date": common.utc_now_iso(), "steps": steps,
           "l2_flush": L2_FLUSH, **fields}
    out = args.json or common.RESULTS_DIR / f"cuda_{bench}_{common.slug(name)}.json"
    common.write_json(out, doc)
    common.log(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rules", default=",".join(r.name for r in RULES_BY_NAME.values()),
                    help="comma-separated rules (default: every rule of the rule table)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    session = gpu_session(args)
    if session is None:
        return 0
    torch, ft, steps, flush, copy_bw = session
    zeros = torch.zeros_like
    rows = []
    for wname, wlabel, sizes, only in workloads(args.quick):
        numel = sum(sizes)
        for rname in args.rules.split(","):
            if only is not None and rname not in only:
                continue
            rule = RULES_BY_NAME[rname]
            params = [torch.randn(n, device="cuda") for n in sizes]
            grads = [torch.randn(n, device="cuda") for n in sizes]
            ft_step = make_ft_step(ft, rule, params, grads, zeros)
            ft_step()                                  # uploads the chunk list
            calls = [0]

            def counted_step(ft_step=ft_step):
                calls[0] += 1
                ft_step()
            launches0 = ft._C.cuda_launch_count()
            ft_gpu, ft_host = cuda_timer(torch, counted_step, steps, flush)
            launches = (ft._C.cuda_launch_count() - launches0) / calls[0]
            bytes_moved = rule.bytes_per_param * numel
            row = {"workload": wlabel, "rule": rname, "numel": numel, "tensors": len(sizes),
                   "bytes": bytes_moved, "ft_gpu_ms": ft_gpu * 1e3, "ft_host_ms": ft_host * 1e3,
                   "ft_gbs": bytes_moved / ft_gpu / 1e9, "pct_copy_bw": 100 * bytes_moved / ft_gpu / copy_bw,
                   "launches_per_step": launches}
            for impl in ("fused", "foreach"):
                tparams = [p.clone().requires_grad_(True) for p in params]
                for p, g in zip(tparams, grads):
                    p.grad = g.clone()
                try:
                    opt = make_torch_optimizer(torch, rule, tparams, impl)
                    opt.step()
                    g_s, h_s = cuda_timer(torch, opt.step, steps, flush)
                    row[f"torch_{impl}_gpu_ms"], row[f"torch_{impl}_host_ms"] = g_s * 1e3, h_s * 1e3
                    row[f"speedup_vs_{impl}"] = g_s / ft_gpu
                    row[f"host_speedup_vs_{impl}"] = h_s / ft_host
                except Exception as e:  # noqa: BLE001 - torch lacks that implementation
                    row[f"torch_{impl}"] = f"n/a: {type(e).__name__}"
                del tparams
            rows.append(row)
            common.log(f"{wlabel:>14} {rname:>9}: {row['ft_gpu_ms']:.3f} ms "
                       f"{row['pct_copy_bw']:.0f}% of copy bw")
            del params, grads, ft_step
            torch.cuda.empty_cache()
    # bf16 params + fp32 master + fp32 state, AdamW: roofline = 2 (p) + 2 (g) + 3*4*2 (m, v, master)
    n = (16 if args.quick else 64) << 20
    p = torch.randn(n, device="cuda").to(torch.bfloat16)
    g = torch.randn(n, device="cuda").to(torch.bfloat16)
    master, m, v = p.float(), torch.zeros(n, device="cuda"), torch.zeros(n, device="cuda")
    counter = [0]
    def mixed_step():
        counter[0] += 1
        ft.adamw_([p], [g], [m], [v], step=counter[0], master_params=[master])
    mixed_step()
    gpu, host = cuda_timer(torch, mixed_step, steps, flush)
    mixed_bytes = n * (2 + 2 + 2 + 3 * 8)
    rows.append({"workload": f"{n >> 20}M bf16+master", "rule": "adamw", "numel": n, "tensors": 1,
                 "bytes": mixed_bytes, "ft_gpu_ms": gpu * 1e3, "ft_host_ms": host * 1e3,
                 "ft_gbs": mixed_bytes / gpu / 1e9, "pct_copy_bw": 100 * mixed_bytes / gpu / copy_bw})
    headers = ["workload", "rule", "ft ms", "GB/s", "% copy", "launch", "fused ms", "x fused",
               "foreach ms", "x foreach", "host ms", "host x fused"]
    fmt = lambda v, f="{:.3f}": "-" if v is None else f.format(v)  # noqa: E731
    table = [[r["workload"], r["rule"], fmt(r["ft_gpu_ms"]), fmt(r["ft_gbs"], "{:.0f}"),
              fmt(r["pct_copy_bw"], "{:.0f}"), fmt(r.get("launches_per_step"), "{:.1f}"),
              fmt(r.get("torch_fused_gpu_ms")), fmt(r.get("speedup_vs_fused"), "{:.2f}"),
              fmt(r.get("torch_foreach_gpu_ms")), fmt(r.get("speedup_vs_foreach"), "{:.2f}"),
              fmt(r["ft_host_ms"]), fmt(r.get("host_speedup_vs_fused"), "{:.1f}")] for r in rows]
    print(common.format_table(headers, table, [False, False] + [True] * 10))
    write_cuda_results("optim", args, torch, ft, copy_bw, steps, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
