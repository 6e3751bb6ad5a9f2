"""CPU benchmark of the full-batch optimizers: time per L-BFGS iteration, closure excluded,
ft.torch.LBFGS against torch.optim.LBFGS on the same problem in the same run.

Workload (issue defaults): 200 float32 tensors of 10,000 params, a separable quadratic
f = 1/2 sum c (x - x*)^2 with curvatures c spread over four decades, history 10 and 100, with
and without the strong-Wolfe line search. Both optimizers first fill their history (history + 1
iterations), then take turns stepping `--iters` iterations at a time; the closure's own time is
measured inside it and subtracted, so the figure is the optimizer's work per iteration
(directions, history, line-search bookkeeping, param moves). Stopping tolerances are 0 so every
step runs all its iterations.

    python bench/bench_fullbatch_cpu.py [--tensors 200] [--numel 10000] [--rounds 7]

Writes bench/results/cpu_fullbatch_<cpu>.json and prints a table; the target is >= 2x.

Each row also gives a floor (CPU only): the time to move the least any L-BFGS iteration must, at
the read bandwidth measured in the same run (fusedtrain's dot pass over two arrays far larger than
the caches): the history read twice, the new pair (s, y) written, the gradient read and the params
read and written, 4 * history + 5 vectors. Any L-BFGS reads its history at least twice an
iteration: the new gradient must meet every pair before any coefficient of the direction is
known, and the direction is a combination of every pair (Note [two reads of the history] in
csrc/math/fullbatch.h). Writes are counted at the read bandwidth, so the floor is low. Torch's
time over it bounds the speedup any implementation can reach with the history in memory.
``--device cuda`` runs the same on CUDA tensors (bench_fullbatch_cuda.py).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

import common


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--numel", type=int, default=10_000)
    ap.add_argument("--histories", default="10,100")
    ap.add_argument("--iters", type=int, default=5, help="iterations per timed step")
    ap.add_argument("--rounds", type=int, default=7, help="timed steps per optimizer")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts for both libraries, one table each "
                         "(default: their defaults)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="output path (default: bench/results/...)")
    return ap.parse_args(argv)


class Problem:
    """f = 1/2 sum c (x - x*)^2 over a list of tensors; the closure sets .grad in place and
    accumulates its own wall time (synchronized on CUDA)."""

    def __init__(self, torch, tensors, numel, device, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.torch = torch
        self.device = device
        self.c = [torch.exp(torch.empty(numel).uniform_(-4.6, 4.6, generator=gen)).to(device)
                  for _ in range(tensors)]
        self.target = [torch.randn(numel, generator=gen).to(device) for _ in range(tensors)]
        self.x0 = [torch.randn(numel, generator=gen).to(device) for _ in range(tensors)]
        self.seconds = 0.0

    def params(self):
        ps = [x.clone().requires_grad_(True) for x in self.x0]
        for p in ps:
            p.grad = self.torch.zeros_like(p)
        return ps

    def closure(self, params):
        torch = self.torch
        if self.device == "cpu":
            # NumPy on the tensors' own memory, elementwise and reductions only (no BLAS call):
            # single-threaded, so no thread pool (torch's OpenMP, OpenBLAS) is left spinning
            # after the closure to take a core from whichever optimizer runs next on a 2-core
            # machine, and neither optimizer finds a warm pool.
            views = [(p.detach().numpy(), p.grad.numpy(), c.numpy(), xs.numpy())
                     for p, c, xs in zip(params, self.c, self.target)]

            def f():
                t0 = time.perf_counter()
                total = 0.0
                for p, g, c, xs in views:
                    np.subtract(p, xs, out=g)
                    total += float(np.sum(g * g * c))
                    np.multiply(g, c, out=g)
                self.seconds += time.perf_counter() - t0
                return torch.tensor(0.5 * total)
            return f

        def f():
            self._sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                total = 0.0
                for p, c, xs in zip(params, self.c, self.target):
                    torch.sub(p, xs, out=p.grad)
                    total = total + torch.dot(p.grad, p.grad * c)
                    p.grad.mul_(c)
                loss = total * 0.5
            self._sync()
            self.seconds += time.perf_counter() - t0
            return loss
        return f

    def _sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def read_bandwidth(ft, mib=512, repeats=5):
    """Bytes per second the CPU reads at, measured as fusedtrain's dot pass over two float32
    arrays of ``mib`` MiB each (the best of ``repeats``)."""
    from fusedtrain import _C
    n = mib * (1 << 20) // 4
    a, b = np.ones(n, dtype=np.float32), np.ones(n, dtype=np.float32)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        _C.fullbatch_dots([a], [[b]])
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def make(torch, ft, kind, params, history, line_search):
    cls = torch.optim.LBFGS if kind == "torch" else ft.torch.LBFGS
    return cls(params, lr=1.0, max_iter=history + 1, history_size=history,
               tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=line_search)


def iterations(opt, kind):
    if kind == "torch":
        return opt.state[opt._params[0]].get("n_iter", 0)
    return opt._ft.n_iter


def run_case(torch, ft, problem, history, line_search, args):
    opts, params = {}, {}
    for kind in ("torch", "fusedtrain"):
        params[kind] = problem.params()
        opts[kind] = make(torch, ft, kind, params[kind], history, line_search)
        opts[kind].step(problem.closure(params[kind]))          # fill the history
        opts[kind].param_groups[0]["max_iter"] = args.iters
        opts[kind].param_groups[0]["max_eval"] = args.iters * 25
    per_iter = {"torch": [], "fusedtrain": []}
    for r in range(args.rounds):
        order = ("torch", "fusedtrain") if r % 2 == 0 else ("fusedtrain", "torch")
        for kind in order:
            opt = opts[kind]
            n0 = iterations(opt, kind)
            problem.seconds = 0.0
            problem._sync()
            t0 = time.perf_counter()
            opt.step(problem.closure(params[kind]))
            problem._sync()
            wall = time.perf_counter() - t0
            n = iterations(opt, kind) - n0
            per_iter[kind].append((wall - problem.seconds) / max(n, 1))
    med = {k: statistics.median(v) for k, v in per_iter.items()}
    diff = max(float((a - b).detach().abs().max())
               for a, b in zip(params["torch"], params["fusedtrain"]))
    return {"history": history, "line_search": line_search or "none",
            "torch_ms": med["torch"] * 1e3, "fusedtrain_ms": med["fusedtrain"] * 1e3,
            "speedup": med["torch"] / med["fusedtrain"],
            "samples_ms": {k: [s * 1e3 for s in v] for k, v in per_iter.items()},
            "max_param_difference": diff}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import fusedtrain as ft
    problem = Problem(torch, args.tensors, args.numel, args.device)
    rows = []
    for threads in ([int(t) for t in args.threads.split(",")] if args.threads else [None]):
        if threads:
            torch.set_num_threads(threads)
            ft.set_num_threads(threads)
        read_bw = read_bandwidth(ft) if args.device == "cpu" else None
        for history in [int(h) for h in args.histories.split(",")]:
            for line_search in (None, "strong_wolfe"):
                row = run_case(torch, ft, problem, history, line_search, args)
                row["threads"] = {"fusedtrain": ft.get_num_threads(),
                                  "torch": torch.get_num_threads()}
                floor = ""
                if read_bw:
                    vector_bytes = args.tensors * args.numel * 4
                    row["read_gb_per_s"] = read_bw / 1e9
                    row["floor_ms"] = (4 * history + 5) * vector_bytes / read_bw * 1e3
                    row["speedup_ceiling"] = row["torch_ms"] / row["floor_ms"]
                    floor = (f"; floor {row['floor_ms']:.2f} ms at {read_bw / 1e9:.1f} GB/s, "
                             f"ceiling {row['speedup_ceiling']:.2f}x")
                rows.append(row)
                print(f"threads {ft.get_num_threads()} history {history:4d} "
                      f"{row['line_search']:>12}: torch {row['torch_ms']:8.2f} ms  fusedtrain "
                      f"{row['fusedtrain_ms']:8.2f} ms  {row['speedup']:5.2f}x  (params differ "
                      f"by {row['max_param_difference']:.1e}{floor})", flush=True)
    target = 2.0 if args.device == "cpu" else 3.0
    doc = {
        "benchmark": "fullbatch_lbfgs", "date": common.utc_now_iso(), "git_sha": common.git_sha(),
        "versions": common.versions(ft.info(), torch),
        "device": common.cpu_device() if args.device == "cpu" else
        {"name": torch.cuda.get_device_name(), "kind": "cuda"},
        "workload": {"tensors": args.tensors, "numel": args.numel, "dtype": "float32",
                     "iters_per_step": args.iters, "rounds": args.rounds},
        "target_speedup": target,
        "rows": rows,
        "meets_target": all(r["speedup"] >= target for r in rows),
        "cpu_pressure": common.cpu_pressure() if args.device == "cpu" else None,
    }
    if args.device == "cpu":
        default = common.RESULTS_DIR / f"cpu_fullbatch_{common.slug(common.cpu_model())}.json"
    else:
        default = common.RESULTS_DIR / f"cuda_fullbatch_{common.slug(doc['device']['name'])}.json"
    path = common.write_json(args.json or default, doc)
    print(common.format_table(
        ["threads", "history", "line search", "torch ms/iter", "ours ms/iter", "speedup",
         "floor ms/iter", "ceiling"],
        [[r["threads"]["fusedtrain"], r["history"], r["line_search"], f"{r['torch_ms']:.2f}",
          f"{r['fusedtrain_ms']:.2f}", f"{r['speedup']:.2f}x",
          f"{r['floor_ms']:.2f}" if "floor_ms" in r else "-",
          f"{r['speedup_ceiling']:.2f}x" if "floor_ms" in r else "-"] for r in rows]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
