"""What fusedtrain runs on: CPU ISA, threads, CUDA build and devices."""
import numbers
import os
import platform

from . import _C

try:
    from importlib.metadata import version as _dist_version
    __version__ = _dist_version("fusedtrain")
except Exception:  # running from a source tree that was never installed
    __version__ = "0+unknown"


MAX_THREADS = 1024


def set_num_threads(n):
    """Threads the CPU kernels use (default: all cores, or FUSEDTRAIN_NUM_THREADS), 1 to 1024.

    Results are bitwise identical for any thread count. Safe to call while other threads run
    kernels: a call already running keeps the count it started with."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _C.set_num_threads(int(n))


def get_num_threads():
    return _C.get_num_threads()


def set_cpu_isa(name):
    """Force a CPU kernel build: 'baseline', 'avx2', 'avx512' or 'neon' (where available).

    FUSEDTRAIN_CPU_ISA sets the initial choice; by default the best the CPU supports."""
    _C.set_cpu_isa(str(name))


def get_cpu_isa():
    return _C.cpu_isa()


SWITCHES_OFF_VARIABLE = "FUSEDTRAIN_CUDA_SWITCHES_OFF"


def _switches_off_from_environment():
    """Turns off the CUDA kernel switches FUSEDTRAIN_CUDA_SWITCHES_OFF names (comma-separated,
    or "all"; Note [row kernel switches]): a way around a driver that misbehaves with one, and
    how bench/gpu_switch_bisect.py reruns failing GPU tests. Every switch changes speed only."""
    names = [n.strip() for n in os.environ.get(SWITCHES_OFF_VARIABLE, "").split(",") if n.strip()]
    known = list(_C._cuda_row_kernel_options())
    if names == ["all"]:
        names = known
    for n in names:
        if n not in known:
            raise ValueError(f"{SWITCHES_OFF_VARIABLE}: unknown switch {n!r}; the switches are "
                             f"{', '.join(known)} (or all)")
    if names:
        _C._cuda_row_kernel_options(**dict.fromkeys(names, False))


_switches_off_from_environment()


def info():
    """A dict describing this build and machine (also ``python -m fusedtrain info``)."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_isa": _C.cpu_isa(),
        "cpu_isa_available": list(_C.available_cpu_isas()),
        "num_threads": _C.get_num_threads(),
        "threads_backend": _C.threads_backend(),
        "cuda_compiled": bool(_C.cuda_compiled()),
        "cuda_runtime_version": _C.cuda_runtime_version(),
        "cuda_devices": list(_C.cuda_devices()),
        # Why no device is listed: no driver, a driver older than this build's runtime, ...
        "cuda_error": _C.cuda_device_error() or None,
        "cuda_switches_off": [k for k, on in _C._cuda_row_kernel_options().items() if not on],
        "env": {k: os.environ[k] for k in ("FUSEDTRAIN_CPU_ISA", "FUSEDTRAIN_NUM_THREADS",
                                           "FUSEDTRAIN_SHARE_OPENMP", SWITCHES_OFF_VARIABLE)
                if k in os.environ},
    }
