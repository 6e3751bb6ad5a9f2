"""Note [dependent launch] read off the CUDA sources: a normalization kernel launched as a
dependent may start before the kernel ahead of it in the stream has finished, so every kernel of
the sources that launch through launch_kernel (csrc/cuda/norm_reduce.cuh and the files that
include it, directly or not) must wait for that kernel before it touches memory: its body opens with
grid_dependency().  And none of them launches with <<<...>>>, which would bypass the switch and
the fallback.  A GPU cannot show a missing wait reliably (it races), so the sources are checked."""
import re

import pytest

from source_tree import closing_paren, source_path


def _sources():
    """norm_reduce.cuh and every CUDA source that includes it, directly or through another."""
    cuda = source_path("csrc/cuda/norm_reduce.cuh").parent
    files = [p for p in cuda.iterdir() if p.suffix in (".cu", ".cuh")]
    found = {"norm_reduce.cuh"}
    while True:
        more = {p.name for p in files
                if any(f'#include "cuda/{n}"' in p.read_text() for n in found)} - found
        if not more:
            return sorted(p for p in files if p.name in found)
        found |= more


def _strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def _kernels(text):
    """(name, first statement of the body) of each __global__ function."""
    out = []
    for m in re.finditer(r"__global__", text):
        i = m.end()
        lb = text.find("__launch_bounds__", i)
        paren = text.index("(", i)
        if lb != -1 and lb < paren:  # past __launch_bounds__(...)
            paren = text.index("(", closing_paren(text, text.index("(", lb)) + 1)
        name = re.findall(r"(\w+)\s*$", text[i:paren])[0]
        brace = text.index("{", closing_paren(text, paren))
        out.append((name, text[brace + 1:text.index(";", brace) + 1].strip()))
    return out


def test_the_sources_are_found():
    names = {p.name for p in _sources()}
    assert {"norm_reduce.cuh", "bn_kernels.cu", "ln_kernels.cu", "gn_kernels.cu", "norm_matrix.cuh"} <= names


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_every_kernel_waits_first_and_launches_as_a_dependent(path):
    text = _strip_comments(path.read_text())
    kernels = _kernels(text)
    assert kernels
    for name, first in kernels:
        assert first == "grid_dependency();", f"{path.name}: {name} opens with {first!r}"
    assert "<<<" not in text, f"{path.name} launches with <<<...>>>, not launch_kernel"


def test_the_check_catches_a_kernel_without_the_wait():
    text = "template <class S>\n__global__ void __launch_bounds__(256, f(2)) k(int n) {\n  int i = n;\n}\n"
    assert _kernels(text) == [("k", "int i = n;")]
