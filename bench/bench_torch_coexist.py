"""A fusedtrain step right after a PyTorch op, against the same step back to back.

PyTorch's OpenMP workers keep spinning for milliseconds after each parallel region; in a training
loop our step always follows torch's backward, so that is when it has to be fast (Note [sharing
OpenMP] in csrc/core/parallel.cpp). Times a 16M-element float32 AdamW step, taking turns between:
back to back (after another step), right after a 2-thread torch op, and after the op plus a 20 ms
pause (the spinners asleep). Each threads backend runs in its own process: "openmp" (the default
once torch is loaded) and "pool" (FUSEDTRAIN_SHARE_OPENMP=0).

    python bench/bench_torch_coexist.py [--rounds 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

MODES = ("back-to-back", "after torch op", "after torch op + 20 ms")


def measure(rounds: int, numel: int) -> dict:
    import numpy as np
    import torch

    import fusedtrain as ft

    torch.set_num_threads(2)
    ft.set_num_threads(2)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(numel, dtype=np.float32)
    g = rng.standard_normal(numel, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    a, b = torch.randn(1 << 20), torch.randn(1 << 20)

    def step():
        ft.adamw_([p], [g], [m], [v], step=2, lr=1e-6)

    step()
    times = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            if mode == "back-to-back":
                step()
            else:
                torch.mul(a, b).sum()
                if mode.endswith("20 ms"):
                    time.sleep(0.02)
            t0 = time.perf_counter()
            step()
            times[mode].append(time.perf_counter() - t0)
    return {"backend": ft.info()["threads_backend"],
            "median_ms": {k: 1e3 * statistics.median(t) for k, t in times.items()},
            "p10_ms": {k: 1e3 * sorted(t)[len(t) // 10] for k, t in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--numel", type=int, default=16 * 2 ** 20)
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(repr(measure(args.rounds, args.numel)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import cpu_device, format_table, utc_now_iso, write_json

    results = []
    for share in ("1", "0"):
        env = {**os.environ, "FUSEDTRAIN_SHARE_OPENMP": share}
        out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds),
                              "--numel", str(args.numel)], env=env, check=True,
                             capture_output=True, text=True).stdout
        results.append(eval(out.strip().splitlines()[-1], {}))  # a dict repr from our child
    rows = [[r["backend"]] + [f"{r['median_ms'][k]:.2f} ({r['p10_ms'][k]:.2f})" for k in MODES]
            for r in results]
    print(format_table(["backend"] + [f"{k} ms, median (p10)" for k in MODES], rows))
    if args.json:
        write_json(args.json, {"date": utc_now_iso(), "device": cpu_device(), "numel": args.numel,
                               "rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
