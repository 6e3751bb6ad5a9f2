"""The CUDA benchmark main every normalization script shares (bench_bn_cuda.py, bench_ln_cuda.py):
options, the GPU session, each workload in float32 and bfloat16, a table, the geometric-mean
fwd+bwd speedup and bench/results/cuda_<name>_<gpu>.json."""

from __future__ import annotations

import common
from bench_optim_cuda import geomean_speedup, norm_bench_session, write_cuda_results


def main(doc, argv, name, workloads, measure, table):
    """A normalization bench's main: --quick, --steps (20), --json; measure(session, workload,
    dtype) times each of workloads(quick) into a row with a fwd+bwd speedup; table(rows) gives
    (headers, cells, numeric columns). 0, also without a GPU (nothing to time)."""
    args, session = norm_bench_session(doc, argv)
    if session is None:
        return 0
    torch, ft, steps, _, copy_bw = session
    rows = []
    for workload in workloads(args.quick):
        for dtype in (torch.float32, torch.bfloat16):
            rows.append(measure(session, workload, dtype))
            torch.cuda.empty_cache()
    print(common.format_table(*table(rows)))
    geomean = geomean_speedup(rows)
    write_cuda_results(name, args, torch, ft, copy_bw, steps, geomean_fwd_bwd_speedup=geomean,
                       rows=rows)
    return 0
