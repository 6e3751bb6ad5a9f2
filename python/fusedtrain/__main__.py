"""Command line: ``python -m fusedtrain info | bench | demo`` (also the ``fusedtrain`` script)."""
import argparse
import json
import sys


def _info(args):
    from . import info
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for k, v in data.items():
        if isinstance(v, list):
            v = ", ".join(map(str, v)) or "-"
        print(f"{k:<{width}}  {v}")
    return 0


def _bench(args):
    from .bench import run
    suites = [s.strip() for s in args.suites.split(",")] if args.suites else None
    run(quick=args.quick, json_path=args.json, plot_path=args.plot, use_torch=not args.no_torch,
        cpu_only=args.cpu_only, suites=suites, budget_s=args.budget)
    return 0


def _demo(args):
    from .demo import run
    run(device=args.device, steps=args.steps, quick=args.quick,
        plot_path=None if args.no_plot else args.plot, seed=args.seed)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fusedtrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, CPU ISA, threads, CUDA build and devices")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("bench", help="time our kernels against torch (or the NumPy reference)",
                       description="Times the CPU optimizer and batch-norm suites, the torch user "
                       "path (ft.torch optimizers on ResNet-50 / GPT-2 small parameter lists and "
                       "tensor import; needs torch), and the CUDA ones when a GPU is visible, "
                       "against PyTorch when installed, else the "
                       "NumPy reference; prints time, GB/s, %% of measured bandwidth and the "
                       "ratio to the baseline.")
    p.add_argument("--quick", action="store_true", help="smaller workloads, short budgets (< 1 min)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    p.add_argument("--no-torch", action="store_true", help="compare with the NumPy reference")
    p.add_argument("--cpu-only", action="store_true", help="skip the CUDA suites")
    p.add_argument("--suites", metavar="WORDS",
                   help="comma-separated words a suite name must contain: optim, batch norm, "
                   "user path, cpu, cuda")
    p.add_argument("--budget", type=float, metavar="S", help="seconds of timed calls per cell")
    p.set_defaults(func=_bench)

    p = sub.add_parser("demo", help="train a small batch-norm net with each optimizer, plot losses",
                       description="Trains 2-64-BN-ReLU-64-BN-ReLU-3 on a generated 3-class spiral "
                       "with every optimizer rule (SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, "
                       "...; our kernels for the update and batch norm), prints a table and "
                       "writes a loss-curve PNG.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda runs the dense layers in CuPy and our CUDA kernels")
    p.add_argument("--steps", type=int, help="training steps per optimizer (default 1000, quick 150)")
    p.add_argument("--quick", action="store_true", help="a smaller, shorter run (for tests)")
    p.add_argument("--plot", metavar="PATH", default="fusedtrain_demo.png",
                   help="loss-curve PNG (default %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="table only (no matplotlib needed)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
