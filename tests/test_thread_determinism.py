"""Results are bitwise identical whatever the thread count (fixed partition, ordered merges)."""

import numpy as np
import pytest

import fusedtrain as ft
from optim_cases import CASES, FIRST_OF_EACH_RULE
from precisions import PRECISIONS
from stepping import SideBySide, seed_for

# About a million elements, uneven, so partitions differ with every thread count.
SHAPES = [(2 ** 19 + 17,), (300001,), (7,), (4097,), (1, 200003), (0,)]
THREADS = (1, 2, 3)
EXTRA = [c for c in CASES if c.id in ("adam_[amsgrad]", "rmsprop_[centered-momentum]")]


def _bits(arrays):
    return [a.copy().view(np.uint8) for a in arrays]


def _run_rule(case, precision, threads):
    ft.set_num_threads(threads)
    problem = SideBySide(case, precision, SHAPES, seed_for(case, "threads"))
    for k in range(1, 4):
        grads, _ = problem.new_grads()
        problem.call_rule(ft, problem.ext_params, grads, problem.ext_state, problem.ext_master, k)
    out = list(problem.ext_params) + [a for v in problem.ext_state.values() for a in v]
    return _bits(out + (problem.ext_master or []))


@pytest.mark.parametrize("precision", [PRECISIONS[0], PRECISIONS[-1]], ids=str)
@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE + EXTRA, ids=str)
def test_rules_bitwise_identical_across_thread_counts(case, precision, isa, restore_threads):
    results = [_run_rule(case, precision, n) for n in THREADS]
    for n, result in zip(THREADS[1:], results[1:]):
        for i, (a, b) in enumerate(zip(results[0], result)):
            assert np.array_equal(a, b), f"array #{i} differs between 1 and {n} threads"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_utilities_bitwise_identical_across_thread_counts(dtype, isa, restore_threads):
    rng = np.random.default_rng(seed_for("threads-utils", dtype))
    arrays = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    norms, clipped, averaged = [], [], []
    for n in THREADS:
        ft.set_num_threads(n)
        norms.append([ft.global_norm(arrays, t) for t in (1.0, 2.0, 3.5, float("inf"))])
        grads = [a.copy() for a in arrays]
        clipped.append((ft.clip_grad_norm_(grads, 1.0), _bits(grads)))
        averages = [np.zeros_like(a) for a in arrays]
        ft.ema_(averages, arrays, decay=0.9)
        averaged.append(_bits(averages))
    for n, norm, clip, avg in zip(THREADS[1:], norms[1:], clipped[1:], averaged[1:]):
        assert norm == norms[0], f"global_norm differs between 1 and {n} threads"
        assert clip[0] == clipped[0][0]
        assert all(np.array_equal(a, b) for a, b in zip(clip[1], clipped[0][1])), f"clip_grad_norm_ at {n} threads"
        assert all(np.array_equal(a, b) for a, b in zip(avg, averaged[0])), f"ema_ at {n} threads"
