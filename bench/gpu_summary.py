"""Prints the GPU targets with their measured numbers from the result JSON of one gpu_check run:
usage: python bench/gpu_summary.py DIR (the directory holding cuda_*.json)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path


def _load(folder: Path, prefix: str):
    files = sorted(folder.glob(f"{prefix}*.json"))
    return json.loads(files[-1].read_text()) if files else None


def _row(rows, workload_prefix, rule):
    return next((r for r in rows if r["workload"].startswith(workload_prefix) and r["rule"] == rule), None)


def target(name, value, goal, fmt="{:.2f}", higher=True):
    if value is None:
        return f"n/a   {name}: not measured"
    met = value >= goal if higher else value <= goal
    return f"{'met ' if met else 'SHORT'} {name}: {fmt.format(value)} (target {fmt.format(goal)})"


def optimizer_lines(doc):
    rows = doc["rows"]
    out = []
    for rule in ("adam", "adamw", "momentum"):
        r = _row(rows, f"{64}M x 1", rule) or next((x for x in rows if x["tensors"] == 1 and x["rule"] == rule), None)
        out.append(target(f"{rule} 1 tensor, % copy bandwidth", r and r["pct_copy_bw"], 90, "{:.0f}"))
    r = next((x for x in rows if x["tensors"] >= 10_000 and x["rule"] == "adamw"), None)
    out.append(target("adamw 10k tensors, GPU time vs torch fused (x)", r and r.get("speedup_vs_fused"), 1.5))
    out.append(target("adamw 10k tensors, host time vs torch fused (x)", r and r.get("host_speedup_vs_fused"), 3.0))
    if r:
        out.append(f"      adamw 10k: ours {r['ft_gpu_ms']:.3f} ms GPU / {r['ft_host_ms']:.2f} ms host, "
                   f"{r['launches_per_step']:.1f} launches/step")
    r = next((x for x in rows if "bf16+master" in x["workload"]), None)
    out.append(target("bf16 + fp32 master/state, % roofline", r and r["pct_copy_bw"], 85, "{:.0f}"))
    return out


def batch_norm_lines(doc):
    rows = doc["rows"]
    sp = [r["fwd+bwd"]["speedup"] for r in rows]
    geo = math.exp(sum(math.log(s) for s in sp) / len(sp))
    worst = min(rows, key=lambda r: r["fwd+bwd"]["speedup"])
    # torch's weak spots: bf16 NCHW with small C, BatchNorm1d with a large batch, NHWC with C <= 32.
    weak = [r for r in rows
            if (r["dtype"] == "bfloat16" and r["layout"] == "nchw" and int(r["shape"].split("x")[1]) <= 64)
            or r["layout"] == "2d" or (r["layout"] == "nhwc" and int(r["shape"].split("x")[1]) <= 32)]
    roof = min(r["fwd+bwd"]["pct_roofline"] for r in rows)
    out = [target("batch norm fwd+bwd geomean vs torch (x)", geo, 1.3),
           target(f"batch norm slowest shape ({worst['shape']} {worst['layout']} {worst['dtype']}) (x)",
                  worst["fwd+bwd"]["speedup"], 0.95),
           target("batch norm torch weak spots, slowest (x)",
                  min((r["fwd+bwd"]["speedup"] for r in weak), default=None), 2.0),
           target("batch norm fwd+bwd, lowest % roofline", roof, 70, "{:.0f}"),
           f"      batch norm fwd+bwd, % of bandwidth at two-pass bytes: lowest "
           f"{min(r['fwd+bwd'].get('pct_two_pass_bw', 0) for r in rows):.0f}, median "
           f"{sorted(r['fwd+bwd'].get('pct_two_pass_bw', 0) for r in rows)[len(rows) // 2]:.0f}"]
    return out + switch_lines("batch norm", rows, ("second_pass_in_order", "no_dependent_launch")) + \
        switch_lines("batch norm rows", rows, ("no_rows_walk_prefetch",))


def layer_norm_lines(doc):
    rows = doc["rows"]
    rowwise = [r for r in rows if r["kind"] in ("layer", "rms")]
    nhwc = [r for r in rows if r["kind"] == "group" and r["channels_last"]]
    return [target("layer/RMS norm fwd+bwd, slowest vs torch (x)",
                   min((r["fwd+bwd"]["speedup"] for r in rowwise), default=None), 1.0),
            target("layer/RMS norm fwd+bwd, lowest % copy bandwidth",
                   min((r["fwd+bwd"]["pct_copy_bw"] for r in rowwise), default=None), 80, "{:.0f}"),
            target("group norm NHWC fwd+bwd, slowest vs torch (x)",
                   min((r["fwd+bwd"]["speedup"] for r in nhwc), default=None), 2.0)] + \
        backward_variant_lines(rowwise) + \
        switch_lines("layer/RMS", rowwise, ("no_l2_prefetch", "no_shared_column_sums", "no_staged_rows",
                                            "no_dependent_launch")) + \
        switch_lines("group norm NHWC", nhwc, ("second_pass_in_order", "no_rows_walk_prefetch", "no_dependent_launch"))


def backward_variant_lines(rows):
    """Layer/RMS backward with frozen affine parameters (weight_grads=False) against torch's dx-only
    backward, and layer norm's without dbias (bias_grads=False) against torch's without a bias;
    each also against our own backward with every weight gradient."""
    out = []
    for key, label in (("bwd frozen", "layer/RMS bwd frozen (weight_grads=False) vs torch dx only"),
                       ("bwd no dbias", "layer bwd no dbias (bias_grads=False) vs torch without bias")):
        have = [r for r in rows if key in r]
        if not have:
            continue
        lo = min(have, key=lambda r: r[key]["speedup"])
        own = [r["bwd"]["ft_ms"] / r[key]["ft_ms"] for r in have]
        out.append(f"      {label}: slowest {lo[key]['speedup']:.2f} ({lo['workload']} {lo['dtype']}), "
                   f"lowest % copy bw {min(r[key]['pct_copy_bw'] for r in have):.0f}, own bwd / this "
                   f"{min(own):.2f} to {max(own):.2f}")
    return out


def switch_lines(label, rows, names):
    """Note [row kernel switches]: fwd+bwd time with a latency measure off over with all on, per
    switch in `names`; above 1 the measure pays."""
    out = []
    for name in names:
        ratios = [(r["switches"][name + "_ms"] / r["switches"]["on_ms"], r) for r in rows
                  if name + "_ms" in r.get("switches", {})]
        if not ratios:
            continue
        geo = math.exp(sum(math.log(x) for x, _ in ratios) / len(ratios))
        lo, hi = min(ratios, key=lambda t: t[0]), max(ratios, key=lambda t: t[0])

        def where(r):  # a norm bench row: "workload dtype" (layer/group) or "shape layout dtype"
            return " ".join([r["workload"]] if "workload" in r else [r["shape"], r["layout"]]) + " " + r["dtype"]
        out.append(f"      {label} {name.replace('_', ' ')} / on: geomean {geo:.3f}, "
                   f"{lo[0]:.3f} ({where(lo[1])}) to {hi[0]:.3f} ({where(hi[1])})")
    return out


def fullbatch_lines(doc):
    return [target("L-BFGS iteration vs torch.optim.LBFGS, slowest (x)",
                   min((r["speedup"] for r in doc["rows"]), default=None), 3.0)]


def sync_batch_norm_lines(doc):
    return [f"      sync batch norm, 1-rank NCCL, fwd+bwd {r['shape']} {r['layout']} {r['dtype']}: "
            f"{r['sync ft']['gpu_ms']:.3f} ms = {r['sync_over_local_ft']:.2f} x local "
            f"({r['sync_overhead_ms']:+.3f} ms), x{r['fwd+bwd']['speedup']:.2f} vs {r['fwd+bwd']['vs']}"
            for r in doc["rows"]]


def user_path_lines(doc):
    out = []
    for t in doc["targets"]:            # "... <= 0.5 us/tensor/list", "... >= 3x"
        op, goal = re.search(r"([<>]=)\s*([\d.]+)", t["target"]).groups()
        out.append(target(t["target"], t["measured"], float(goal), "{:.3f}", higher=op == ">="))
    return out


def profile_lines(doc):
    ours, theirs = doc["fusedtrain_adamw"], doc["torch_adamw_fused"]
    return [target("kernels per adamw step, 10k tensors, fresh grads", ours["kernels_per_step"], 1.0,
                   "{:.1f}", higher=False),
            f"{'met ' if not ours['waits_for_device'] and not ours['sync_or_alloc_calls'] else 'SHORT'} "
            f"no device sync in a step: waits={ours['waits_for_device']}, "
            f"sync/alloc calls={ours['sync_or_alloc_calls'] or 'none'}, "
            f"chunk-list builds={ours['chunk_list_builds_during_steps']}",
            f"      torch fused: {theirs['kernels_per_step']:.1f} kernels/step"]


def main(argv):
    folder = Path(argv[1] if len(argv) > 1 else "bench/results")
    for prefix, fn in (("cuda_profile", profile_lines), ("cuda_optim", optimizer_lines),
                       ("cuda_bn", batch_norm_lines), ("cuda_ln", layer_norm_lines),
                       ("cuda_fullbatch", fullbatch_lines), ("cuda_sync_bn", sync_batch_norm_lines),
                       ("cuda_torch_user_path", user_path_lines)):
        doc = _load(folder, prefix)
        if doc is None:
            print(f"n/a   {prefix}: no results")
            continue
        try:
            for line in fn(doc):
                print(line)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            print(f"FAIL  {prefix}: cannot read results ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
