"""Times every fusedtrain optimizer rule on CPU against torch.optim (for-loop, foreach, fused) in one run."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import common
from membw import measure_bandwidth, measure_torch_triad
from fusedtrain.bench.optim import cpu_data
from optim_rules import RULES, RULES_BY_NAME, TORCH_IMPLS, make_ft_step, make_torch_optimizer

try:
    import torch
except ImportError:  # fusedtrain alone is still worth timing
    torch = None


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    tensors: int
    size: int

    @property
    def numel(self) -> int:
        return self.tensors * self.size


WORKLOADS = (
    Workload("16Mx1", "16M x 1", 1, 16 << 20),          # one big tensor: pure bandwidth
    Workload("256x64K", "256 x 64K", 256, 64 << 10),    # same bytes, split like a mid-size model
    Workload("1000x1K", "1000 x 1K", 1000, 1 << 10),    # many small tensors: per-tensor overhead
)
WORKLOADS_BY_NAME = {w.name.lower(): w for w in WORKLOADS}

# The goals fusedtrain is measured against (design.md section 6; issue targets).
TRIAD_FRACTION = 0.90
SMALL_TENSOR_SPEEDUP = 3.0
SMALL_TENSOR_RULES = ("adam", "adamw", "momentum", "adagrad")
FOREACH_SPEEDUP = 4.0
FOREACH_RULES = ("rmsprop", "adadelta")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="few repeats and a smaller bandwidth probe (under a minute); for debugging")
    ap.add_argument("--rules", default=",".join(r.name for r in RULES),
                    help="comma-separated subset of: " + ", ".join(r.name for r in RULES))
    ap.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS),
                    help="comma-separated subset of: " + ", ".join(w.name for w in WORKLOADS))
    ap.add_argument("--json", type=Path, default=None,
                    help="results file (default bench/results/cpu_optim_<cpu-model>.json)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed calls per table cell (default 1.0, --quick 0.05)")
    ap.add_argument("--no-torch", action="store_true", help="time fusedtrain only")
    args = ap.parse_args(argv)

    def pick(text, table, what):
        out = []
        for name in filter(None, (s.strip().lower().replace(" ", "") for s in text.split(","))):
            if name not in table:
                ap.error(f"unknown {what} {name!r}; choose from {', '.join(table)}")
            out.append(table[name])
        return out

    args.rules = pick(args.rules, RULES_BY_NAME, "rule")
    args.workloads = pick(args.workloads, WORKLOADS_BY_NAME, "workload")
    if args.budget is None:
        args.budget = 0.05 if args.quick else 1.0
    return args


def make_data(w: Workload, seed: int = 0):
    return cpu_data([w.size] * w.tensors, "float32", seed)


def build_ft(ft, rule, params0, grads):
    """fusedtrain's step on copies of the params; also returns the state arrays it allocated, in
    allocation order (each state list over all params), for build_torch to share."""
    params = [p.copy() for p in params0]
    state = []

    def zeros_like(p):
        state.append(np.zeros_like(p))
        return state[-1]
    return params, make_ft_step(ft, rule, params, grads, zeros_like), state


def build_torch(rule, impl, ft_params, grads, ft_state):
    """A torch.optim instance on the very arrays fusedtrain steps (params, grads and state), or
    the exception torch raised.

    Note [same memory]: on this VM the relative placement of a step's arrays alone moves a
    bandwidth-bound step by 2x, for torch and fusedtrain alike; only the same arrays make the two
    timings comparable.  Both update them in turn, which keeps every value finite.
    """
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in ft_params]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g)
    try:
        opt = make_torch_optimizer(torch, rule, params, impl)
        opt.step()  # torch checks some flags only on the first step, and creates its state
    except Exception as e:  # noqa: BLE001 - e.g. no fused=True for this class: an N/A cell
        return e
    keys = rule.torch_state
    n = len(params)
    for k, key in enumerate(keys):
        for i, p in enumerate(params):
            opt.state[p][key] = torch.from_numpy(ft_state[k * n + i])
    return opt


def result_cell(res, bytes_moved, triad_gbs, failed_status) -> dict:
    if isinstance(res, Exception):
        return {"status": failed_status, "error": f"{type(res).__name__}: {res}"}
    gbs = bytes_moved / res.median_s / 1e9
    return {"status": "ok", "median_ms": res.median_s * 1e3, "min_ms": res.min_s * 1e3,
            "repeats": res.repeats, "gbs": gbs, "gbs_at_min": bytes_moved / res.min_s / 1e9,
            "pct_triad": 100.0 * gbs / triad_gbs if triad_gbs else None}


def time_rule(ft, rule, w, params0, grads, args, timing_kw, use_torch):
    """All implementations of one rule on one workload, timed taking turns; returns raw results."""
    fns, failed = {}, {}
    try:
        ft_params, fns["ft"], ft_state = build_ft(ft, rule, params0, grads)
    except Exception as e:  # noqa: BLE001 - a missing or broken rule is a row, not the end of the run
        failed["ft"], ft_params, ft_state = e, None, None
    if use_torch and ft_params is not None:
        fns["ft"]()  # one step first, as each torch optimizer takes one in build_torch
        for impl in TORCH_IMPLS:
            opt = build_torch(rule, impl, ft_params, grads, ft_state)
            if isinstance(opt, Exception):
                failed[impl] = opt
            else:
                fns[impl] = opt.step
    results = common.time_interleaved(fns, budget_s=args.budget, **timing_kw)
    results.update(failed)
    note = None
    if ft_params is not None and not isinstance(results.get("ft"), Exception):
        # A rule that produced NaN/Inf or never wrote may be timing a shortcut, not the update.
        if not np.isfinite(ft_params[0]).all():
            note = "non-finite params after the timed steps"
        elif np.array_equal(ft_params[0], params0[0]):
            note = "params unchanged after the timed steps"
    return results, note


def evaluate_targets(rule, w, row, triad_gbs) -> list[dict]:
    """Each applicable goal with its measured value; passed is None when it cannot be judged."""
    ft_ms = row["ft"].get("median_ms")
    torch_ms = {k: v.get("median_ms") for k, v in row["torch"].items() if v and v.get("status") == "ok"}
    targets = []

    def add(name, required, measured):
        passed = None if measured is None else measured >= required
        targets.append({"name": name, "required": required, "measured": measured, "passed": passed})

    def ratio(impl):
        return torch_ms[impl] / ft_ms if ft_ms and impl in torch_ms else None

    if w.name == "16Mx1":
        if rule.torch_cls and (torch is None or row["torch"].get("fused", {}).get("status") != "n/a"):
            add("speedup_vs_torch_fused", 1.0, ratio("fused"))
        add("fraction_of_triad", TRIAD_FRACTION,
            row["ft"]["gbs"] / triad_gbs if ft_ms and triad_gbs else None)
    if w.name == "1000x1K" and rule.name in SMALL_TENSOR_RULES:
        add("speedup_vs_torch_fused", SMALL_TENSOR_SPEEDUP, ratio("fused"))
    if rule.name in FOREACH_RULES:
        add("speedup_vs_torch_foreach", FOREACH_SPEEDUP, ratio("foreach"))
    return targets


def status_of(targets) -> str:
    if not targets:
        return ""
    judged = [t for t in targets if t["passed"] is not None]
    if not judged:
        return "n/a"
    short = [t for t in judged if not t["passed"]]
    return "PASS" if not short else "SHORT"


def target_text(targets) -> str:
    names = {"speedup_vs_torch_fused": "fused", "speedup_vs_torch_foreach": "foreach",
             "fraction_of_triad": "triad"}
    parts = []
    for t in targets:
        if t["name"] == "fraction_of_triad":
            need = f">={t['required'] * 100:.0f}% triad"
        else:
            need = f">={t['required']:g}x {names[t['name']]}"
        mark = " (n/a)" if t["passed"] is None else ("" if t["passed"] else " (short)")
        parts.append(need + mark)
    return "; ".join(parts)


def fmt_ms(cell) -> str:
    if not cell:
        return "-"
    if cell.get("status") != "ok":
        return cell.get("status", "-")
    ms = cell["median_ms"]
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def print_table(rows, bw, file=sys.stdout):
    headers = ["rule", "workload", "ft ms", "GB/s", "%triad", "torch loop", "foreach", "fused",
               "speedup", "target", "status"]
    body = []
    for r in rows:
        ft_cell = r["ft"]
        ok = ft_cell.get("status") == "ok"
        sp = r.get("speedup_vs_torch_best")
        body.append([
            r["rule"], r["workload_label"], fmt_ms(ft_cell),
            f"{ft_cell['gbs']:.1f}" if ok else "-",
            f"{ft_cell['pct_triad']:.0f}%" if ok and ft_cell.get("pct_triad") else "-",
            fmt_ms(r["torch"].get("loop")), fmt_ms(r["torch"].get("foreach")),
            fmt_ms(r["torch"].get("fused")),
            f"{sp:.2f}x" if sp else "-",
            target_text(r["targets"]), r["status"],
        ])
    right = [False, False, True, True, True, True, True, True, True, False, False]
    print(f"memory bandwidth ({bw['threads']} threads, {bw['array_mib']:.0f} MiB arrays, best of start/end): "
          f"triad {bw['triad_gbs']:.1f} GB/s (the %triad reference; start {bw['start']['triad_gbs']:.1f}, "
          f"end {bw['end']['triad_gbs']:.1f}), copy {bw['copy_gbs']:.1f}, in-place axpy {bw['axpy_gbs']:.1f}",
          file=file)
    if bw.get("torch_triad_gbs"):
        print(f"cross-check: torch one-pass triad {bw['torch_triad_gbs']:.1f} GB/s", file=file)
    print("times are medians in ms; speedup = faster of torch foreach/fused / fusedtrain", file=file)
    print(common.format_table(headers, body, right), file=file)


def finish_row(row, triad_gbs) -> None:
    """Turns a row's raw timings into cells, speedup and targets, once the triad reference is known."""
    res = row.pop("results")
    row["ft"] = result_cell(res.get("ft"), row["bytes_moved"], triad_gbs, "error")
    ft_note = row.pop("ft_note")
    if ft_note:
        row["ft"]["note"] = ft_note
    row["torch"] = {impl: result_cell(res[impl], row["bytes_moved"], triad_gbs, "n/a")
                    for impl in TORCH_IMPLS if impl in res}
    ft_ms = row["ft"].get("median_ms")
    best = [row["torch"][k]["median_ms"] for k in ("foreach", "fused")
            if row["torch"].get(k, {}).get("status") == "ok"]
    row["speedup_vs_torch_best"] = min(best) / ft_ms if best and ft_ms else None
    row["targets"] = evaluate_targets(RULES_BY_NAME[row["rule"]],
                                      WORKLOADS_BY_NAME[row["workload"].lower()], row, triad_gbs)
    row["status"] = status_of(row["targets"])


def probe_bandwidth(args, cores, use_torch) -> dict:
    common.log("measuring memory bandwidth ...")
    size, runs = ((64 << 20), 3) if args.quick else ((128 << 20), 10)
    bw = measure_bandwidth(array_bytes=size, runs=runs, threads=cores)
    if use_torch:
        bw["torch_triad_gbs"] = measure_torch_triad(torch, array_bytes=size, runs=runs)
    gc.collect()
    return bw


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import fusedtrain as ft
    except ImportError as e:
        print(f"cannot import fusedtrain ({e}); build it first: pip install .", file=sys.stderr)
        return 2
    tm, cores, ft_info = common.cpu_session(torch, args.no_torch)
    use_torch = tm is not None

    timing_kw = ({"min_repeats": 2, "max_repeats": 20, "warmup": 1} if args.quick
                 else {"min_repeats": 5, "max_repeats": 300, "warmup": 3})
    started = time.perf_counter()
    pressure_start = common.cpu_pressure()
    if pressure_start and pressure_start.get("avg10", 0) > 10:
        common.log(f"warning: other tasks are using the CPU (PSI some avg10={pressure_start['avg10']}%); "
                   "times will be noisy and torch's many-barrier paths will suffer most")
    bw = probe_bandwidth(args, cores, use_torch)

    rows = []
    for w in args.workloads:
        params0, grads = make_data(w)
        for rule in args.rules:
            common.log(f"{rule.name:9s} {w.label:10s} ...")
            results, note = time_rule(ft, rule, w, params0, grads, args, timing_kw, use_torch)
            gc.collect()
            rows.append({"rule": rule.name, "workload": w.name, "workload_label": w.label,
                         "tensors": w.tensors, "tensor_numel": w.size, "numel": w.numel,
                         "dtype": "float32", "bytes_per_param": rule.bytes_per_param,
                         "bytes_moved": rule.bytes_per_param * w.numel,
                         "hyperparameters": rule.hyper, "results": results, "ft_note": note})
        del params0, grads
        gc.collect()

    # Bandwidth again at the end: the reference is the better of the two, so a neighbour's
    # burst during one probe does not make every kernel look closer to the limit than it is.
    bw_end = probe_bandwidth(args, cores, use_torch)
    bw = {"start": bw, "end": bw_end,
          "triad_gbs": max(bw["triad_gbs"], bw_end["triad_gbs"]),
          "copy_gbs": max(bw["copy_gbs"], bw_end["copy_gbs"]),
          "axpy_gbs": max(bw["axpy_gbs"], bw_end["axpy_gbs"]),
          "torch_triad_gbs": max(bw.get("torch_triad_gbs") or 0, bw_end.get("torch_triad_gbs") or 0) or None,
          "threads": bw["threads"], "array_mib": bw["array_mib"], "method": bw["method"]}
    for row in rows:
        finish_row(row, bw["triad_gbs"])

    elapsed = time.perf_counter() - started
    pressure_end = common.cpu_pressure()
    print()
    print_table(rows, bw)
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; fusedtrain {ft_info.get('version')} "
          f"isa={ft_info.get('cpu_isa')} threads={ft_info.get('num_threads')}; "
          f"torch {torch.__version__ if use_torch else 'not used'}"
          f"{f' threads={torch.get_num_threads()}' if use_torch else ''}")
    if pressure_end:
        print(f"CPU pressure (PSI some, % of time a task waited for a core): "
              f"start {pressure_start}, end {pressure_end}")

    doc = {
        **common.cpu_doc("cpu_optim", ft_info, tm),
        "bandwidth": bw,
        "settings": {"quick": args.quick, "budget_s_per_cell": args.budget, **timing_kw,
                     "timer": "time.perf_counter per call; torch times optimizer.step() with grads preset"},
        "targets": {"triad_fraction_16Mx1": TRIAD_FRACTION,
                    "speedup_vs_fused_1000x1K": {"value": SMALL_TENSOR_SPEEDUP, "rules": SMALL_TENSOR_RULES},
                    "speedup_vs_foreach_all": {"value": FOREACH_SPEEDUP, "rules": FOREACH_RULES}},
        "cpu_pressure": {"start": pressure_start, "end": pressure_end},
        "elapsed_s": elapsed,
        "rows": rows,
    }
    path = args.json or common.RESULTS_DIR / f"cpu_optim_{common.slug(common.cpu_model())}.json"
    common.write_json(path, doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
