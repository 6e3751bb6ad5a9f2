"""Fixtures shared by the suite: the CPU ISA path under test and the optional torch / bfloat16 deps."""

import os

import pytest

import fusedtrain as ft


def _isa_paths():
    # CI runs the suite once per ISA path by setting the variable; locally every supported path runs.
    forced = os.environ.get("FUSEDTRAIN_CPU_ISA")
    return [forced] if forced else list(ft.info()["cpu_isa_available"])


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames:
        metafunc.parametrize("isa", _isa_paths(), indirect=True, scope="session")


@pytest.fixture(scope="session")
def isa(request):
    previous = ft.get_cpu_isa()
    ft.set_cpu_isa(request.param)
    yield request.param
    ft.set_cpu_isa(previous)


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def restore_threads():
    """Puts ft.set_num_threads back as it was after a test that changes it."""
    before = ft.get_num_threads()
    yield
    ft.set_num_threads(before)


def pytest_configure(config):
    # Registered here too: CI runs the suite from a copy of tests/ without pyproject.toml.
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
