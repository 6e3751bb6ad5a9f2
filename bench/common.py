"""What the benchmark scripts add to the package's bench (fusedtrain.bench): its timing, machine
description, JSON writer and tables, with the scripts' defaults, plus the git state and file
names of bench/results/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

from fusedtrain.bench.machine import (cpu_model, cpu_pressure, last_level_cache_bytes,  # noqa: E402,F401
                                      usable_cores)
from fusedtrain.bench.machine import cpu_device as _cpu_device  # noqa: E402
from fusedtrain.bench.machine import versions as _versions  # noqa: E402
from fusedtrain.bench.report import format_table, utc_now_iso, write_json  # noqa: E402,F401
from fusedtrain.bench.timing import Timing, _median, time_turns  # noqa: E402,F401

# Calls faster than this get an untimed lead-in call at the start of each turn.
_LEAD_IN_BELOW_S = 0.05


def time_interleaved(fns: dict[str, Callable[[], object]], *, budget_s: float, min_repeats: int = 5,
                     max_repeats: int = 200, warmup: int = 3,
                     sync: Callable[[], object] | None = None) -> dict[str, Timing | Exception]:
    """fusedtrain.bench.timing.time_turns the way the scripts have always timed (a lead-in call
    per turn for short calls; `min_repeats` samples even of a call longer than the budget), so
    their numbers stay comparable with the results recorded in bench/results/."""
    return time_turns(fns, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats,
                      warmup=warmup, sync=sync, lead_in_below_s=_LEAD_IN_BELOW_S,
                      slow_from_warmup=False)


def time_calls(fn: Callable[[], object], **kw) -> Timing:
    """time_interleaved for a single implementation; raises what fn raises."""
    out = time_interleaved({"fn": fn}, **kw)["fn"]
    if isinstance(out, Exception):
        raise out
    return out


def cpu_device() -> dict:
    return _cpu_device(detail=True)


def versions(ft_info: dict | None, torch_module=None) -> dict:
    return _versions(ft_info.get("version") if ft_info else None, torch_module)


def cpu_session(torch_module, no_torch: bool):
    """(torch to compare with or None, cores, ft.info()): both libraries on the same cores."""
    import fusedtrain as ft
    use = torch_module if torch_module is not None and not no_torch else None
    cores = usable_cores()
    if use is not None:
        use.set_num_threads(cores)
    return use, cores, ft.info()


def cpu_doc(benchmark: str, ft_info: dict, torch_module=None) -> dict:
    """The leading fields of a CPU script's results file: what ran, when, on what, with which
    versions and threads."""
    return {"benchmark": benchmark, "date": utc_now_iso(), "git_sha": git_sha(),
            "git_dirty": git_dirty(), "device": cpu_device(),
            "versions": versions(ft_info, torch_module), "fusedtrain_info": ft_info,
            "threads": {"fusedtrain": ft_info.get("num_threads"),
                        "torch": torch_module.get_num_threads() if torch_module else None}}


def write_cpu_results(benchmark: str, stem: str, ft_info: dict, torch_module, json_path=None,
                      **fields) -> Path:
    """cpu_doc(benchmark, ...) plus `fields`, written to json_path, else to
    bench/results/<stem>_<cpu>.json; logs and returns the path."""
    doc = cpu_doc(benchmark, ft_info, torch_module)
    doc.update(fields)
    path = write_json(json_path or RESULTS_DIR / f"{stem}_{slug(doc['device']['model'])}.json", doc)
    log(f"wrote {path}")
    return path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _git(*args) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def git_sha() -> str:
    out = _git("rev-parse", "HEAD")
    sha = out.stdout.strip() if out is not None else ""
    return sha if out is not None and out.returncode == 0 and sha else "unknown"


def git_dirty() -> bool | None:
    out = _git("status", "--porcelain", "--untracked-files=no")
    return bool(out.stdout.strip()) if out is not None and out.returncode == 0 else None


def log(msg: str) -> None:
    # Progress goes to stderr so stdout holds only the result table.
    print(msg, file=sys.stderr, flush=True)
