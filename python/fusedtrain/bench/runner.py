"""Runs the benchmark suites that apply to this machine and assembles the report."""
from __future__ import annotations

import gc
import sys
import time

from . import batch_norm, machine, optim, report, user_path
from .cases import OURS
from .timing import Timing, time_turns


def _optional(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - a broken optional install counts as absent
        return None


def _cuda_bandwidth(torch, cupy) -> dict:
    """Best device-to-device copy in GB/s (2 arrays counted): the GPU's reachable bandwidth."""
    nbytes = 1 << 30
    if torch is not None:
        src = torch.empty(nbytes // 4, device="cuda")
        dst, sync = torch.empty_like(src), torch.cuda.synchronize

        def copy():
            dst.copy_(src)
    else:
        src = cupy.empty(nbytes // 4, dtype=cupy.float32)
        dst, sync = cupy.empty_like(src), cupy.cuda.get_current_stream().synchronize

        def copy():
            cupy.copyto(dst, src)
    copy()
    sync()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        copy()
        sync()
        best = min(best, time.perf_counter() - t0)
    return {"kind": "device copy", "gbs": 2 * nbytes / best / 1e9}


def _cell(res, nbytes, bw_gbs):
    if isinstance(res, Exception):
        return {"error": f"{type(res).__name__}: {res}"}
    gbs = nbytes / res.median_s / 1e9
    return {"median_ms": res.median_s * 1e3, "min_ms": res.min_s * 1e3, "repeats": res.repeats,
            "gbs": gbs, "pct_bandwidth": 100.0 * gbs / bw_gbs if bw_gbs else None}


def _row(case, results, bw_gbs):
    row = {"suite": case.suite, "kernel": case.kernel, "workload": case.workload,
           "dtype": case.dtype, "bytes_moved": case.bytes_moved, **case.notes,
           "fusedtrain": _cell(results[OURS], case.bytes_moved, bw_gbs),
           "baselines": {k: _cell(v, case.bytes_moved, bw_gbs)
                         for k, v in results.items() if k != OURS}}
    timed = {k: v for k, v in results.items() if k != OURS and isinstance(v, Timing)}
    if timed:
        # The ratio is to the fastest implementation the baseline library offers.
        name = min(timed, key=lambda k: timed[k].median_s)
        row["baseline"], row["baseline_ms"] = name, timed[name].median_s * 1e3
        row["baseline_pct_bandwidth"] = row["baselines"][name]["pct_bandwidth"]
        ours = results[OURS]
        row["ratio"] = timed[name].median_s / ours.median_s if isinstance(ours, Timing) else None
    return row


def plan(quick, torch, cuda_torch, cupy, use_cuda):
    """(device, suite specs) for every suite that applies here."""
    out = [("cpu", optim.specs(quick=quick, device="cpu", torch=torch)),
           ("cpu", batch_norm.specs(quick=quick, device="cpu", torch=torch)),
           ("cpu", user_path.specs(quick=quick, device="cpu", torch=torch))]
    if use_cuda:
        for suite in (optim, batch_norm, user_path):
            out.append(("cuda", suite.specs(quick=quick, device="cuda", torch=cuda_torch, cupy=cupy)))
    return out


def run(*, quick=False, json_path=None, plot_path=None, use_torch=True, cpu_only=False,
        suites=None, budget_s=None, stream=None):
    """Times the suites, prints the table to `stream` (stdout) and returns the report dict.

    `suites` optionally restricts to names containing any of the given words ("optim",
    "batch norm", "cuda"). Raises SystemExit when `plot_path` is given and matplotlib is missing
    (before spending time on the measurements).
    """
    import fusedtrain as ft
    stream = stream or sys.stdout
    if plot_path:
        report.require_matplotlib("--plot")
    torch = _optional("torch") if use_torch else None
    info = ft.info()
    cores = machine.usable_cores()
    if torch is not None:
        torch.set_num_threads(cores)  # same cores for both sides
    use_cuda = bool(info["cuda_devices"]) and not cpu_only
    # CUDA arrays come from torch when it sees the GPU, else from CuPy (then with no baseline).
    cuda_torch = torch if use_cuda and torch is not None and torch.cuda.is_available() else None
    cupy = None
    if use_cuda and cuda_torch is None:
        cupy = _optional("cupy")
        use_cuda = cupy is not None
    timing = ({"budget_s": 0.05, "min_repeats": 2, "max_repeats": 20, "warmup": 2} if quick
              else {"budget_s": 0.5, "min_repeats": 5, "max_repeats": 300, "warmup": 3})
    if budget_s is not None:
        timing["budget_s"] = budget_s

    started = time.perf_counter()
    print("measuring memory bandwidth ...", file=sys.stderr, flush=True)
    bandwidth = {"cpu": machine.cpu_bandwidth(runs=3 if quick else 8, threads=cores)}
    if use_cuda:
        bandwidth["cuda"] = _cuda_bandwidth(cuda_torch, cupy)
    todo = [(dev, s) for dev, specs in plan(quick, torch, cuda_torch, cupy, use_cuda) for s in specs
            if not suites or any(w in s.suite for w in suites)]
    bar = report.Progress(len(todo))
    rows = []
    for dev, spec in todo:
        bar.step(f"{spec.suite}: {spec.kernel} {spec.workload}")
        case = spec.build()
        results = time_turns(case.fns, sync=case.sync, **timing)
        rows.append(_row(case, results, bandwidth[dev]["gbs"]))
        del case, results
        gc.collect()
    bar.close()
    elapsed = time.perf_counter() - started

    baseline = ("torch " + torch.__version__) if torch is not None else "NumPy reference (fusedtrain.reference)"
    gpus = ", ".join(d if isinstance(d, str) else str(d) for d in info["cuda_devices"]) or "none"
    print(f"fusedtrain {info['version']}  isa={info['cpu_isa']}  threads={info['num_threads']}  "
          f"cpu={machine.cpu_model()} ({cores} cores)  gpu={gpus if use_cuda else 'not used'}",
          file=stream)
    print(f"baseline: {baseline}; ratio = baseline time / fusedtrain time (>1: fusedtrain faster)",
          file=stream)
    print("bandwidth: " + ", ".join(f"{d} {b['kind']} {b['gbs']:.1f} GB/s"
                                    for d, b in bandwidth.items())
          + "; % bw = GB/s at the minimum bytes moved / that", file=stream)
    print(report.table(rows), file=stream)
    print(f"{len(rows)} cases in {elapsed:.0f} s", file=stream)

    doc = {"benchmark": "fusedtrain bench",
           "date": report.utc_now_iso(),
           "device": {"cpu": machine.cpu_device(), "cuda_devices": info["cuda_devices"] if use_cuda else []},
           "versions": {"fusedtrain": info["version"], **machine.versions(info["version"], torch),
                        "cupy": cupy.__version__ if cupy is not None else None},
           "fusedtrain_info": info, "baseline": baseline, "bandwidth": bandwidth,
           "settings": {"quick": quick, **timing}, "elapsed_s": elapsed, "rows": rows}
    if json_path:
        report.write_json(json_path, doc)
        print(f"wrote {json_path}", file=stream)
    if plot_path:
        report.plot(rows, plot_path, f"fusedtrain {info['version']} on {machine.cpu_model()}"
                    f" ({cores} cores) vs {baseline}")
        print(f"wrote {plot_path}", file=stream)
    return doc
