"""The CUDA normalization benches' measuring code (bench/bench_bn_cuda.py, bench/bench_ln_cuda.py)
run on the CPU, with stand-ins for torch.cuda's timing calls, and the gpu_check summary of what
they return: every row a GPU run writes has its keys and its switch timings (Note [row kernel
switches]), and the summary prints the targets and the switch lines.  A GPU session's device
time then goes to measuring, not to finding a Python error in a bench."""
import json
import sys
import time

import pytest

from source_tree import source_path

torch = pytest.importorskip("torch")
import fusedtrain as ft  # noqa: E402


class _Event:
    """torch.cuda.Event on the host clock."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


@pytest.fixture
def benches(monkeypatch):
    bench = source_path("bench")
    monkeypatch.syspath_prepend(str(bench))
    for name in ("bench_bn_cuda", "bench_ln_cuda", "norm_bench_cuda", "bench_optim_cuda", "gpu_summary"):
        sys.modules.pop(name, None)
    import bench_bn_cuda
    import bench_ln_cuda
    import bench_optim_cuda
    import gpu_summary
    import norm_bench_cuda
    monkeypatch.setattr(norm_bench_cuda, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "dry run")
    session = (torch, ft, 2, lambda: None, 1e12)  # torch, ft, steps, L2 flush, copy bandwidth
    monkeypatch.setattr(bench_optim_cuda, "gpu_session", lambda args: session)
    return session, bench_bn_cuda, bench_ln_cuda, gpu_summary


def test_batch_norm_bench_rows_and_summary(benches):
    session, bn, _, summary = benches
    rows = [bn.measure(session, (label, shape, layout), dtype)
            for label, shape, layout in [("4x8x5x5", (4, 8, 5, 5), "nchw"), ("4x8x5x5", (4, 8, 5, 5), "nhwc"),
                                         ("bn1d 64x16", (64, 16), "2d")]
            for dtype in (torch.float32, torch.bfloat16)]
    for r in rows:
        for kind in ("fwd", "bwd", "fwd+bwd"):
            assert r[kind]["ft_ms"] > 0 and r[kind]["torch_ms"] > 0 and r[kind]["pct_roofline"] > 0
        # Note [second pass in reverse] and Note [dependent launch] on every row; Note [rows walk
        # prefetch]: the bf16 rows passes' A/B timing.
        want = {"on_ms", "second_pass_in_order_ms", "no_dependent_launch_ms"}
        if r["layout"] != "nchw" and r["dtype"] == "bfloat16":
            want.add("no_rows_walk_prefetch_ms")
        assert set(r["switches"]) == want
    assert ft._C._cuda_row_kernel_options() == dict.fromkeys(  # switched back on
        ("l2_prefetch", "shared_column_sums", "rows_walk_prefetch", "reverse_second_pass",
         "staged_rows", "dependent_launch"), True)
    lines = summary.batch_norm_lines({"rows": rows})
    assert any("weak spots" in line for line in lines)
    for label in ("batch norm second pass in order", "batch norm no dependent launch",
                  "batch norm rows no rows walk prefetch"):
        assert any(line.strip().startswith(label + " / on: geomean") for line in lines), label


def test_layer_norm_bench_rows_and_summary(benches):
    session, _, ln, summary = benches
    rows = [ln.measure(session, (label, kind, shape, cl), dtype)
            for label, kind, shape, cl in [("layer 64x32", "layer", (64, 32), False),
                                           ("rms 64x32", "rms", (64, 32), False),
                                           ("group 2x64x4x4 g32 nchw", "group", (2, 64, 4, 4), False),
                                           ("group 2x64x4x4 g32 nhwc", "group", (2, 64, 4, 4), True)]
            for dtype in (torch.float32, torch.bfloat16)]
    for r in rows:
        assert all(r[k]["ft_ms"] > 0 and r[k]["pct_copy_bw"] > 0 for k in ("fwd", "bwd", "fwd+bwd"))
    for r in rows:
        assert ("bwd frozen" in r) == (r["kind"] != "group")
        assert r["kind"] == "group" or r["bwd frozen"]["ft_ms"] > 0 < r["bwd frozen"]["torch_ms"]
        assert ("bwd no dbias" in r) == (r["kind"] == "layer")
        assert r["kind"] != "layer" or r["bwd no dbias"]["ft_ms"] > 0 < r["bwd no dbias"]["torch_ms"]
    names = {r["workload"] + " " + r["dtype"]: set(r.get("switches", ())) for r in rows}
    assert names["layer 64x32 float32"] == {"on_ms", "no_l2_prefetch_ms", "no_shared_column_sums_ms",
                                            "no_staged_rows_ms", "no_dependent_launch_ms"}
    assert names["group 2x64x4x4 g32 nhwc bfloat16"] == {"on_ms", "second_pass_in_order_ms",
                                                          "no_dependent_launch_ms", "no_rows_walk_prefetch_ms"}
    assert names["group 2x64x4x4 g32 nhwc float32"] == {"on_ms", "second_pass_in_order_ms",
                                                        "no_dependent_launch_ms"}
    assert names["group 2x64x4x4 g32 nchw bfloat16"] == set()
    assert ft._C._cuda_row_kernel_options() == dict.fromkeys(
        ("l2_prefetch", "shared_column_sums", "rows_walk_prefetch", "reverse_second_pass",
         "staged_rows", "dependent_launch"), True)
    lines = summary.layer_norm_lines({"rows": rows})
    for label in ("layer/RMS no l2 prefetch", "layer/RMS no shared column sums", "layer/RMS no staged rows",
                  "layer/RMS no dependent launch", "group norm NHWC second pass in order",
                  "group norm NHWC no rows walk prefetch", "group norm NHWC no dependent launch"):
        assert any(line.strip().startswith(label + " / on: geomean") for line in lines), label
    assert any(line.strip().startswith("layer/RMS bwd frozen (weight_grads=False)") for line in lines)
    assert any(line.strip().startswith("layer bwd no dbias (bias_grads=False)") for line in lines)


def test_norm_bench_mains_write_what_the_summary_reads(benches, tmp_path, monkeypatch, capsys):
    """Each bench's main end to end (its table, geomean and result JSON) on tiny workloads, then
    gpu_summary over the JSON files as gpu_check.sh runs it."""
    _, bn, ln, summary = benches
    monkeypatch.setattr(bn, "workloads", lambda quick: [("4x8x5x5", (4, 8, 5, 5), "nhwc"),
                                                        ("bn1d 64x16", (64, 16), "2d")])
    monkeypatch.setattr(ln, "workloads", lambda quick: [("layer 64x32", "layer", (64, 32), False),
                                                        ("group 2x64x4x4 g32 nhwc", "group", (2, 64, 4, 4), True)])
    for bench, name in ((bn, "bn"), (ln, "ln")):
        out = tmp_path / f"cuda_{name}_dry-run.json"
        assert bench.main(["--quick", "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["device"]["name"] == "dry run" and doc["l2_flush"].startswith("read")
        assert len(doc["rows"]) == 4 and doc["geomean_fwd_bwd_speedup"] > 0
    capsys.readouterr()
    assert summary.main(["gpu_summary.py", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "FAIL" not in printed
    for line in ("batch norm fwd+bwd geomean vs torch", "batch norm rows no rows walk prefetch / on",
                 "layer/RMS norm fwd+bwd, slowest vs torch", "layer/RMS no l2 prefetch / on",
                 "group norm NHWC no rows walk prefetch / on"):
        assert line in printed, line
