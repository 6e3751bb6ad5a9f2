"""Tests that read fusedtrain's sources (build scripts, CUDA headers compiled on the host): where
the source tree is (FUSEDTRAIN_SOURCE_DIR, else this checkout) and which C++ compiler builds."""
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
