"""Times fusedtrain batch norm (forward, backward, forward+backward) on CPU against PyTorch in one run."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import common
from membw import measure_bandwidth

try:
    import torch
except ImportError:
    torch = None


@dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple            # the array's own shape (channels last when channels_last)
    channels_last: bool
    target_fwd_bwd: float   # required fusedtrain speedup over torch for forward+backward

    @property
    def channels(self):
        return self.shape[-1] if self.channels_last else self.shape[1]

    @property
    def numel(self):
        return int(np.prod(self.shape))


WORKLOADS = (
    Workload("64x256x28x28-nchw", (64, 256, 28, 28), False, 2.5),
    Workload("64x256x28x28-nhwc", (64, 28, 28, 256), True, 2.0),
    Workload("512x1024-2d", (512, 1024), False, 1.5),
)
EPS, MOMENTUM = 1e-5, 0.1

# Minimum DRAM bytes per element (float32): forward reads x, writes y; backward reads dy and x,
# writes dx. Per-channel vectors are noise at these sizes; write-allocate reads are not counted.
BYTES_PER_ELEM = {"forward": 8, "backward": 12, "fwd+bwd": 20}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few repeats (for debugging)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed calls per implementation and cell (default 1.0, quick 0.15)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default bench/results/cpu_bn_<cpu-model>.json)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 1.0
    return args


def ft_calls(ft, w, x, dy, weight, bias, rm, rv):
    cl = w.channels_last
    _, mean, invstd = ft.batch_norm_forward(x, weight, bias, rm, rv, channels_last=cl)

    def fwd():
        return ft.batch_norm_forward(x, weight, bias, rm, rv, momentum=MOMENTUM, eps=EPS,
                                     channels_last=cl)

    def bwd():
        return ft.batch_norm_backward(dy, x, weight, mean, invstd, channels_last=cl)

    def both():
        _, m, s = fwd()
        return ft.batch_norm_backward(dy, x, weight, m, s, channels_last=cl)

    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def torch_calls(w, x, dy, weight, bias, rm, rv):
    """torch's own kernels on the same memory: channels-last tensors for the NHWC workload."""
    def nchw(a):
        t = torch.from_numpy(a)
        return t.permute(0, 3, 1, 2) if w.channels_last else t  # channels_last memory format
    tx, tdy = nchw(x), nchw(dy)
    tw, tb = torch.from_numpy(weight), torch.from_numpy(bias)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    aten = torch.ops.aten
    _, smean, sinvstd = aten.native_batch_norm(tx, tw, tb, trm, trv, True, MOMENTUM, EPS)

    def fwd():
        return aten.native_batch_norm(tx, tw, tb, trm, trv, True, MOMENTUM, EPS)

    def bwd():
        return aten.native_batch_norm_backward(tdy, tx, tw, trm, trv, smean, sinvstd, True, EPS,
                                               [True, True, True])

    def both():
        _, m, s = fwd()
        return aten.native_batch_norm_backward(tdy, tx, tw, trm, trv, m, s, True, EPS,
                                               [True, True, True])

    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def main(argv=None) -> int:
    args = parse_args(argv)
    import fusedtrain as ft
    use_torch = torch is not None and not args.no_torch
    cores = common.usable_cores()
    if use_torch:
        torch.set_num_threads(cores)
    ft_info = ft.info()
    timing_kw = ({"min_repeats": 3, "max_repeats": 30, "warmup": 2} if args.quick
                 else {"min_repeats": 5, "max_repeats": 200, "warmup": 3})
    started = time.perf_counter()
    pressure = getattr(common, "cpu_pressure", lambda: None)
    pressure_start = pressure()
    common.log("measuring memory bandwidth ...")
    bw_runs = 3 if args.quick else 8
    bw = measure_bandwidth(array_bytes=64 << 20, runs=bw_runs, threads=cores)

    rows = []
    for w in WORKLOADS:
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(w.shape, dtype=np.float32) * 2 + 0.5)
        dy = rng.standard_normal(w.shape, dtype=np.float32)
        C = w.channels
        weight = rng.uniform(0.5, 1.5, C).astype(np.float32)
        bias = rng.standard_normal(C).astype(np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        ours = ft_calls(ft, w, x, dy, weight, bias, rm, rv)
        theirs = torch_calls(w, x, dy, weight, bias, rm, rv) if use_torch else {}
        for kind in ("forward", "backward", "fwd+bwd"):
            common.log(f"{w.name:20s} {kind:8s} ...")
            fns = {"fusedtrain": ours[kind]}
            if use_torch:
                fns["torch"] = theirs[kind]
            res = common.time_interleaved(fns, budget_s=args.budget, **timing_kw)
            nbytes = BYTES_PER_ELEM[kind] * w.numel
            row = {"workload": w.name, "shape": list(w.shape), "channels_last": w.channels_last,
                   "dtype": "float32", "kind": kind, "bytes_moved": nbytes}
            for name, r in res.items():
                if isinstance(r, Exception):
                    row[name] = {"status": "error", "error": f"{type(r).__name__}: {r}"}
                    continue
                gbs = nbytes / r.median_s / 1e9
                row[name] = {"status": "ok", "median_ms": r.median_s * 1e3, "min_ms": r.min_s * 1e3,
                             "repeats": r.repeats, "gbs": gbs,
                             "pct_triad": 100.0 * gbs / bw["triad_gbs"]}
            ok = row.get("torch", {}).get("status") == "ok" and row["fusedtrain"].get("status") == "ok"
            row["speedup_vs_torch"] = (row["torch"]["median_ms"] / row["fusedtrain"]["median_ms"]
                                       if ok else None)
            if kind == "fwd+bwd":
                row["target_speedup"] = w.target_fwd_bwd
                row["target_met"] = (row["speedup_vs_torch"] >= w.target_fwd_bwd
                                     if row["speedup_vs_torch"] is not None else None)
            rows.append(row)
        del x, dy, ours, theirs
        gc.collect()

    headers = ["workload", "kind", "ft ms", "ft GB/s", "% triad", "torch ms", "torch GB/s",
               "speedup", "target"]
    table = []
    for r in rows:
        f, t = r["fusedtrain"], r.get("torch", {})
        target = ""
        if "target_speedup" in r:
            target = f">= {r['target_speedup']}x " + ("met" if r["target_met"] else "MISSED")
        table.append([r["workload"], r["kind"], f"{f.get('median_ms', float('nan')):.2f}",
                      f"{f.get('gbs', float('nan')):.1f}", f"{f.get('pct_triad', float('nan')):.0f}",
                      f"{t['median_ms']:.2f}" if t.get("status") == "ok" else "-",
                      f"{t['gbs']:.1f}" if t.get("status") == "ok" else "-",
                      f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else "-", target])
    print(common.format_table(headers, table, [False, False] + [True] * 6 + [False]))
    elapsed = time.perf_counter() - started
    print(f"\nbandwidth (NumPy triad, {cores} threads): {bw['triad_gbs']:.1f} GB/s; "
          f"{elapsed:.0f} s; fusedtrain isa={ft_info['cpu_isa']} threads={ft_info['num_threads']}; "
          f"torch {torch.__version__ if use_torch else 'not used'}")

    doc = {
        "benchmark": "cpu_batch_norm",
        "date": common.utc_now_iso(),
        "git_sha": common.git_sha(),
        "git_dirty": common.git_dirty(),
        "device": common.cpu_device(),
        "versions": common.versions(ft_info, torch if use_torch else None),
        "fusedtrain_info": ft_info,
        "threads": {"fusedtrain": ft_info["num_threads"],
                    "torch": torch.get_num_threads() if use_torch else None},
        "bandwidth": bw,
        "cpu_pressure": {"start": pressure_start, "end": pressure()},
        "settings": {"quick": args.quick, "budget_s": args.budget, **timing_kw,
                     "bytes_per_elem": BYTES_PER_ELEM, "eps": EPS, "momentum": MOMENTUM,
                     "torch_calls": "aten.native_batch_norm / native_batch_norm_backward, "
                                    "channels_last memory format for NHWC"},
        "rows": rows,
    }
    path = args.json or common.RESULTS_DIR / f"cpu_bn_{common.slug(common.cpu_model())}.json"
    common.write_json(path, doc)
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
