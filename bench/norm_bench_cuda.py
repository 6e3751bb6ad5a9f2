"""The CUDA benchmark main every normalization script shares (bench_bn_cuda.py, bench_ln_cuda.py):
options, the GPU session, each workload in float32 and bfloat16, a table, the geometric-mean
fwd+bwd speedup and bench/results/cuda_<name>_<gpu>.json."""

from __future__ import annotations

import common
from bench_optim_cuda import cuda_timer, geomean_speedup, norm_bench_session, write_cuda_results

# Where the benches put their tensors: "cuda", or "cpu" for tests/test_cuda_bench_dry_run.py,
# which runs their measuring code on the CPU with stand-ins for the CUDA timing calls.
DEVICE = "cuda"

# Note [row kernel switches]: each latency measure of the row kernels, turned off.  The layer/RMS
# norm rows kernels have three (the staged rows: the backward's, Note [staged row]); batch norm's channels-last and 2-d passes and group norm's
# channels-last ones one, taken by 2-byte values only (Note [rows walk prefetch]).  Batch norm's
# elementwise passes (every layout) and channels-last group norm's walk their grid from its last
# block (Note [second pass in reverse]); "second_pass_in_order" times them in index order.
ROW_SWITCHES = (("no_l2_prefetch", {"l2_prefetch": False}),
                ("no_shared_column_sums", {"shared_column_sums": False}),
                ("no_staged_rows", {"staged_rows": False}))
ROWS_WALK_SWITCHES = (("no_rows_walk_prefetch", {"rows_walk_prefetch": False}),)
ORDER_SWITCHES = (("second_pass_in_order", {"reverse_second_pass": False}),)
# Every normalization kernel launches as a dependent of the one before it on sm_90 (Note
# [dependent launch]); "no_dependent_launch" times them launched as usual.
LAUNCH_SWITCHES = (("no_dependent_launch", {"dependent_launch": False}),)


def switch_times(torch, ft, both, steps, flush, switches):
    """Our fwd+bwd ms with every latency measure on, then with each of `switches` off (same data,
    same run): {"on_ms": ..., "<name>_ms": ...}."""
    out = {"on_ms": cuda_timer(torch, both, steps, flush)[0] * 1e3}
    for name, off in switches:
        before = ft._C._cuda_row_kernel_options(**off)
        try:
            out[name + "_ms"] = cuda_timer(torch, both, steps, flush)[0] * 1e3
        finally:
            ft._C._cuda_row_kernel_options(**before)
    return out


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
