"""ft.info() and the runtime knobs: thread count and CPU ISA selection."""

import pytest

import fusedtrain as ft

ISA_NAMES = {"baseline", "avx2", "avx512", "neon"}


def test_info_keys_and_types():
    info = ft.info()
    for key in ("version", "cpu_isa", "cpu_isa_available", "num_threads", "cuda_compiled", "cuda_devices"):
        assert key in info, key
    assert isinstance(info["version"], str) and info["version"]
    assert set(info["cpu_isa_available"]) <= ISA_NAMES
    assert "baseline" in info["cpu_isa_available"]
    assert info["cpu_isa"] in info["cpu_isa_available"]
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["cuda_devices"], list)
    assert info["threads_backend"] in ("pool", "openmp")


def test_num_threads_round_trip():
    before = ft.get_num_threads()
    try:
        for n in (1, 3, 2):
            ft.set_num_threads(n)
            assert ft.get_num_threads() == n
            assert ft.info()["num_threads"] == n
    finally:
        ft.set_num_threads(before)


@pytest.mark.parametrize("n, error", [(0, ValueError), (-3, ValueError), (1025, ValueError),
                                      (10 ** 30, ValueError), (2.5, TypeError), ("2", TypeError),
                                      (True, TypeError), (None, TypeError)])
def test_bad_thread_count_raises(n, error):
    before = ft.get_num_threads()
    with pytest.raises(error, match="set_num_threads"):
        ft.set_num_threads(n)
    assert ft.get_num_threads() == before


def test_cuda_row_kernel_options_round_trip():
    """Note [row kernel switches]: set in any build (CPU-only ones included), each call returns
    the settings before it, None leaves a setting as it is."""
    names = ("l2_prefetch", "shared_column_sums", "rows_walk_prefetch", "reverse_second_pass", "staged_rows",
             "dependent_launch")
    on = dict.fromkeys(names, True)
    try:
        assert ft._C._cuda_row_kernel_options() == on
        settings = dict(on)
        for name in names:
            assert ft._C._cuda_row_kernel_options(**{name: False}) == settings
            settings[name] = False
        assert ft._C._cuda_row_kernel_options() == dict.fromkeys(names, False)
    finally:
        ft._C._cuda_row_kernel_options(**on)
    assert ft._C._cuda_row_kernel_options() == on


def test_cpu_isa_round_trip():
    before = ft.get_cpu_isa()
    try:
        for name in ft.info()["cpu_isa_available"]:
            ft.set_cpu_isa(name)
            assert ft.get_cpu_isa() == name
            assert ft.info()["cpu_isa"] == name
    finally:
        ft.set_cpu_isa(before)


@pytest.mark.parametrize("name", ["sse9", "", "AVX2 "])
def test_unknown_cpu_isa_raises(name):
    before = ft.get_cpu_isa()
    with pytest.raises(ValueError):
        ft.set_cpu_isa(name)
    assert ft.get_cpu_isa() == before


def _switches_in_subprocess(value):
    """ft.info()["cuda_switches_off"] of a fresh interpreter run with FUSEDTRAIN_CUDA_SWITCHES_OFF
    set to `value`: (exit status, stdout, stderr)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, FUSEDTRAIN_CUDA_SWITCHES_OFF=value)
    p = subprocess.run([sys.executable, "-c", "import fusedtrain as ft; print(ft.info()['cuda_switches_off'])"],
                       env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.strip(), p.stderr


@pytest.mark.parametrize("value, off", [("", []), ("staged_rows", ["staged_rows"]),
                                        (" dependent_launch , l2_prefetch", ["l2_prefetch", "dependent_launch"]),
                                        ("all", ["l2_prefetch", "shared_column_sums", "rows_walk_prefetch",
                                                 "reverse_second_pass", "staged_rows", "dependent_launch"])])
def test_switches_off_from_the_environment(value, off):
    rc, out, err = _switches_in_subprocess(value)
    assert rc == 0, err
    assert out == repr(off)


def test_unknown_switch_in_the_environment_raises_naming_it():
    rc, _, err = _switches_in_subprocess("staged_rows,no_such_switch")
    assert rc != 0
    assert "ValueError: FUSEDTRAIN_CUDA_SWITCHES_OFF: unknown switch 'no_such_switch'" in err
