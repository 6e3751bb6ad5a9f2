"""Note [huge pages]: the large torch CPU outputs the normalizations allocate are advised to use
transparent huge pages before the kernels first write them (as NumPy does for its own arrays):
the mapping that holds such an output carries the kernel's "hg" flag in /proc/self/smaps."""
import pathlib
import sys

import pytest

import fusedtrain as ft
from fusedtrain import _C

torch = pytest.importorskip("torch")

SMAPS = pathlib.Path("/proc/self/smaps")
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not SMAPS.exists()
                                or not THP.exists(), reason="Linux with transparent huge pages")


def _vm_flags(address):
    """The VmFlags of the mapping of this process that holds `address`."""
    inside = False
    for line in SMAPS.read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    return None


def test_large_torch_outputs_are_advised():
    x = torch.randn(2048, 1024)  # 8 MB
    y, mean, rstd = ft.layer_norm_forward(x, 1024)
    interior = (y.data_ptr() + (2 << 20) - 1) & ~((2 << 20) - 1)
    assert "hg" in _vm_flags(interior)
    dx = ft.batch_norm_backward(torch.randn_like(x), x, None, *ft.batch_norm_forward(x)[1:])[0]
    assert "hg" in _vm_flags((dx.data_ptr() + (2 << 20) - 1) & ~((2 << 20) - 1))


def test_advice_covers_only_whole_huge_pages():
    assert _C._advise_huge_pages(4096, 4096) is False          # no 2 MB-aligned interior
    buf = torch.empty(6 << 20, dtype=torch.uint8)
    assert _C._advise_huge_pages(buf.data_ptr(), buf.nbytes) is True
