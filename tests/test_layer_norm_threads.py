"""Layer, RMS, group and instance norm results are bitwise identical for 1, 2 and 3 threads, on
every partition path (hot rows and groups, split rows and groups, channels-last row pieces)."""

import numpy as np
import pytest

import fusedtrain as ft
from ln_cases import GroupCase, RowCase, group_inputs, row_inputs

ROWS = [(RowCase("rows-4096x256", (4096, 256), (256,)), "float32"),
        (RowCase("rows-bf16-999x130", (999, 130), (130,)), "bfloat16"),
        (RowCase("wide-3x400000", (3, 400000), (400000,)), "float32")]
GROUPS = [(GroupCase("hot-8x32x20x20-g8", (8, 32, 20, 20), 8), "float32"),
          (GroupCase("split-1x4x300x300-g2", (1, 4, 300, 300), 2), "float32"),
          (GroupCase("short-24x64x7x7-g32", (24, 64, 7, 7), 32), "float32"),
          (GroupCase("short-bf16-9x40x9x9-g8", (9, 40, 9, 9), 8), "bfloat16"),
          (GroupCase("cl-4x96x96x32-g4", (4, 96, 96, 32), 4, channels_last=True), "float64"),
          (GroupCase("cl-f16-3x40x40x24-g24", (3, 40, 40, 24), 24, channels_last=True), "float16"),
          (GroupCase("cl-hot-7x3x7x1048-g8", (7, 3, 7, 1048), 8, channels_last=True), "float32")]
THREADS = (1, 2, 3)


def _bits(arrays):
    return [np.ascontiguousarray(a).view(np.uint8).copy() for a in arrays if a is not None]


def _rows(case, dtype, n):
    ft.set_num_threads(n)
    x, w, b, dy = row_inputs(case, dtype, "threads")
    y, mean, rstd = ft.layer_norm_forward(x, case.normalized, w, b)
    out = [y, mean, rstd, *ft.layer_norm_backward(dy, x, case.normalized, mean, rstd, w)]
    y, rstd = ft.rms_norm_forward(x, case.normalized, w)
    return _bits(out + [y, rstd, *ft.rms_norm_backward(dy, x, case.normalized, rstd, w)])


def _groups(case, dtype, n):
    ft.set_num_threads(n)
    x, w, b, rm, rv, dy = group_inputs(case, dtype, "threads")
    cl = case.channels_last
    y, mean, rstd = ft.group_norm_forward(x, case.groups, w, b, channels_last=cl)
    out = [y, mean, rstd, *ft.group_norm_backward(dy, x, case.groups, mean, rstd, w, channels_last=cl)]
    out += list(ft.instance_norm(x, rm, rv, w, b, channels_last=cl)) + [rm, rv]
    return _bits(out)


@pytest.mark.parametrize("case_dtype", ROWS + GROUPS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_bitwise_identical_across_thread_counts(case_dtype, isa, restore_threads):
    case, dtype = case_dtype
    run = _rows if isinstance(case, RowCase) else _groups
    results = [run(case, dtype, n) for n in THREADS]
    for n, result in zip(THREADS[1:], results[1:]):
        for i, (a, b) in enumerate(zip(results[0], result)):
            assert np.array_equal(a, b), f"output #{i} differs between 1 and {n} threads"
