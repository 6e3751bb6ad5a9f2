"""Measures this machine's main-memory bandwidth (STREAM-style triad and copy) with NumPy on all cores."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import usable_cores

# A triad in NumPy is two ufunc calls (a = s*c; a += b). Done block by block, the block of `a`
# is still in cache (L2, or L3 at worst) for the second call, so DRAM sees one pass over each
# array, like STREAM. Blocks must also be big: each ufunc call takes the GIL, and with small
# blocks the threads queue on it (16K-element blocks measured half the bandwidth of 128K ones
# on a 2-core EPYC). 128K float32 = 512 KiB per array block.
_BLOCK_ELEMS = 128 * 1024


def _ranges(n: int, parts: int):
    step = -(-n // parts)
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _triad_range(a, b, c, scalar, lo, hi):
    for i in range(lo, hi, _BLOCK_ELEMS):
        j = min(i + _BLOCK_ELEMS, hi)
        ab = a[i:j]
        np.multiply(c[i:j], scalar, out=ab)
        np.add(ab, b[i:j], out=ab)


def _copy_range(dst, src, lo, hi):
    np.copyto(dst[lo:hi], src[lo:hi])


def _axpy_range(a, b, scalar, lo, hi):
    # The scratch block stays in L1/L2, so DRAM sees a read, b read, a written back.
    tmp = np.empty(min(_BLOCK_ELEMS, hi - lo), dtype=a.dtype)
    for i in range(lo, hi, _BLOCK_ELEMS):
        j = min(i + _BLOCK_ELEMS, hi)
        t = tmp[: j - i]
        np.multiply(b[i:j], scalar, out=t)
        np.add(a[i:j], t, out=a[i:j])


def measure_bandwidth(array_bytes: int = 128 << 20, runs: int = 10, threads: int | None = None) -> dict:
    """Best-of-`runs` bandwidth in GB/s of triad (a = b + s*c, 3 arrays counted), copy (2 arrays)
    and in-place axpy (a += s*b, 3 arrays counted).

    Counted bytes follow STREAM: the write-allocate read of a destination is not counted, the
    same convention as the optimizer byte counts in the benchmarks. Triad is the reference the
    targets use; axpy is reported beside it because optimizer updates are in place like it (every
    written array is also read, so they pay no write-allocate traffic) and can beat triad.
    """
    threads = threads or usable_cores()
    n = array_bytes // 4
    # ones/full rather than empty: every page is faulted in before any timing.
    a = np.zeros(n, dtype=np.float32)
    b = np.full(n, 1.0, dtype=np.float32)
    c = np.full(n, 2.0, dtype=np.float32)
    a += 0.0
    parts = _ranges(n, threads)
    triad_best = copy_best = axpy_best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        def run(fn, *args):
            t0 = time.perf_counter()
            futures = [pool.submit(fn, *args, lo, hi) for lo, hi in parts]
            for f in futures:
                f.result()
            return time.perf_counter() - t0

        run(_triad_range, a, b, c, 3.0)  # wakes the worker threads
        for _ in range(runs):
            triad_best = min(triad_best, run(_triad_range, a, b, c, 3.0))
            copy_best = min(copy_best, run(_copy_range, a, b))
            axpy_best = min(axpy_best, run(_axpy_range, a, b, 1e-7))
    nbytes = n * 4
    return {
        "triad_gbs": 3 * nbytes / triad_best / 1e9,
        "copy_gbs": 2 * nbytes / copy_best / 1e9,
        "axpy_gbs": 3 * nbytes / axpy_best / 1e9,
        "array_mib": nbytes / (1 << 20),
        "threads": threads,
        "runs": runs,
        "method": "numpy ufuncs in a ThreadPoolExecutor over contiguous chunks, cache-sized blocks, "
                  "best of runs; triad and axpy count 3 arrays, copy 2",
    }


def measure_torch_triad(torch, array_bytes: int = 128 << 20, runs: int = 10) -> float:
    """Triad GB/s done by torch in one compiled pass (torch.add(b, c, alpha=s, out=a)).

    A cross-check only: the NumPy triad needs two ufunc passes per block and reads each input
    in a separate phase, so it can sit below what compiled code reaches on the same machine.
    """
    n = array_bytes // 4
    a, b, c = torch.zeros(n), torch.ones(n), torch.ones(n)
    best = float("inf")
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - t0)
    return 3 * n * 4 / best / 1e9


if __name__ == "__main__":
    import json
    print(json.dumps(measure_bandwidth(), indent=2))
