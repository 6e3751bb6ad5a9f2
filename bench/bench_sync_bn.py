"""Times ft.torch.SyncBatchNorm (forward+backward, 2 ranks, gloo on loopback, CPU) against the
local batch norm plus the two collectives it issues, and splits its time into its parts.

Each rank holds (32, 256, 28, 28) float32 (NCHW) and runs on one thread (two ranks on two
cores). Every sample starts behind a barrier, and a sample's time is the slowest rank's (a
synchronized step waits for it). Rows:
- local ft / local torch: ft.torch.BatchNorm2d and torch.nn.BatchNorm2d, training fwd+bwd, no
  communication (the cost SyncBatchNorm is held to, plus the collectives);
- collectives: the all_gather of the (2C+1) float64 statistics and the all_reduce of the 2C
  float64 sums, alone;
- sync: ft.torch.SyncBatchNorm fwd+bwd;
- sync path, 1-rank group: the same computation and collectives on a group of one rank, i.e.
  without waiting for the other rank at the two collectives;
- the parts of sync, each alone: the statistics kernel, the normalization (evaluation
  kernel), the backward's two halves: the gradient sums kernel and dx from the group's sums
  (Note [given sums] in csrc/core/norm_args.h).
Writes bench/results/cpu_sync_bn_<cpu>.json. torch.nn.SyncBatchNorm has no CPU path, so it has
no row here.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import common

SHAPE = (32, 256, 28, 28)
WORLD = 2


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (for debugging)")
    ap.add_argument("--repeats", type=int, default=None, help="timed samples per row (default 60)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default bench/results/cpu_sync_bn_<cpu-model>.json)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 60
    return args


def _calls(rank):
    """The timed functions of this rank, by row name (the same on every rank)."""
    import torch
    import torch.distributed as dist
    import fusedtrain as ft
    from fusedtrain.batch_norm import _grad_sums_into, _stats_into

    C = SHAPE[1]
    g = torch.Generator().manual_seed(rank)
    x = (torch.randn(SHAPE, generator=g) * 2 + 0.5).requires_grad_(True)
    dy = torch.randn(SHAPE, generator=g)
    mods = {"local ft": ft.torch.BatchNorm2d(C), "local torch": torch.nn.BatchNorm2d(C),
            "sync": ft.torch.SyncBatchNorm(C)}

    def fwd_bwd(m):
        def run():
            x.grad = None
            m(x).backward(dy)
        return run

    row = torch.zeros(2 * C + 1, dtype=torch.float64)
    rows = torch.empty(WORLD, 2 * C + 1, dtype=torch.float64)
    sums = torch.zeros(2 * C, dtype=torch.float64)

    def collectives():
        dist.all_gather(list(rows.unbind(0)), row)
        dist.all_reduce(sums)

    xd = x.detach()
    w, b = mods["sync"].weight.detach(), mods["sync"].bias.detach()
    mean, var, _ = ft.batch_norm_stats(xd)
    _, save_mean, save_invstd = ft.batch_norm_forward(xd, w, b, mean, var, training=False)
    _, t, s = ft.batch_norm_backward(dy, xd, w, save_mean, save_invstd)
    group_sums = (s.double() * WORLD, t.double() * WORLD, WORLD * xd.numel() // C)

    def stats():
        _stats_into(xd, row[:C], row[C:2 * C], channels_last=False, fn="bench")

    def normalize():
        ft.batch_norm_forward(xd, w, b, mean, var, training=False)

    def grad_sums():
        _grad_sums_into(dy, xd, save_mean, save_invstd, sums[C:], sums[:C], channels_last=False)

    def dx_from_sums():
        ft.batch_norm_backward(dy, xd, w, save_mean, save_invstd, sums=group_sums)

    calls = {name: fwd_bwd(m) for name, m in mods.items()}
    # The synchronized step's computation without the wait for the other rank: its autograd
    # function on a group of this rank alone (the module would take the local path there).
    from fusedtrain.torch.sync_batch_norm import _SyncBatchNormFunction
    alone = [dist.new_group([r]) for r in range(WORLD)][rank]
    m = mods["sync"]

    def sync_alone():
        x.grad = None
        _SyncBatchNormFunction.apply(x, m.weight, m.bias, m.running_mean, m.running_var, 0.1,
                                     m.eps, alone).backward(dy)
    calls["sync path, 1-rank group"] = sync_alone
    calls.update({"collectives": collectives, "part: statistics kernel": stats,
                  "part: normalize (eval kernel)": normalize,
                  "part: gradient sums kernel": grad_sums,
                  "part: dx from the group's sums": dx_from_sums})
    return calls


def _rank(rank, port, repeats, out):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch
    import torch.distributed as dist
    import fusedtrain as ft
    torch.set_num_threads(1)
    ft.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        calls = _calls(rank)
        for fn in calls.values():           # warm-up: page faults, lazy allocations
            dist.barrier()
            fn()
        samples = {name: [] for name in calls}
        names = list(calls)
        for r in range(repeats):
            # Rotate the order so every row sees the same drift of a shared machine.
            for name in names[r % len(names):] + names[:r % len(names)]:
                dist.barrier()
                t0 = time.perf_counter()
                calls[name]()
                samples[name].append(time.perf_counter() - t0)
        mine = torch.tensor([samples[n] for n in names], dtype=torch.float64)
        slowest = mine.clone()
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if rank == 0:
            out.put({n: slowest[i].tolist() for i, n in enumerate(names)})
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.multiprocessing as mp
    import fusedtrain as ft
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    pressure_start = common.cpu_pressure()
    started = time.perf_counter()
    common.log(f"2 ranks, {SHAPE} float32 per rank, {args.repeats} samples per row ...")
    mp.start_processes(_rank, args=(port, args.repeats, out), nprocs=WORLD,
                       start_method="spawn")
    samples = out.get()
    rows = []
    for name, xs in samples.items():
        t = common.Timing(median_s=common._median(xs), min_s=min(xs), repeats=len(xs))
        rows.append({"row": name, "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3,
                     "repeats": t.repeats})
    # Medians and minima both: on a shared 2-core machine a synchronized step waits for the
    # slower rank at every collective, so the medians carry the neighbours' load; the minima
    # are the machine's own cost.
    summary = {}
    for stat in ("median_ms", "min_ms"):
        by = {r["row"]: r[stat] for r in rows}
        budget = by["local ft"] + by["collectives"]
        summary[stat] = {
            "sync": by["sync"], "local_ft": by["local ft"], "local_torch": by["local torch"],
            "collectives": by["collectives"], "local_ft_plus_collectives": budget,
            "sync_over_local_ft_plus_collectives": by["sync"] / budget,
            "parts_plus_collectives": by["collectives"] + sum(
                v for k, v in by.items() if k.startswith("part:")),
        }
    headers = ["row", "median ms", "min ms", "samples"]
    table = [[r["row"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", r["repeats"]]
             for r in rows]
    print(common.format_table(headers, table, [False, True, True, True]))
    for stat, s in summary.items():
        print(f"{stat[:-3]:6s}: sync fwd+bwd {s['sync']:.2f} ms = "
              f"{s['sync_over_local_ft_plus_collectives']:.2f} x (local ft fwd+bwd "
              f"{s['local_ft']:.2f} + collectives {s['collectives']:.2f} ms); parts + "
              f"collectives {s['parts_plus_collectives']:.2f} ms")
    ft_info = ft.info()
    doc = {
        "suite": "cpu_sync_batch_norm",
        "date": common.utc_now_iso(),
        "git_sha": common.git_sha(),
        "git_dirty": common.git_dirty(),
        "device": common.cpu_device(),
        "versions": common.versions(ft_info, torch),
        "setup": {"world_size": WORLD, "backend": "gloo (loopback)", "shape_per_rank": SHAPE,
                  "dtype": "float32", "threads_per_rank": 1,
                  "sample": "slowest rank, each sample behind a barrier"},
        "cpu_pressure": {"start": pressure_start, "end": common.cpu_pressure()},
        "wall_s": time.perf_counter() - started,
        "rows": rows,
        "summary": summary,
    }
    path = args.json or common.RESULTS_DIR / f"cpu_sync_bn_{common.slug(common.cpu_model())}.json"
    common.log(f"wrote {common.write_json(path, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
