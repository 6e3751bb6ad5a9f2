"""Shared pieces of the fusedtrain benchmark scripts: call timing, run metadata, JSON output, text tables."""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# The pieces the package's own bench (python -m fusedtrain bench) shares with these scripts.
from fusedtrain.bench.machine import cpu_model, usable_cores  # noqa: E402,F401
from fusedtrain.bench.timing import Timing, _median  # noqa: E402,F401


# Calls faster than this get an untimed lead-in call at the start of each turn.
_LEAD_IN_BELOW_S = 0.05


def time_interleaved(fns: dict[str, Callable[[], object]], *, budget_s: float, min_repeats: int = 5,
                     max_repeats: int = 200, warmup: int = 3,
                     sync: Callable[[], object] | None = None) -> dict[str, Timing | Exception]:
    """Times several implementations of the same work, taking turns, one call per sample.

    On a shared machine (a VM whose neighbours come and go) the memory bandwidth drifts by 2x
    within a minute; taking turns lets every implementation see the same drift, so the ratios
    stay meaningful even when the absolute times move. Each implementation gets about budget_s
    of timed calls: slow baselines few samples, fast kernels many, spread over the same rounds.
    The warm-up calls (after the first, which may pay page faults or lazy state allocation)
    give the cost estimate. `sync` is for asynchronous devices (CUDA): called before the clock
    is read so a sample covers the work, not just the launch. An implementation that raises
    gets its exception as its result; the others go on.
    """
    sync = sync or (lambda: None)
    results: dict[str, Timing | Exception] = {}
    estimates = {}
    for name, fn in fns.items():
        warm = []
        try:
            for _ in range(max(warmup, 1)):
                t0 = time.perf_counter()
                fn()
                sync()
                warm.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - reported in the results, not fatal to the run
            results[name] = e
            continue
        estimates[name] = min(warm[1:] or warm)

    counts = {n: max(min_repeats, min(max_repeats, int(budget_s / max(est, 1e-7))))
              for n, est in estimates.items()}
    if not counts:
        return results
    rounds = min(counts.values())
    per_round = {n: -(-c // rounds) for n, c in counts.items()}
    samples = {n: [] for n in counts}
    order = list(counts)

    # A collection in the middle of a timed call is noise that belongs to neither side.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            # Rotate who goes first so nobody always runs right after the same neighbour.
            for name in order[r % len(order):] + order[:r % len(order)]:
                if name in results:
                    continue
                fn = fns[name]
                try:
                    # The other implementation's worker threads may still be spinning (OpenMP
                    # waits ~ms before sleeping) and steal a core from the first call of a turn:
                    # for short calls, that call is not a sample.
                    if estimates[name] < _LEAD_IN_BELOW_S:
                        fn()
                        sync()
                    for _ in range(per_round[name]):
                        t0 = time.perf_counter()
                        fn()
                        sync()
                        samples[name].append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    results[name] = e
    finally:
        if gc_was_enabled:
            gc.enable()
    for name, xs in samples.items():
        if name not in results:
            results[name] = Timing(median_s=_median(xs), min_s=min(xs), repeats=len(xs))
    return results


def time_calls(fn: Callable[[], object], **kw) -> Timing:
    """time_interleaved for a single implementation; raises what fn raises."""
    out = time_interleaved({"fn": fn}, **kw)["fn"]
    if isinstance(out, Exception):
        raise out
    return out


def last_level_cache_bytes() -> int | None:
    """Largest cache size the kernel reports for cpu0, for judging whether a workload fits in it."""
    best = None
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for size_file in base.glob("index*/size"):
        text = size_file.read_text().strip()
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if not m:
            continue
        value = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
        best = value if best is None else max(best, value)
    return best


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def git_dirty() -> bool | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def versions(ft_info: dict | None, torch_module=None) -> dict:
    import numpy
    v = {"python": platform.python_version(), "numpy": numpy.__version__,
         "torch": getattr(torch_module, "__version__", None),
         "fusedtrain": ft_info.get("version") if ft_info else None}
    return v


def cpu_device() -> dict:
    return {"kind": "cpu", "model": cpu_model(), "cores": usable_cores(),
            "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "llc_bytes": last_level_cache_bytes(), "hostname": platform.node(),
            "os": platform.platform()}


def cpu_pressure() -> dict | None:
    """Linux PSI for CPU: the share of time some task waited for a core (avg10/avg60, percent).

    Recorded with every result because a busy neighbour on a 2-core VM turns each OpenMP
    barrier into a wait for a descheduled thread, which can slow a many-kernel baseline 10x.
    """
    try:
        with open("/proc/pressure/cpu") as f:
            line = f.readline()
    except OSError:
        return None
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return {k: float(fields[k]) for k in ("avg10", "avg60", "avg300") if k in fields}


def write_json(path: Path, doc: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # an interrupted run never leaves half a results file behind
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 right_align: Sequence[bool] | None = None) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = list(right_align) if right_align is not None else [False] * len(headers)

    def line(r):
        return "  ".join(c.rjust(w) if right[i] else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def log(msg: str) -> None:
    # Progress goes to stderr so stdout holds only the result table.
    print(msg, file=sys.stderr, flush=True)
