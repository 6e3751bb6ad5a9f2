"""What the benchmarks run on: CPU model and cores, and the memory bandwidth the kernels are judged by."""
from __future__ import annotations

import os
import platform
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def usable_cores() -> int:
    # The affinity mask, not cpu_count(): in a container or under taskset that is what we get.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def last_level_cache_bytes() -> int | None:
    """Largest cache size the kernel reports for cpu0, for judging whether a workload fits in it."""
    best = None
    for size_file in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        m = re.fullmatch(r"(\d+)([KMG]?)", size_file.read_text().strip())
        if not m:
            continue
        value = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
        best = value if best is None else max(best, value)
    return best


def cpu_device(detail: bool = False) -> dict:
    """The CPU a report ran on; `detail` adds what judging a single long run needs (logical CPUs,
    last-level cache, host name)."""
    if not detail:
        return {"kind": "cpu", "model": cpu_model(), "cores": usable_cores(),
                "machine": platform.machine(), "os": platform.platform()}
    return {"kind": "cpu", "model": cpu_model(), "cores": usable_cores(),
            "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "llc_bytes": last_level_cache_bytes(), "hostname": platform.node(),
            "os": platform.platform()}


def cpu_pressure() -> dict | None:
    """Linux PSI for CPU: the share of time some task waited for a core (avg10/avg60, percent).

    Recorded with results because a busy neighbour on a 2-core VM turns each OpenMP barrier into
    a wait for a descheduled thread, which can slow a many-kernel baseline 10x.
    """
    try:
        with open("/proc/pressure/cpu") as f:
            line = f.readline()
    except OSError:
        return None
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return {k: float(fields[k]) for k in ("avg10", "avg60", "avg300") if k in fields}


def versions(fusedtrain_version, torch=None) -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": getattr(torch, "__version__", None), "fusedtrain": fusedtrain_version}


# NumPy needs two ufunc passes for a triad; done block by block the block of `a` is still in
# cache for the second pass, so memory sees one pass per array as in STREAM. Blocks are large
# because every ufunc call takes the GIL and small blocks leave threads queueing on it.
_BLOCK = 128 * 1024


def _triad(a, b, c, lo, hi):
    for i in range(lo, hi, _BLOCK):
        j = min(i + _BLOCK, hi)
        np.multiply(c[i:j], 3.0, out=a[i:j])
        np.add(a[i:j], b[i:j], out=a[i:j])


def _copy(a, b, c, lo, hi):
    np.copyto(a[lo:hi], b[lo:hi])


def _axpy(a, b, c, lo, hi):
    # In place like an optimizer update: every written array is also read, so no write-allocate
    # traffic; the scratch block stays in cache.
    tmp = np.empty(min(_BLOCK, hi - lo), np.float32)
    for i in range(lo, hi, _BLOCK):
        j = min(i + _BLOCK, hi)
        np.multiply(b[i:j], 1e-7, out=tmp[:j - i])
        np.add(a[i:j], tmp[:j - i], out=a[i:j])


def cpu_bandwidth(array_bytes: int = 64 << 20, runs: int = 5, threads: int | None = None) -> dict:
    """Best-of-runs GB/s on all cores of a STREAM triad (a = b + 3c) and an in-place axpy
    (a += s*b), 3 arrays counted for each, and a copy (2 arrays); the better of triad and axpy
    is the reference for '% of bandwidth' (kind, gbs). The kernels' byte counts use the same
    convention (every array read or written once, write-allocate reads not counted). A NumPy
    probe runs each block in two passes, so compiled single-pass kernels can land somewhat
    above 100%.
    """
    threads = threads or usable_cores()
    n = array_bytes // 4
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.full(n, 2.0, np.float32)
    step = -(-n // threads)
    parts = [(i, min(i + step, n)) for i in range(0, n, step)]
    best = {_triad: float("inf"), _copy: float("inf"), _axpy: float("inf")}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for r in range(runs + 1):  # the first run wakes the threads and faults the pages
            for kernel in best:
                t0 = time.perf_counter()
                for f in [pool.submit(kernel, a, b, c, lo, hi) for lo, hi in parts]:
                    f.result()
                if r:
                    best[kernel] = min(best[kernel], time.perf_counter() - t0)
    triad, copy, axpy = (k * n * 4 / best[f] / 1e9 for k, f in ((3, _triad), (2, _copy), (3, _axpy)))
    return {"kind": "triad" if triad >= axpy else "in-place axpy", "gbs": max(triad, axpy),
            "triad_gbs": triad, "copy_gbs": copy, "axpy_gbs": axpy, "array_mib": n * 4 / (1 << 20),
            "threads": threads, "runs": runs,
            "method": "numpy ufuncs in a ThreadPoolExecutor over contiguous chunks, cache-sized "
                      "blocks, best of runs; triad and axpy count 3 arrays, copy 2"}
