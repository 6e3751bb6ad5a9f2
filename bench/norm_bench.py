"""The CPU benchmark loop every normalization script shares (bench_bn_cpu.py, bench_ln_cpu.py):
forward, backward and forward+backward of each workload, fusedtrain against torch's own kernels
on the same memory, taking turns; a table and bench/results/<name>_<cpu>.json."""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import common
from membw import measure_bandwidth

try:
    import torch
except ImportError:
    torch = None

KINDS = ("forward", "backward", "fwd+bwd")
# Minimum DRAM bytes per element of a float32 workload: forward reads x, writes y; backward reads
# dy and x, writes dx. Per-channel vectors are noise at these sizes; write-allocate reads are not
# counted.
BYTES_PER_ELEM = {"forward": 8, "backward": 12, "fwd+bwd": 20}


def parse_args(doc, argv=None):
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true", help="few repeats (for debugging)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed calls per implementation and cell (default 1.0, quick 0.15)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default bench/results/<name>_<cpu-model>.json)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 1.0
    return args


def _cell(nbytes, r, bw):
    if isinstance(r, Exception):
        return {"status": "error", "error": f"{type(r).__name__}: {r}"}
    gbs = nbytes / r.median_s / 1e9
    return {"status": "ok", "median_ms": r.median_s * 1e3, "min_ms": r.min_s * 1e3,
            "repeats": r.repeats, "gbs": gbs, "pct_triad": 100.0 * gbs / bw["triad_gbs"]}


def run(args, workloads, build, *, benchmark, json_stem, settings):
    """Times every workload. build(workload, ft, use_torch) returns (ours, theirs): dicts from
    each kind to a no-argument call (theirs empty without torch). A workload has name, shape,
    numel, target_fwd_bwd and a dict of row fields (row)."""
    import fusedtrain as ft
    tm, cores, ft_info = common.cpu_session(torch, args.no_torch)
    use_torch = tm is not None
    timing_kw = ({"min_repeats": 3, "max_repeats": 30, "warmup": 2} if args.quick
                 else {"min_repeats": 5, "max_repeats": 200, "warmup": 3})
    started = time.perf_counter()
    pressure_start = common.cpu_pressure()
    common.log("measuring memory bandwidth ...")
    bw = measure_bandwidth(array_bytes=64 << 20, runs=3 if args.quick else 8, threads=cores)

    rows = []
    for w in workloads:
        ours, theirs = build(w, ft, use_torch)
        for kind in KINDS:
            common.log(f"{w.name:24s} {kind:8s} ...")
            fns = {"fusedtrain": ours[kind]}
            if theirs:
                fns["torch"] = theirs[kind]
            res = common.time_interleaved(fns, budget_s=args.budget, **timing_kw)
            nbytes = BYTES_PER_ELEM[kind] * w.numel
            row = {"workload": w.name, "shape": list(w.shape), **w.row, "dtype": "float32",
                   "kind": kind, "bytes_moved": nbytes}
            for name, r in res.items():
                row[name] = _cell(nbytes, r, bw)
            ok = row.get("torch", {}).get("status") == "ok" and row["fusedtrain"].get("status") == "ok"
            row["speedup_vs_torch"] = (row["torch"]["median_ms"] / row["fusedtrain"]["median_ms"]
                                       if ok else None)
            if kind == "fwd+bwd" and w.target_fwd_bwd is not None:  # None: a shape to watch
                row["target_speedup"] = w.target_fwd_bwd
                row["target_met"] = (row["speedup_vs_torch"] >= w.target_fwd_bwd
                                     if row["speedup_vs_torch"] is not None else None)
            rows.append(row)
        del ours, theirs
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
        **common.cpu_doc(benchmark, ft_info, tm),
        "bandwidth": bw,
        "cpu_pressure": {"start": pressure_start, "end": common.cpu_pressure()},
        "settings": {"quick": args.quick, "budget_s": args.budget, **timing_kw,
                     "bytes_per_elem": BYTES_PER_ELEM, **settings},
        "rows": rows,
    }
    path = args.json or common.RESULTS_DIR / f"{json_stem}_{common.slug(common.cpu_model())}.json"
    common.write_json(path, doc)
    common.log(f"wrote {path}")
    return 0
