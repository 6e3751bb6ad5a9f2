"""What the benchmarks run on: CPU model and cores, and the memory bandwidth the kernels are judged by."""
from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

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


def cpu_device() -> dict:
    return {"kind": "cpu", "model": cpu_model(), "cores": usable_cores(),
            "machine": platform.machine(), "os": platform.platform()}


# NumPy needs two ufunc passes for a triad; done block by block the block of `a` is still in
# cache for the second pass, so memory sees one pass per array as in STREAM. Blocks are large
# because every ufunc call takes the GIL and small blocks leave threads queueing on it.
_BLOCK = 128 * 1024


def _triad(a, b, c, lo, hi):
    for i in range(lo, hi, _BLOCK):
        j = min(i + _BLOCK, hi)
        np.multiply(c[i:j], 3.0, out=a[i:j])
        np.add(a[i:j], b[i:j], out=a[i:j])


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
    (a += s*b), 3 arrays counted for each; the better of the two is the reference for '% of
    bandwidth'. The kernels' byte counts use the same convention (every array read or written
    once, write-allocate reads not counted). A NumPy probe runs each block in two passes, so
    compiled single-pass kernels can land somewhat above 100%.
    """
    threads = threads or usable_cores()
    n = array_bytes // 4
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.full(n, 2.0, np.float32)
    step = -(-n // threads)
    parts = [(i, min(i + step, n)) for i in range(0, n, step)]
    best = {_triad: float("inf"), _axpy: float("inf")}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for r in range(runs + 1):  # the first run wakes the threads and faults the pages
            for kernel in best:
                t0 = time.perf_counter()
                for f in [pool.submit(kernel, a, b, c, lo, hi) for lo, hi in parts]:
                    f.result()
                if r:
                    best[kernel] = min(best[kernel], time.perf_counter() - t0)
    triad, axpy = (3 * n * 4 / best[k] / 1e9 for k in (_triad, _axpy))
    return {"kind": "triad" if triad >= axpy else "in-place axpy", "gbs": max(triad, axpy),
            "triad_gbs": triad, "axpy_gbs": axpy, "array_mib": n * 4 / (1 << 20),
            "threads": threads, "runs": runs}
