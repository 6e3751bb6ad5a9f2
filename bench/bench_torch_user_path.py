"""Times the path PyTorch users take, against torch.optim, and checks issue 8's targets.

- import: microseconds per tensor per list for fusedtrain to take a view of a torch tensor
  (DLPack's C exchange API, and the __dlpack__ route it replaces), a NumPy array, and on a GPU a
  torch CUDA tensor and a CuPy array;
- ``ft.adamw_`` on torch tensors vs the same call on NumPy views of the same memory (1000 x 1K);
- ``ft.torch.AdamW`` / ``ft.torch.SGD(momentum=0.9)`` ``step()`` vs ``torch.optim`` foreach and
  fused on the parameter lists of a ResNet-50 (also channels_last), a GPT-2 small, 1000 x 1K
  and 10,000 x 64 tensors: time per step and per tensor, and our own Python work per step
  (the step with the kernel call replaced by a no-op);
- on a GPU: host time per step (until step() returns, no sync) for 10,000 CUDA tensors.

Every comparison takes turns in one run (common.time_interleaved) and is repeated --rounds
times, because this shared machine's speed drifts; the JSON keeps every round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import common

import torch

import fusedtrain as ft
from fusedtrain import _C
from fusedtrain.bench import user_path

TARGETS = {  # (optimizer, workload): minimum speedup of ft.torch over torch.optim fused
    ("adamw", "1000 x 1K"): 3.0,
    ("adamw", "10000 x 64"): 2.0,
    ("adamw", "GPT-2 small"): 1.0,
}
IMPORT_TARGET_US = 0.5        # per tensor per list, torch CPU tensors
NUMPY_PARITY = 1.3            # ft.adamw_ on torch tensors / on NumPy arrays, 1000 x 1K
CUDA_HOST_TARGET = 3.0        # torch fused host time / ours, 10,000 CUDA tensors


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, short budgets, no GPT-2")
    ap.add_argument("--rounds", type=int, default=3, help="repeats of every comparison")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed calls per cell")
    ap.add_argument("--models", default=None,
                    help="comma-separated workload names to keep (default: all)")
    ap.add_argument("--devices", default="cpu,cuda",
                    help="comma-separated devices to time, of those present (default cpu,cuda); "
                         "cuda alone writes cuda_torch_user_path_<gpu>.json")
    ap.add_argument("--json", default=None, help="results file (default bench/results/...)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    if args.budget is None:
        args.budget = 0.1 if args.quick else 0.6
    return args


def per_round(results, key):
    return [r[key] for r in results if key in r]


def _median(xs):
    return statistics.median(xs) if xs else None


# -- import cost --------------------------------------------------------------------------------

def import_cost(n, budget, device="cpu"):
    """Microseconds per tensor for one list of n tensors, per route, taking turns."""
    fns = {}
    steps = user_path.import_steps(torch, n, device)
    names = {user_path.OURS: f"torch {device} (exchange API)",
             "torch __dlpack__": f"torch {device} (__dlpack__)",
             "numpy arrays": "numpy"}
    for k, fn in steps.items():
        fns[names[k]] = fn
    try:
        import cupy
        if device == "cuda":
            arrays = [cupy.zeros(64, dtype=cupy.float32) for _ in range(n)]
            fns["cupy"] = lambda: _C._import_views(arrays, True, False)
        else:
            # No GPU needed: CuPy views of host memory, which an import reads no byte of.
            host = np.zeros(64 * n, np.float32)
            mem = cupy.cuda.memory.UnownedMemory(host.ctypes.data, host.nbytes, host, device_id=0)
            arrays = [cupy.ndarray((64,), cupy.float32,
                                   memptr=cupy.cuda.memory.MemoryPointer(mem, 256 * i))
                      for i in range(n)]
            fns["cupy (views of host memory)"] = lambda: _C._import_views(arrays, True, False)
    except Exception:  # noqa: BLE001 - no CuPy here
        pass
    res = common.time_interleaved(fns, budget_s=budget, min_repeats=5)
    return {k: (v.median_s * 1e6 / n if isinstance(v, common.Timing) else repr(v))
            for k, v in res.items()}


# -- functional call on torch vs NumPy ------------------------------------------------------------

def functional_parity(budget, n=1000, size=1024):
    gen = torch.Generator().manual_seed(0)
    t = {k: [torch.randn(size, generator=gen) * (1e-2 if k == "g" else 1.0) for _ in range(n)]
         for k in ("p", "g")}
    t["m"] = [torch.zeros(size) for _ in range(n)]
    t["v"] = [torch.zeros(size) for _ in range(n)]
    a = {k: [x.numpy() for x in xs] for k, xs in t.items()}   # the same memory, as NumPy
    count = [0, 0]

    def call(arrs, i):
        def step():
            count[i] += 1
            ft.adamw_(arrs["p"], arrs["g"], arrs["m"], arrs["v"], step=count[i], lr=1e-3)
        return step
    res = common.time_interleaved({"torch": call(t, 0), "numpy": call(a, 1)}, budget_s=budget,
                                  min_repeats=20)
    return {"torch_ms": res["torch"].median_s * 1e3, "numpy_ms": res["numpy"].median_s * 1e3,
            "ratio": res["torch"].median_s / res["numpy"].median_s}


# -- optimizer steps -------------------------------------------------------------------------------

def python_overhead_ms(opt, reps=5):
    """opt.step() with the kernel entry points stubbed out: our own Python work per step."""
    saved = {name: getattr(_C, name) for name in ("adam_", "momentum_", "sgd_")}
    try:
        for name in saved:
            setattr(_C, name, lambda *a, **k: None)
        opt.step()
        xs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            opt.step()
            xs.append(time.perf_counter() - t0)
    finally:
        for name, fn in saved.items():
            setattr(_C, name, fn)
    return min(xs) * 1e3


def share_state(ours, other, params, keys):
    """Note [same memory] of bench_optim_cpu.py: torch's state becomes ours (each keeps its own
    step counts), so both step the very same arrays."""
    for p in params:
        for k in keys:
            other.state[p][k] = ours.state[p][k]


def step_case(name, shapes, channels_last, budget, device="cpu"):
    params = user_path.make_params(torch, shapes, device, channels_last)
    cls, hyper, arrays = user_path.OPTIMIZERS[name]
    import fusedtrain.torch as ftt
    ours = getattr(ftt, cls)(params, **hyper)
    ours.step()
    keys = [k for k in ours.state[params[0]] if k != "step"]
    fns = {"ours": ours.step}
    for impl, kw in user_path.TORCH_IMPLS.items():
        try:
            opt = getattr(torch.optim, cls)(params, **hyper, **kw)
            opt.step()
        except (RuntimeError, ValueError, TypeError) as e:
            fns[impl] = None
            print(f"  {impl}: {e}", file=sys.stderr)
            continue
        share_state(ours, opt, params, keys)
        fns[impl] = opt.step
    fns = {k: v for k, v in fns.items() if v is not None}
    sync = torch.cuda.synchronize if device == "cuda" else None
    res = common.time_interleaved(fns, budget_s=budget, sync=sync)
    out = {"tensors": len(params), "numel": sum(p.numel() for p in params),
           "bytes_moved": arrays * 4 * sum(p.numel() for p in params)}
    for k, v in res.items():
        out[k + "_ms"] = v.median_s * 1e3 if isinstance(v, common.Timing) else repr(v)
    for impl in user_path.TORCH_IMPLS:
        # Ratios per round: the machine's speed drifts between rounds, less within one.
        if isinstance(res.get(impl), common.Timing) and isinstance(res["ours"], common.Timing):
            out[impl + "_ratio"] = res[impl].median_s / res["ours"].median_s
    if device == "cpu":
        out["ours_python_ms"] = python_overhead_ms(ours)
    else:
        out.update(host_times(fns, len(params)))
    return out


def host_times(fns, n, reps=10):
    """CUDA: seconds until step() returns (no sync), per implementation, in turns."""
    xs = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            xs[k].append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return {k + "_host_ms": statistics.median(v) * 1e3 for k, v in xs.items()}


# -- report ----------------------------------------------------------------------------------------

def summarize(rounds):
    """Median over rounds of every number of every row."""
    out = {}
    for key in rounds[0]:
        rows = [r[key] for r in rounds]
        if isinstance(rows[0], dict):
            out[key] = {k: _median([r[k] for r in rows if isinstance(r.get(k), (int, float))])
                        for k in rows[0]}
    return out


def main(argv=None):
    args = parse_args(argv)
    cores = common.usable_cores()
    torch.set_num_threads(cores)
    info = ft.info()
    present = ["cpu"] + (["cuda"] if torch.cuda.is_available() and info["cuda_devices"] else [])
    devices = [d for d in present if d in args.devices.split(",")]
    if not devices:
        print(f"none of --devices {args.devices} is present here", file=sys.stderr)
        return 0
    workloads = user_path.model_shapes(False)
    if args.quick:
        workloads = [w for w in workloads if w[0] != "GPT-2 small"]
    if args.models:
        keep = {w.strip() for w in args.models.split(",")}
        workloads = [w for w in workloads if w[0] in keep]
    rounds = []
    for r in range(args.rounds):
        common.log(f"round {r + 1}/{args.rounds}")
        row = {}
        for device in devices:
            common.log(f"  import ({device})")
            row[f"import_us_per_tensor {device}"] = import_cost(10000, args.budget, device)
            for wname, shapes, cl in workloads:
                if device == "cuda" and wname != "10000 x 64":
                    continue
                for name in user_path.OPTIMIZERS:
                    common.log(f"  {name} {wname} ({device})")
                    row[f"{name} | {wname} | {device}"] = step_case(name, shapes, cl, args.budget,
                                                                    device)
        if "cpu" in devices:
            common.log("  ft.adamw_ torch vs numpy")
            row["adamw_ torch vs numpy | 1000 x 1K"] = functional_parity(args.budget)
        rounds.append(row)
    summary = summarize(rounds)

    lines, targets = [], []
    for key, v in summary.items():
        if key.startswith("import"):
            lines.append([key, ", ".join(f"{k}: {x:.3f} us" for k, x in v.items() if x is not None)])
            # The bound of torch CPU tensors; CUDA tensors and CuPy arrays are held to it too.
            device = key.split()[-1]
            for route in [f"torch {device} (exchange API)"] + (["cupy"] if device == "cuda" else []):
                us = v.get(route)
                targets.append((f"import {route} <= {IMPORT_TARGET_US:.1f} us/tensor/list",
                                us, us is not None and us <= IMPORT_TARGET_US))
            continue
        if key.startswith("adamw_ torch"):
            lines.append([key, f"torch {v['torch_ms']:.3f} ms, numpy {v['numpy_ms']:.3f} ms, "
                               f"ratio {v['ratio']:.2f}"])
            targets.append((f"ft.adamw_ torch/numpy <= {NUMPY_PARITY}", v["ratio"],
                            v["ratio"] is not None and v["ratio"] <= NUMPY_PARITY))
            continue
        name, wname, device = [s.strip() for s in key.split("|")]
        ours = v.get("ours_ms")
        cells = [f"ours {ours:.2f} ms ({1e3 * ours / v['tensors']:.2f} us/tensor)"]
        for impl in user_path.TORCH_IMPLS:
            t, ratio = v.get(impl + "_ms"), v.get(impl + "_ratio")
            if t and ratio:
                cells.append(f"{impl} {t:.2f} ms ({ratio:.2f}x)")
        if v.get("ours_python_ms") is not None:
            cells.append(f"our Python {1e3 * v['ours_python_ms'] / v['tensors']:.2f} us/param")
        if device == "cuda" and v.get("ours_host_ms"):
            fused = v.get("torch fused_host_ms")
            cells.append(f"host: ours {v['ours_host_ms']:.2f} ms, fused {fused:.2f} ms")
            if wname == "10000 x 64" and name == "adamw" and fused:
                ratio = fused / v["ours_host_ms"]
                targets.append(("cuda host time vs fused >= 3x", ratio, ratio >= CUDA_HOST_TARGET))
        lines.append([key, "; ".join(cells)])
        need = TARGETS.get((name, wname))
        ratio = v.get("torch fused_ratio")
        if need and device == "cpu" and ratio:
            targets.append((f"{name} {wname}: vs torch fused >= {need}x", ratio, ratio >= need))
    print(common.format_table(["case", "median over rounds"], lines))
    print()
    print(common.format_table(["target", "measured", "met"],
                              [[t, f"{m:.3f}" if isinstance(m, float) else m, ok]
                               for t, m, ok in targets]))

    stem = (f"cuda_torch_user_path_{common.slug(torch.cuda.get_device_name())}" if devices == ["cuda"]
            else f"cpu_torch_user_path_{common.slug(common.cpu_model())}")
    path = args.json or (common.RESULTS_DIR / f"{stem}.json")
    doc = {"benchmark": "torch_user_path", "date": common.utc_now_iso(),
           "git_sha": common.git_sha(), "git_dirty": common.git_dirty(),
           "device": common.cpu_device(), "cuda_devices": info["cuda_devices"],
           "versions": {**common.versions(info, torch)}, "fusedtrain_info": info,
           "threads": {"fusedtrain": ft.get_num_threads(), "torch": torch.get_num_threads()},
           "cpu_pressure": common.cpu_pressure(),
           "settings": {"rounds": args.rounds, "budget_s": args.budget, "quick": args.quick},
           "summary": summary, "rounds": rounds,
           "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in targets]}
    common.log(f"wrote {common.write_json(path, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
