"""Host time per call of the normalization drop-ins, against torch.nn: the regime of a training
step over small activations, where the host's work per layer, not the kernel, sets the pace.

For each of ``ft.torch.LayerNorm``, ``RMSNorm``, ``GroupNorm`` and ``BatchNorm2d`` (training
mode) and its torch namesake: forward alone, forward + backward (``y.backward(dy)``) and forward
under ``torch.no_grad()``, on
inputs small enough that the kernel is a small part of the call (``(8, 64)`` rows,
``(2, 16, 4, 4)`` images), plus the functional ``ft.layer_norm_forward`` against
``torch.nn.functional.layer_norm``.  On the CPU the kernels run inside the call; with
``--devices cuda`` the time is until the call returns (no sync), which is what a host-bound
training step pays per layer.  Every pair takes turns (common.time_interleaved), --rounds times.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import common

import torch

import fusedtrain as ft


def cases(device):
    """(name, ours, theirs, input shape) per module pair."""
    def pair(ours, theirs):
        theirs.load_state_dict(ours.state_dict())
        return ours.to(device), theirs.to(device)
    return [("LayerNorm(64)", *pair(ft.torch.LayerNorm(64), torch.nn.LayerNorm(64)), (8, 64)),
            ("RMSNorm(64)", *pair(ft.torch.RMSNorm(64), torch.nn.RMSNorm(64)), (8, 64)),
            ("GroupNorm(4, 16)", *pair(ft.torch.GroupNorm(4, 16), torch.nn.GroupNorm(4, 16)),
             (2, 16, 4, 4)),
            ("BatchNorm2d(16)", *pair(ft.torch.BatchNorm2d(16), torch.nn.BatchNorm2d(16)),
             (2, 16, 4, 4))]


def calls(device):
    """{label: ({"ft": fn, "torch": fn}, grad mode)} for every timed call."""
    out = {}
    for name, ours, theirs, shape in cases(device):
        x = torch.randn(shape, device=device, requires_grad=True)
        dy = torch.randn(shape, device=device)

        def fwd(m, x=x):
            return lambda: m(x)

        def both(m, x=x, dy=dy):
            return lambda: m(x).backward(dy)
        out[f"{name} fwd"] = ({"ft": fwd(ours), "torch": fwd(theirs)}, True)
        out[f"{name} fwd+bwd"] = ({"ft": both(ours), "torch": both(theirs)}, True)
        out[f"{name} fwd, no_grad"] = ({"ft": fwd(ours), "torch": fwd(theirs)}, False)
    x = torch.randn(8, 64, device=device)
    w, b = torch.rand(64, device=device) + 0.5, torch.randn(64, device=device)
    out["layer_norm functional"] = ({"ft": lambda: ft.layer_norm_forward(x, 64, w, b),
                                     "torch": lambda: torch.nn.functional.layer_norm(x, (64,), w, b)},
                                    True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, short budgets")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda (if present)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    budget = 0.05 if args.quick else 0.3
    torch.set_num_threads(1)
    ft.set_num_threads(1)
    devices = [d for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    rows = []
    for device in devices:
        for label, (fns, grad) in calls(device).items():
            samples = {"ft": [], "torch": []}
            for _ in range(rounds):
                with torch.set_grad_enabled(grad):
                    timed = common.time_interleaved(fns, budget_s=budget)
                for k in samples:
                    samples[k].append(timed[k].median_s * 1e6)
            ft_us, torch_us = statistics.median(samples["ft"]), statistics.median(samples["torch"])
            rows.append({"device": device, "call": label, "ft_us": ft_us, "torch_us": torch_us,
                         "ft_over_torch": ft_us / torch_us, "rounds": samples})
            common.log(f"{device} {label:>28}: ours {ft_us:7.1f} us, torch {torch_us:7.1f} us")
    print(common.format_table(
        ["device", "call", "ours us", "torch us", "ours / torch"],
        [[r["device"], r["call"], f"{r['ft_us']:.1f}", f"{r['torch_us']:.1f}",
          f"{r['ft_over_torch']:.2f}"] for r in rows], [False, False, True, True, True]))
    common.write_cpu_results("norm_host", "cpu_norm_host", ft.info(), torch, args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
