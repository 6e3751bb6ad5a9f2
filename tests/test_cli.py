"""The command line: `python -m fusedtrain info | bench | demo`, run as a user would, in a scratch directory."""
import json
import subprocess
import sys

import pytest

import fusedtrain as ft
from fusedtrain.__main__ import main


def _cli(tmp_path, *args, timeout=120):
    out = subprocess.run([sys.executable, "-m", "fusedtrain", *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out


def test_info_prints_version_and_isa(tmp_path):
    out = _cli(tmp_path, "info").stdout
    assert ft.__version__ in out and ft.get_cpu_isa() in out
    data = json.loads(_cli(tmp_path, "info", "--json").stdout)
    assert data["cpu_isa"] == ft.get_cpu_isa()


def test_bench_quick_writes_json(tmp_path):
    # A short budget keeps this a smoke test of the whole pipeline, not a measurement.
    out = _cli(tmp_path, "bench", "--quick", "--cpu-only", "--budget", "0.005",
               "--json", "report.json", timeout=240)
    doc = json.loads((tmp_path / "report.json").read_text())
    suites = {r["suite"] for r in doc["rows"]}
    assert {"cpu optim", "cpu batch norm"} <= suites
    assert doc["bandwidth"]["cpu"]["gbs"] > 0
    for row in doc["rows"]:
        assert row["fusedtrain"]["median_ms"] > 0, row
        assert row["fusedtrain"]["gbs"] > 0
        if row.get("baseline"):
            assert row["ratio"] > 0
    assert "ratio" in out.stdout and "GB/s" in out.stdout
    assert "[" in out.stderr  # the progress bar


def test_bench_without_torch_uses_the_numpy_reference(tmp_path, capsys):
    path = tmp_path / "ref.json"
    assert main(["bench", "--quick", "--no-torch", "--cpu-only", "--suites", "batch norm",
                 "--budget", "0.005", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["versions"]["torch"] is None
    assert {r["baseline"] for r in doc["rows"]} == {"numpy reference"}


def test_bench_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    with pytest.raises(SystemExit, match="matplotlib"):
        main(["bench", "--quick", "--plot", str(tmp_path / "b.png")])


def test_demo_quick_writes_its_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = _cli(tmp_path, "demo", "--quick", "--plot", "losses.png")
    png = tmp_path / "losses.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"):
        assert name in out.stdout


def test_demo_learns_with_every_optimizer():
    from fusedtrain import demo
    results = demo.run(quick=True, plot_path=None, print_fn=lambda *a: None)
    for r in results:
        assert r["test_accuracy"] > 0.6, r["optimizer"]     # chance is 1/3
        assert demo.final_loss(r["losses"]) < r["losses"][0], r["optimizer"]
