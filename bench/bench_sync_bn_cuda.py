"""Times ft.torch.SyncBatchNorm's synchronized path on one GPU over NCCL (a process group of this
process alone: NCCL moves the rows, nobody else waits) against the plain batch norm, forward +
backward in training, (32, 256, 28, 28) per rank as in the CPU bench, NCHW and NHWC, float32 and
bfloat16. Rows: ft.torch.BatchNorm2d and torch.nn.BatchNorm2d (no communication), ours
synchronized (its one all_gather forward and one all_reduce backward, the host merge with its
device sync), and torch's own synchronized function on the same group where this torch exposes
it. What is left of the synchronized step over the plain one is the single-rank overhead of
synchronization. Writes bench/results/cuda_sync_bn_<gpu>.json."""

from __future__ import annotations

import atexit
import socket
import sys

import common
import norm_bench_cuda
from bench_optim_cuda import cuda_timer

SHAPE = (32, 256, 28, 28)
_group = []


def workloads(quick):
    return [("32x256x28x28", SHAPE, "nchw"), ("32x256x28x28", SHAPE, "nhwc")]


def _nccl_group(torch):
    """The process group of this process alone over NCCL, made once."""
    if not _group:
        dist = torch.distributed
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=1)
        atexit.register(dist.destroy_process_group)
        _group.append(dist.group.WORLD)
    return _group[0]


def _torch_sync(torch, group):
    """torch's synchronized batch norm function on `group` (the module takes its local path
    on one rank), or None where this torch does not expose it."""
    try:
        from torch.nn.modules._functions import SyncBatchNorm as function
    except ImportError:
        return None

    def call(x, m):
        return function.apply(x, m.weight, m.bias, m.running_mean, m.running_var, m.eps, 0.1,
                              group, 1)
    return call


def measure(session, workload, dtype):
    torch, ft, steps, flush, _ = session
    from fusedtrain.torch.sync_batch_norm import _SyncBatchNormFunction
    group = _nccl_group(torch)
    label, shape, layout = workload
    C = shape[1]
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn_like(x)
    mods = {"local ft": ft.torch.BatchNorm2d(C).cuda(), "local torch": torch.nn.BatchNorm2d(C).cuda(),
            "sync ft": ft.torch.SyncBatchNorm(C).cuda(), "sync torch": torch.nn.BatchNorm2d(C).cuda()}
    forward = {name: (lambda m=m: m(x)) for name, m in mods.items()}
    forward["sync ft"] = lambda m=mods["sync ft"]: _SyncBatchNormFunction.apply(
        x, m.weight, m.bias, m.running_mean, m.running_var, 0.1, m.eps, group)
    torch_sync = _torch_sync(torch, group)
    if torch_sync is None:
        del forward["sync torch"]
    else:
        forward["sync torch"] = lambda m=mods["sync torch"]: torch_sync(x, m)
    row = {"shape": label, "layout": layout, "dtype": str(dtype).replace("torch.", ""),
           "ranks": 1, "backend": "nccl"}
    for name, f in forward.items():
        def fwd_bwd(f=f):
            x.grad = None
            f().backward(dy)
        try:
            gpu, host = cuda_timer(torch, fwd_bwd, steps, flush)
        except (RuntimeError, ValueError, TypeError) as e:   # torch's function refusing this input
            row[name] = {"error": str(e).splitlines()[0]}
            continue
        row[name] = {"gpu_ms": gpu * 1e3, "host_ms": host * 1e3}
    ours, plain = row["sync ft"]["gpu_ms"], row["local ft"]["gpu_ms"]
    row["sync_overhead_ms"] = ours - plain
    row["sync_over_local_ft"] = ours / plain
    theirs = row.get("sync torch", {}).get("gpu_ms") or row["local torch"]["gpu_ms"]
    row["fwd+bwd"] = {"speedup": theirs / ours, "vs": "sync torch" if "gpu_ms" in
                      row.get("sync torch", {}) else "local torch"}
    common.log(f"{label} {layout} {row['dtype']}: sync {ours:.3f} ms = local {plain:.3f} ms + "
               f"{ours - plain:.3f} ms; x{row['fwd+bwd']['speedup']:.2f} vs {row['fwd+bwd']['vs']}")
    return row


def table(rows):
    def ms(name):
        return lambda r: f"{r[name]['gpu_ms']:.3f}" if "gpu_ms" in r.get(name, {}) else "-"
    columns = [("shape", lambda r: r["shape"]), ("layout", lambda r: r["layout"]),
               ("dtype", lambda r: r["dtype"])]
    columns += [(f"{name} ms", ms(name)) for name in ("local ft", "local torch", "sync ft", "sync torch")]
    columns += [("sync / local", lambda r: f"{r['sync_over_local_ft']:.2f}"),
                ("sync host ms", lambda r: f"{r['sync ft']['host_ms']:.3f}"),
                ("x torch", lambda r: f"{r['fwd+bwd']['speedup']:.2f}")]
    return ([c[0] for c in columns], [[f(r) for _, f in columns] for r in rows],
            [i >= 3 for i in range(len(columns))])


def main(argv=None):
    return norm_bench_cuda.main(__doc__, argv, "sync_bn", workloads, measure, table)


if __name__ == "__main__":
    sys.exit(main())
