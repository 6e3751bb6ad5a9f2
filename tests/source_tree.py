"""Tests that read fusedtrain's sources (build scripts, CUDA headers compiled on the host): where
the source tree is (FUSEDTRAIN_SOURCE_DIR, else this checkout), which C++ compiler builds, the
files the CUDA kernels are built from, and a parenthesis matcher for reading them."""
import os
import pathlib
import shutil

import pytest


def source_path(relative):
    """The path of `relative` in the source tree; skips the test where the tree is not at hand
    (tests run against an installed wheel elsewhere)."""
    root = os.environ.get("FUSEDTRAIN_SOURCE_DIR") or pathlib.Path(__file__).resolve().parents[1]
    path = pathlib.Path(root) / relative
    if not path.exists():
        pytest.skip(f"needs the source tree's {relative} (FUSEDTRAIN_SOURCE_DIR)")
    return path


def host_compiler():
    """$CXX, else c++ or g++ on PATH; skips the test without one."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        pytest.skip("no C++ compiler")
    return cxx


def kernel_sources(csrc):
    """Every file the CUDA kernels compile from (csrc/cuda, core, math), sorted: what a cache of
    their builds is keyed on."""
    return sorted(p for d in ("cuda", "core", "math") for p in (csrc / d).iterdir() if p.is_file())


def closing_paren(text, i):
    """The index of the parenthesis that closes the one at text[i]."""
    depth = 0
    while True:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
        i += 1
