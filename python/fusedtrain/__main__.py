"""Command line: ``python -m fusedtrain info``."""
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fusedtrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, CPU ISA, threads, CUDA build and devices")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
