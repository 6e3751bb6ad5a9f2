"""Batch norm results are bitwise identical for 1, 2 and 3 threads, on every partition path."""

import numpy as np
import pytest

import fusedtrain as ft
from bn_cases import BnCase, make_inputs

# Each large enough to wake 3 threads: hot planar channels, split planar channels (forward and
# backward), rows (channels-last and 2-d), a half dtype.
CASES = [
    (BnCase("planar-hot-8x32x20x20", (8, 32, 20, 20)), "float32"),
    (BnCase("planar-split-1x2x520x520", (1, 2, 520, 520)), "float32"),
    (BnCase("planar-bwd-split-2x3x260x260", (2, 3, 260, 260)), "bfloat16"),
    (BnCase("rows-cl-16x40x40x24", (16, 40, 40, 24), channels_last=True), "float32"),
    (BnCase("rows-cl-tiles-6x30x30x83", (6, 30, 30, 83), channels_last=True), "bfloat16"),
    (BnCase("rows-2d-9001x67", (9001, 67)), "float64"),
    (BnCase("planar-1-channel-cl-200000x1", (200000, 1), channels_last=True), "float32"),
]
THREADS = (1, 2, 3)


def _run(case, dtype, threads):
    ft.set_num_threads(threads)
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "threads")
    y, mean, invstd = ft.batch_norm_forward(x, w, b, rm, rv, channels_last=case.channels_last)
    dx, dw, db = ft.batch_norm_backward(dy, x, w, mean, invstd, channels_last=case.channels_last)
    smean, svar, _ = ft.batch_norm_stats(x, channels_last=case.channels_last)
    return [a.copy().view(np.uint8) for a in (y, mean, invstd, rm, rv, dx, dw, db, smean, svar)]


@pytest.mark.parametrize("case_dtype", CASES, ids=lambda p: f"{p[0]}-{p[1]}")
def test_bitwise_identical_across_thread_counts(case_dtype, isa, restore_threads):
    case, dtype = case_dtype
    results = [_run(case, dtype, n) for n in THREADS]
    names = ("y", "save_mean", "save_invstd", "running_mean", "running_var", "dx", "dweight",
             "dbias", "stats mean", "stats var")
    for n, result in zip(THREADS[1:], results[1:]):
        for name, a, b in zip(names, results[0], result):
            assert np.array_equal(a, b), f"{name} differs between 1 and {n} threads"
