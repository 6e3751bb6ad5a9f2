"""Presenting benchmark results: progress line, text table, JSON file, PNG chart."""
from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, one line per step
    otherwise (so logs of CI runs stay readable)."""

    def __init__(self, total, width=28, stream=None):
        self.total, self.width, self.done = max(total, 1), width, 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def step(self, label):
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done + 1:>3}/{self.total} {label}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self):
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def format_table(headers, rows, right_align=None) -> str:
    """Columns padded to their widest cell, a dashed rule under the headers; None cells blank."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = list(right_align) if right_align is not None else [False] * len(headers)

    def line(r):
        return "  ".join(c.rjust(w) if right[i] else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])


def table(rows) -> str:
    headers = ["suite", "kernel", "workload", "ms", "GB/s", "% bw", "baseline", "base ms", "ratio"]
    body = []
    for r in rows:
        ours = r["fusedtrain"]
        ok = "median_ms" in ours
        body.append([r["suite"], r["kernel"], r["workload"],
                     _ms(ours.get("median_ms")) if ok else "error",
                     f"{ours['gbs']:.1f}" if ok else "-",
                     f"{ours['pct_bandwidth']:.0f}%" if ok and ours.get("pct_bandwidth") else "-",
                     r.get("baseline") or "-", _ms(r.get("baseline_ms")),
                     f"{r['ratio']:.2f}x" if r.get("ratio") else "-"])
    return format_table(headers, body, [False, False, False, True, True, True, False, True, True])


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_json(path, doc):
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)  # an interrupted run leaves no half-written report
    return path


def require_matplotlib(flag):
    """The pyplot module with a file-only backend, or SystemExit naming the fix."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(f"fusedtrain: {flag} needs matplotlib: pip install matplotlib "
                         "(or pip install 'fusedtrain[demo]')") from None
    return plt


def plot(rows, path, title):
    """One panel per suite: fusedtrain and its baseline as % of the measured bandwidth."""
    plt = require_matplotlib("--plot")
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, axes = plt.subplots(len(suites), 1, squeeze=False,
                             figsize=(9, 1.2 + 0.32 * len(rows) + 0.6 * len(suites)))
    for ax, suite in zip(axes[:, 0], suites):
        rs = [r for r in rows if r["suite"] == suite]
        labels = [f"{r['kernel']} | {r['workload']}" for r in rs]
        ours = [r["fusedtrain"].get("pct_bandwidth") or 0 for r in rs]
        base = [r.get("baseline_pct_bandwidth") or 0 for r in rs]
        ys = range(len(rs))
        ax.barh([y - 0.2 for y in ys], ours, height=0.4, label="fusedtrain", color="tab:blue")
        if any(base):
            ax.barh([y + 0.2 for y in ys], base, height=0.4, color="tab:gray",
                    label=" / ".join(sorted({r["baseline"] for r in rs if r.get("baseline")})))
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("% of measured memory bandwidth")
        ax.set_title(suite, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
