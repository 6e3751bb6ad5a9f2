"""The CPU benches' result files: bench/common.write_cpu_results names a file by the CPU model
when no path is given (bench_norm_host.py and bench_norm_modules_cpu.py write through it)."""
import json
import sys

import fusedtrain as ft
from source_tree import source_path


def test_cpu_results_default_to_a_file_named_by_the_cpu_model(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(source_path("bench")))
    sys.modules.pop("common", None)
    import common
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    path = common.write_cpu_results("norm_host", "cpu_norm_host", ft.info(), None, rows=[1])
    model = common.cpu_device()["model"]
    assert path == tmp_path / f"cpu_norm_host_{common.slug(model)}.json"
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "norm_host" and doc["device"]["model"] == model and doc["rows"] == [1]
