"""The normalization drop-ins on the path users take, against torch.nn on the CPU: forward +
backward through ``ft.torch.BatchNorm2d`` and ``ft.torch.LayerNorm`` (``y.backward(dy)``, x
requiring grad) in the settings of training and of fine-tuning: training mode, evaluation mode
with the affine parameters trained, and with them frozen (``requires_grad_(False)``: no weight
gradients, Note in torch/_norm_autograd._weight_grads); and training mode with both modules
under ``torch.compile`` (inductor; ours traced through its custom operators, Note [traced
kernels]), each compiled call as the other's.  Every pair takes turns
(common.time_interleaved), --rounds times; per side the median over rounds of each round's
median call and of its fastest call, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import common

import torch

import fusedtrain as ft

SHAPES = {"BatchNorm2d": (32, 64, 28, 28), "LayerNorm": (8, 512, 768)}


def modules(name, setting):
    """(ours, torch's) for one module and setting, the same parameters."""
    C = SHAPES[name][1] if name == "BatchNorm2d" else SHAPES[name][-1]
    ours, theirs = getattr(ft.torch, name)(C), getattr(torch.nn, name)(C)
    theirs.load_state_dict(ours.state_dict())
    for m in (ours, theirs):
        m.train(setting in ("train", "compiled"))
        if setting == "frozen":
            for p in m.parameters():
                p.requires_grad_(False)
    if setting == "compiled":
        return torch.compile(ours), torch.compile(theirs)
    return ours, theirs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, short budgets")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(args.threads)
    ft.set_num_threads(args.threads)
    rows = []
    for name, shape in SHAPES.items():
        x = torch.randn(shape, requires_grad=True)
        dy = torch.randn(shape)
        settings = ("train", "eval", "frozen") if name == "BatchNorm2d" else ("train", "frozen")
        for setting in settings + ("compiled",):
            ours, theirs = modules(name, setting)
            fns = {"ft": lambda m=ours: m(x).backward(dy), "torch": lambda m=theirs: m(x).backward(dy)}
            if setting == "compiled":
                for fn in fns.values():  # compile, and settle on the compiled graph
                    for _ in range(3):
                        fn()
            # Per round each side's median and fastest call: a call's time here swings up to 2x
            # with whether its fresh outputs come from recycled pages or new ones (page faults),
            # on both sides; the fastest calls compare the work itself.
            samples = {k: {"median": [], "min": []} for k in fns}
            for _ in range(rounds):
                timed = common.time_interleaved(fns, budget_s=0.3 if args.quick else 1.0)
                for k in fns:
                    samples[k]["median"].append(timed[k].median_s * 1e3)
                    samples[k]["min"].append(timed[k].min_s * 1e3)
            row = {"module": name, "shape": list(shape), "setting": setting, "rounds": samples}
            for stat in ("median", "min"):
                ours_ms = statistics.median(samples["ft"][stat])
                torch_ms = statistics.median(samples["torch"][stat])
                row[stat] = {"ft_ms": ours_ms, "torch_ms": torch_ms, "speedup": torch_ms / ours_ms}
            rows.append(row)
            common.log(f"{name} {setting:>6}: ours {row['median']['ft_ms']:.3f} ms, torch "
                       f"{row['median']['torch_ms']:.3f} ms (fastest: {row['min']['ft_ms']:.3f}, "
                       f"{row['min']['torch_ms']:.3f})")
    print(common.format_table(
        ["module", "shape", "setting", "ours ms", "torch ms", "speedup", "fastest: ours", "torch",
         "speedup"],
        [[r["module"], "x".join(map(str, r["shape"])), r["setting"]] +
         [v for stat in ("median", "min") for v in (f"{r[stat]['ft_ms']:.3f}", f"{r[stat]['torch_ms']:.3f}",
                                                   f"{r[stat]['speedup']:.2f}")] for r in rows],
        [False] * 3 + [True] * 6))
    common.write_cpu_results("norm_modules_cpu", "cpu_norm_modules", ft.info(), torch, args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
