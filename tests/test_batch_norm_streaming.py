"""Synchronized-BN building blocks: merge of split batches, running-stat updates, RunningStats."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from fusedtrain import _C
from bn_cases import CASES, make_inputs, stats_tol
from precisions import Tolerance, assert_close

MERGE_CASES = [c for c in CASES if c.shape[0] >= 4]


def _split(x, parts):
    # Uneven pieces along N, one of them possibly a single sample.
    cuts = sorted(set(np.linspace(0, x.shape[0], parts + 1).astype(int)[1:-1]) | {1})
    return np.split(x, cuts)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", MERGE_CASES, ids=str)
def test_merge_of_split_batches_equals_whole_batch(case, dtype, isa):
    x = make_inputs(case, dtype, "merge")[0]
    pieces = _split(x, 3)
    stats = [ft.batch_norm_stats(p, channels_last=case.channels_last) for p in pieces]
    mean, var, count = ft.merge_stats([s[0] for s in stats], np.stack([s[1] for s in stats]),
                                      [s[2] for s in stats])
    whole_mean, whole_var, whole_count = ref.batch_norm_stats(x, channels_last=case.channels_last)
    assert count == whole_count and isinstance(count, int)
    assert_close(mean, whole_mean, stats_tol(dtype), "mean")
    assert_close(var, whole_var, stats_tol(dtype), "var")
    want = ref.merge_stats(np.stack([s[0] for s in stats]), np.stack([s[1] for s in stats]),
                           [s[2] for s in stats])
    assert_close(mean, want[0], stats_tol(dtype), "mean vs reference merge")


def test_merge_ignores_empty_rows_and_is_stable(isa):
    rng = np.random.default_rng(3)
    a = 1e4 + rng.standard_normal((50, 4))
    b = 1e4 + rng.standard_normal((70, 4))
    ma, va, na = ft.batch_norm_stats(a)
    mb, vb, nb = ft.batch_norm_stats(b)
    mean, var, n = ft.merge_stats(np.stack([ma, np.zeros(4), mb]), np.stack([va, np.zeros(4), vb]),
                                  np.array([na, 0, nb]))
    both = np.concatenate([a, b])
    assert n == 120
    assert_close(mean, both.mean(0), Tolerance(1e-14, 0), "mean")
    assert_close(var, both.var(0), Tolerance(1e-10, 0), "var")


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.75, 1.0])
def test_stats_plus_update_equals_training_forward(momentum, isa):
    case = CASES[7]
    x, w, b, rm, rv, _ = make_inputs(case, "float32", "update")
    rm2, rv2 = rm.copy(), rv.copy()
    ft.batch_norm_forward(x, w, b, rm, rv, momentum=momentum)
    mean, var, count = ft.batch_norm_stats(x)
    ft.update_running_stats_(rm2, rv2, mean, var, count, momentum=momentum)
    assert_close(rm2, rm, Tolerance(1e-6, 1e-7), "running_mean")
    assert_close(rv2, rv, Tolerance(1e-6, 1e-7), "running_var")
    want_rm, want_rv = rm2.astype(np.float64), rv2.astype(np.float64)
    rm3, rv3 = rm2.copy(), rv2.copy()
    ft.update_running_stats_(rm3, rv3, mean, var, np.array([count]), momentum=momentum)
    ref.update_running_stats_(want_rm, want_rv, mean, var, count, momentum=momentum)
    assert_close(rm3, want_rm, Tolerance(1e-6, 1e-7), "running_mean vs reference")
    assert_close(rv3, want_rv, Tolerance(1e-6, 1e-7), "running_var vs reference")
    # Note [device count]: the kernel reading the count from memory (the public function reads
    # a CPU count itself; a GPU one goes to the kernel) gives the same bits as a number.
    for held in (np.array([count], np.float64), np.array([count], np.float32)):
        rm4, rv4 = rm2.copy(), rv2.copy()
        _C.bn_update_running_stats(rm4, rv4, mean, var, held, momentum)
        assert np.array_equal(rm4, rm3) and np.array_equal(rv4, rv3)
    with pytest.raises(ValueError, match="count"):
        _C.bn_update_running_stats(rm2.copy(), rv2.copy(), mean, var, np.array([2.0, 3.0]), momentum)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_running_stats_streaming_equals_whole_dataset(dtype, channels_last, isa):
    rng = np.random.default_rng(5)
    shape = (3, 5, 4, 6) if not channels_last else (3, 4, 6, 5)
    batches = [(100.0 + 3 * rng.standard_normal((n,) + shape[1:])).astype(dtype)
               for n in (7, 1, 12, 3, 9)]
    rs = ft.RunningStats(5, channels_last=channels_last)
    assert rs.count == 0
    for batch in batches[:3]:
        rs.update(batch)
    other = ft.RunningStats(5, channels_last=channels_last)
    for batch in batches[3:]:
        other.update(batch)
    rs.merge(other)
    whole = np.concatenate(batches).astype(np.float64)
    axes = (0, 1, 2) if channels_last else (0, 2, 3)
    assert rs.count == whole.size // 5
    tol = Tolerance(1e-12, 0) if dtype == "float64" else Tolerance(1e-6, 0)
    assert_close(rs.mean, whole.mean(axes), tol, "mean")
    assert_close(rs.var, whole.var(axes), Tolerance(tol.rtol * 10, 0), "var")
    assert_close(rs.std, whole.std(axes), Tolerance(tol.rtol * 10, 0), "std")


def test_running_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        ft.RunningStats(0)
    with pytest.raises(TypeError, match="num_features"):
        ft.RunningStats(2.5)
    rs = ft.RunningStats(3)
    with pytest.raises(ValueError, match="channels"):
        rs.update(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="features"):
        rs.merge(ft.RunningStats(4))
    assert rs.count == 0
