"""bench/gpu_switch_bisect.py on the CPU: it reads the failed tests of a pytest log and names the
kernel switch (Note [row kernel switches]) whose being off makes them pass, so a GPU run that
fails names the change behind it."""
import sys

import pytest

from source_tree import source_path

LOG = """\
tests/test_cuda_layer_norm.py ..F.                                          [ 40%]
=========================== short test summary info ============================
FAILED tests/test_cuda_layer_norm.py::test_rows[16384x1024-bfloat16] - AssertionError: dx
ERROR tests/test_cuda_batch_norm.py::test_graph[nhwc] - RuntimeError: CUDA error
FAILED tests/test_cuda_layer_norm.py::test_rows[16384x1024-bfloat16] - AssertionError: dx
1 failed, 3 passed, 1 error in 2.00s
"""

# Passes only with staged_rows off; fails whatever the switches; passes whatever they are.
TESTS = """\
import fusedtrain as ft

def test_needs_staged_rows_off():
    assert not ft._C._cuda_row_kernel_options()["staged_rows"]

def test_always_fails():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def bisect(monkeypatch):
    monkeypatch.syspath_prepend(str(source_path("bench")))
    sys.modules.pop("gpu_switch_bisect", None)
    import gpu_switch_bisect
    return gpu_switch_bisect


def test_failed_tests_are_read_off_the_short_summary(bisect):
    assert bisect.failed_tests(LOG) == ["tests/test_cuda_layer_norm.py::test_rows[16384x1024-bfloat16]",
                                        "tests/test_cuda_batch_norm.py::test_graph[nhwc]"]
    assert bisect.failed_tests(LOG, limit=1) == ["tests/test_cuda_layer_norm.py::test_rows[16384x1024-bfloat16]"]
    assert bisect.failed_tests("5 passed in 1.00s\n") == []


def test_the_switch_that_clears_a_failure_is_named(bisect, monkeypatch, tmp_path):
    (tmp_path / "test_switched.py").write_text(TESTS)
    monkeypatch.setattr(bisect, "switches", lambda: ["l2_prefetch", "staged_rows"])
    lines = []
    ids = [f"{tmp_path / 'test_switched.py'}::test_needs_staged_rows_off"]
    args = ["--rootdir", str(tmp_path)]
    assert bisect.bisect(ids, args, 120, lines.append) == ["staged_rows"]
    assert [ln.split(" in ")[0] for ln in lines] == ["none off: 1 failed", "all off: 1 passed",
                                                     "l2_prefetch off: 1 failed", "staged_rows off: 1 passed"]
    # A failure no switch clears stops after the rerun with all off.
    lines.clear()
    ids.append(f"{tmp_path / 'test_switched.py'}::test_always_fails")
    assert bisect.bisect(ids, args, 120, lines.append) == "none"
    assert [ln.split(" in ")[0] for ln in lines] == ["none off: 2 failed", "all off: 1 failed, 1 passed"]
    # A failure that does not come back is not put on a switch.
    lines.clear()
    assert bisect.bisect([f"{tmp_path / 'test_switched.py'}::test_passes"], args, 120, lines.append) is None
    assert [ln.split(" in ")[0] for ln in lines] == ["none off: 1 passed"]
