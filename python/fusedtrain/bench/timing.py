"""Wall-clock timing of competing implementations of the same work, taking turns."""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    repeats: int


def _median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def time_turns(fns: Dict[str, Callable[[], object]], *, budget_s: float, min_repeats: int = 3,
               max_repeats: int = 200, warmup: int = 2,
               sync: Optional[Callable[[], object]] = None, lead_in_below_s: float = 0.0,
               slow_from_warmup: bool = True) -> Dict[str, object]:
    """Median and minimum seconds per call of each fn, or the exception it raised.

    The implementations take turns, round after round, because on a shared machine the
    bandwidth drifts within seconds: taking turns exposes each to the same drift, so their ratio
    means something even when absolute times move. Each gets about `budget_s` of timed calls.
    `sync` (CUDA) runs before the clock is read so a sample covers the work, not the launch.

    `lead_in_below_s`: an implementation whose calls take less gets one untimed call at the start
    of each turn. The other implementation's worker threads may still be spinning (OpenMP waits
    ~ms before sleeping) and steal a core from the first call of a turn; for short calls that
    call would be a sample of the neighbour, not of the kernel.
    `slow_from_warmup`: an implementation whose single call outlasts `budget_s` keeps its warm-up
    calls as its samples instead of taking `min_repeats` more (a baseline stalled by a busy
    machine can take seconds a call).
    """
    sync = sync or (lambda: None)
    out: Dict[str, object] = {}
    estimate, slow = {}, {}
    for name, fn in fns.items():
        try:
            warm = []
            for _ in range(max(1, warmup)):
                t0 = time.perf_counter()
                fn()
                sync()
                warm.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - a failing implementation is a cell, not the end
            out[name] = e
            continue
        # The first call may pay page faults or lazy allocation: not an estimate of the rest.
        settled = warm[1:] or warm
        if slow_from_warmup and min(settled) > budget_s:
            slow[name] = settled
        else:
            estimate[name] = min(settled)
    for name, xs in slow.items():
        out[name] = Timing(_median(xs), min(xs), len(xs))
    if not estimate:
        return out
    want = {n: max(min_repeats, min(max_repeats, int(budget_s / max(t, 1e-7))))
            for n, t in estimate.items()}
    rounds = min(want.values())
    per_round = {n: -(-c // rounds) for n, c in want.items()}
    samples = {n: [] for n in want}
    names = list(want)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside a timed call belongs to neither implementation
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if name in out:
                    continue
                try:
                    if estimate[name] < lead_in_below_s:
                        fns[name]()
                        sync()
                    for _ in range(per_round[name]):
                        t0 = time.perf_counter()
                        fns[name]()
                        sync()
                        samples[name].append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    out[name] = e
    finally:
        if enabled:
            gc.enable()
    for name, xs in samples.items():
        if name not in out:
            out[name] = Timing(_median(xs), min(xs), len(xs))
    return out
