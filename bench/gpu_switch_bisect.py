"""Reruns the tests a GPU test run failed with the CUDA kernel switches turned off (Note [row kernel
switches], through FUSEDTRAIN_CUDA_SWITCHES_OFF), so that one GPU run names the change behind a
failure: first none off (a failure that goes away then is not a switch's doing: flaky, or an
order between tests), then all off (a failure that stays is in code no switch reaches), then
each alone. bench/gpu_check.sh runs it when its GPU tests fail.

    python bench/gpu_switch_bisect.py TESTS_LOG [--budget SECONDS] [-- PYTEST_ARGS...]

Prints one line per rerun ("<switches> off: <pytest's last line>") and, last, the verdict.
"""
import argparse
import os
import re
import subprocess
import sys
import time

FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)")
OUTCOME = re.compile(r"\b(?:passed|failed|errors?|no tests ran)\b")


def failed_tests(log_text, limit=40):
    """The node ids of pytest's short summary (-rfE) in log_text, in order, each once."""
    ids = []
    for line in log_text.splitlines():
        m = FAILED.match(line)
        if m and m.group(1) not in ids:
            ids.append(m.group(1))
    return ids[:limit]


def switches():
    import fusedtrain as ft
    return list(ft._C._cuda_row_kernel_options())


def rerun(ids, off, pytest_args, limit):
    """(passed, pytest's last line) of the ids with the switches `off` turned off."""
    env = dict(os.environ, FUSEDTRAIN_CUDA_SWITCHES_OFF=off)
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, *ids],
                           env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return False, f"timeout after {limit:.0f}s"
    lines = [ln.strip("= ") for ln in p.stdout.splitlines() if OUTCOME.search(ln)]
    return p.returncode == 0, lines[-1] if lines else f"exit {p.returncode}"


def bisect(ids, pytest_args, budget, out=print):
    """The switches whose being off alone makes every id pass; None where the ids pass with none
    off, [] where only all off clears them, and "none" where all off does not either (or the
    budget ran out first)."""
    t0 = time.monotonic()

    def left():
        return budget - (time.monotonic() - t0)

    for off in ("", "all"):
        passed, last = rerun(ids, off, pytest_args, max(left(), 1))
        out(f"{off or 'none'} off: {last}")
        if passed == (off == ""):
            return None if passed else "none"
    culprits = []
    for name in switches():
        if left() < 10:
            out("out of time")
            return "none"
        passed, last = rerun(ids, name, pytest_args, left())
        out(f"{name} off: {last}")
        if passed:
            culprits.append(name)
    return culprits


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--budget", type=float, default=120.0)
    args = ap.parse_args(argv[:len(argv) - len(pytest_args) - ("--" in argv)])
    with open(args.log, errors="replace") as f:
        ids = failed_tests(f.read())
    if not ids:
        print("no failed test in the log")
        return 0
    print(f"failed tests: {len(ids)}, rerun with switches off")
    culprits = bisect(ids, pytest_args, args.budget)
    if culprits is None:
        print("verdict: they pass when rerun with every switch on: flaky, or an order between tests")
    elif culprits == "none":
        print("verdict: no switch clears them (or out of time)")
    elif culprits:
        print(f"verdict: turning off {' or '.join(culprits)} clears them")
    else:
        print("verdict: all off clears them, no switch alone does")
    return 0


if __name__ == "__main__":
    sys.exit(main())
