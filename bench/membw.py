"""Measures this machine's main-memory bandwidth (STREAM-style triad and copy) with NumPy on all cores."""

from __future__ import annotations

import time

from common import usable_cores
from fusedtrain.bench.machine import cpu_bandwidth

_KEYS = ("triad_gbs", "copy_gbs", "axpy_gbs", "array_mib", "threads", "runs", "method")


def measure_bandwidth(array_bytes: int = 128 << 20, runs: int = 10, threads: int | None = None) -> dict:
    """fusedtrain.bench.machine.cpu_bandwidth with the scripts' defaults and result keys.

    Triad is the reference the targets use; axpy is reported beside it because optimizer updates
    are in place like it (every written array is also read, so they pay no write-allocate
    traffic) and can beat triad.
    """
    bw = cpu_bandwidth(array_bytes=array_bytes, runs=runs, threads=threads or usable_cores())
    return {k: bw[k] for k in _KEYS}


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
