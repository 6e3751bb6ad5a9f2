"""Batch norm forward (training, eval), backward and statistics against the float64 reference."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from fusedtrain import _C
from bn_cases import CASES, DTYPES, SMALL, make_inputs, output_tol, stats_tol
from precisions import Tolerance, assert_close
from stepping import seed_for

# Every dtype on the small cases, float32 on all of them.
GRID = [(c, d) for c in SMALL for d in DTYPES] + [(c, "float32") for c in CASES if c not in SMALL]


def _ids(p):
    return f"{p[0]}-{p[1]}"


@pytest.mark.parametrize("case_dtype", GRID, ids=_ids)
def test_training_forward_and_backward(case_dtype, isa):
    case, dtype = case_dtype
    x, w, b, rm, rv, dy = make_inputs(case, dtype)
    ref_rm, ref_rv = rm.astype(np.float64), rv.astype(np.float64)
    y, save_mean, save_invstd = ft.batch_norm_forward(
        x, w, b, rm, rv, training=True, momentum=case.momentum, channels_last=case.channels_last)
    want_y, want_mean, want_invstd = ref.batch_norm_forward(
        x, w, b, ref_rm, ref_rv, training=True, momentum=case.momentum,
        channels_last=case.channels_last)

    stats_dtype = np.float64 if dtype == "float64" else np.float32
    assert y.dtype == x.dtype and y.shape == x.shape
    assert save_mean.dtype == stats_dtype and save_invstd.dtype == stats_dtype
    assert_close(y, want_y, output_tol(dtype), "y")
    assert_close(save_mean, want_mean, stats_tol(dtype), "save_mean")
    assert_close(save_invstd, want_invstd, stats_tol(dtype), "save_invstd")
    assert_close(rm, ref_rm, stats_tol(dtype), "running_mean")
    assert_close(rv, ref_rv, stats_tol(dtype), "running_var")

    dx, dw, db = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd,
                                        channels_last=case.channels_last)
    want_dx, want_dw, want_db = ref.batch_norm_backward(dy, x, w, save_mean, save_invstd,
                                                        channels_last=case.channels_last)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    # dx subtracts two per-channel means from dy: float32 sums leave a little more error.
    tol = output_tol(dtype)
    assert_close(dx, want_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx")
    if w is None:
        assert dw is None and db is None
    else:
        assert dw.dtype == w.dtype and db.dtype == w.dtype
        sum_tol = Tolerance(1e-10, 1e-11) if dtype == "float64" else Tolerance(1e-5, 2e-5)
        assert_close(dw, want_dw, sum_tol, "dweight")
        assert_close(db, want_db, sum_tol, "dbias")


@pytest.mark.parametrize("case_dtype", GRID, ids=_ids)
def test_backward_halves(case_dtype, isa):
    """Note [given sums]: the sums alone, then dx from the sums of a larger batch (this x a
    third of it, as one rank of three would see)."""
    case, dtype = case_dtype
    x, w, b, rm, rv, dy = make_inputs(case, dtype)
    cl = case.channels_last
    _, save_mean, save_invstd = ft.batch_norm_forward(x, w, b, training=True, channels_last=cl)
    none, s_xhat, s_dy = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd,
                                                channels_last=cl, input_grad=False)
    _, want_xhat, want_dy = ref.batch_norm_backward(dy, x, w, save_mean, save_invstd,
                                                    channels_last=cl, input_grad=False)
    assert none is None
    out_dtype = w.dtype if w is not None else (np.float64 if dtype == "float64" else np.float32)
    assert s_xhat.dtype == out_dtype and s_dy.dtype == out_dtype
    sum_tol = Tolerance(1e-10, 1e-11) if dtype == "float64" else Tolerance(1e-5, 2e-5)
    assert_close(s_xhat, want_xhat, sum_tol, "sum_dy_xhat")
    assert_close(s_dy, want_dy, sum_tol, "sum_dy")

    rng = np.random.default_rng(seed_for("bn halves", case, dtype))
    count = 3 * (x.size // s_dy.size)
    sums = (want_dy * 3 + rng.standard_normal(want_dy.shape),
            want_xhat * 3 + rng.standard_normal(want_xhat.shape), count)
    dx, dw, db = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd, channels_last=cl,
                                        sums=sums)
    want_dx, _, _ = ref.batch_norm_backward(dy, x, w, save_mean, save_invstd, channels_last=cl,
                                            sums=sums)
    assert dw is None and db is None and dx.dtype == x.dtype and dx.shape == x.shape
    tol = output_tol(dtype)
    assert_close(dx, want_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx")
    # The whole batch being this x: the halves are the one-call backward.
    full_dx, _, _ = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd, channels_last=cl)
    own = (want_dy, want_xhat, count // 3)
    split_dx, _, _ = ft.batch_norm_backward(dy, x, w, save_mean, save_invstd, channels_last=cl,
                                            sums=own)
    assert_close(split_dx, full_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx, own sums")


@pytest.mark.parametrize("case_dtype", [(c, d) for c in SMALL[:8] for d in DTYPES], ids=_ids)
def test_eval_forward_uses_running_stats_and_changes_nothing(case_dtype, isa):
    case, dtype = case_dtype
    x, w, b, rm, rv, _ = make_inputs(case, dtype, "eval")
    rm0, rv0 = rm.copy(), rv.copy()
    y, save_mean, save_invstd = ft.batch_norm_forward(x, w, b, rm, rv, training=False, eps=1e-3,
                                                      channels_last=case.channels_last)
    want_y, _, want_invstd = ref.batch_norm_forward(x, w, b, rm.astype(np.float64),
                                                    rv.astype(np.float64), training=False,
                                                    eps=1e-3, channels_last=case.channels_last)
    assert_close(y, want_y, output_tol(dtype), "y")
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    assert_close(save_mean, rm0, stats_tol(dtype), "save_mean")
    assert_close(save_invstd, want_invstd, stats_tol(dtype), "save_invstd")


@pytest.mark.parametrize("case_dtype", GRID, ids=_ids)
def test_batch_norm_stats(case_dtype, isa):
    case, dtype = case_dtype
    x = make_inputs(case, dtype, "stats")[0]
    mean, var, count = ft.batch_norm_stats(x, channels_last=case.channels_last)
    want_mean, want_var, want_count = ref.batch_norm_stats(x, channels_last=case.channels_last)
    assert isinstance(count, int) and count == want_count == case.per_channel
    assert_close(mean, want_mean, stats_tol(dtype), "mean")
    assert_close(var, want_var, stats_tol(dtype), "var")


def test_training_without_running_stats_or_affine(isa):
    case = CASES[3]
    x, _, _, _, _, _ = make_inputs(case, "float32", "bare")
    y, mean, invstd = ft.batch_norm_forward(x)
    want_y, want_mean, want_invstd = ref.batch_norm_forward(x)
    assert_close(y, want_y, output_tol("float32"), "y")
    assert_close(mean, want_mean, stats_tol("float32"), "mean")


def test_forward_stats_equal_batch_norm_stats(isa):
    # One statistics routine serves both: the saved mean is the stats' mean, bit for bit.
    for case in CASES:
        x = make_inputs(case, "float32", "same")[0]
        _, save_mean, save_invstd = ft.batch_norm_forward(x, channels_last=case.channels_last,
                                                          eps=0.0)
        mean, var, _ = ft.batch_norm_stats(x, channels_last=case.channels_last)
        assert np.array_equal(save_mean, mean), case.id
        np.testing.assert_allclose(save_invstd, 1 / np.sqrt(var.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_stable_at_mean_1e4(dtype, channels_last, isa):
    # E[x^2] - E[x]^2 in float32 would lose every digit of a unit variance at mean 1e4.
    from precisions import dtype_named
    rng = np.random.default_rng(11)
    shape = (16, 6, 37, 29) if not channels_last else (16, 37, 29, 6)
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    if dtype == "bfloat16":  # bf16 has 8 bits: use a spread it can represent at this mean
        x = (1e4 + 64 * rng.standard_normal(shape)).astype(np.float32)
    x = x.astype(dtype_named(dtype))
    mean, var, _ = ft.batch_norm_stats(x, channels_last=channels_last)
    want_mean, want_var, _ = ref.batch_norm_stats(x, channels_last=channels_last)
    assert_close(var, want_var, Tolerance(1e-5, 0), "var")
    assert_close(mean, want_mean, Tolerance(1e-7, 0), "mean")
    y, sm, si = ft.batch_norm_forward(x, channels_last=channels_last)
    want_y = ref.batch_norm_forward(x, channels_last=channels_last)[0]
    # y is O(1): the split mean keeps it accurate to float32 rounding of the centered values.
    tol = output_tol(dtype) if dtype != "float32" else Tolerance(0, 2e-5)
    assert_close(y, want_y, tol, "y")
    dy = rng.standard_normal(shape).astype(np.float32).astype(x.dtype)
    dx = ft.batch_norm_backward(dy, x, None, sm, si, channels_last=channels_last)[0]
    want_dx = ref.batch_norm_backward(dy, x, None, sm, si, channels_last=channels_last)[0]
    tol = output_tol(dtype) if dtype != "float32" else Tolerance(0, 1e-4)
    assert_close(dx, want_dx, Tolerance(tol.rtol * 4, tol.atol * 4), "dx")


# (shape, channels_last): inputs without values per channel, by every dimension that can be 0.
EMPTY = [((0, 3, 4), False), ((64, 8, 0), False), ((0, 1), False), ((0, 8), False),
         ((4, 8, 0, 3), False), ((0, 5, 3), True), ((4, 0, 1), True), ((0, 1, 1), False)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape, channels_last", EMPTY, ids=str)
def test_empty_batch_in_eval_and_stats(shape, channels_last, dtype, isa):
    x = np.zeros(shape, dtype)
    C = shape[-1] if channels_last else shape[1]
    rng = np.random.default_rng(seed_for("empty", shape))
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.random(C).astype(np.float32) + 0.5
    y, save_mean, save_invstd = ft.batch_norm_forward(x, running_mean=rm, running_var=rv,
                                                      training=False, channels_last=channels_last)
    want = ref.batch_norm_forward(x.astype(np.float64), None, None, rm.astype(np.float64),
                                  rv.astype(np.float64), training=False, channels_last=channels_last)
    assert y.shape == x.shape
    assert_close(save_mean, want[1], Tolerance(1e-7, 0), "save_mean")
    assert_close(save_invstd, want[2], Tolerance(1e-6, 0), "save_invstd")
    mean, var, count = ft.batch_norm_stats(x, channels_last=channels_last)
    assert count == 0 and np.all(mean == 0) and np.all(var == 0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape, channels_last", EMPTY, ids=str)
def test_empty_batch_in_training(shape, channels_last, dtype, isa):
    """Note [empty training batch]: as torch's F.batch_norm, an empty batch trains to an empty y
    and leaves the running statistics bit for bit; its saved statistics are those of no values
    and its backward gives zero dweight / dbias.  One value per channel still raises."""
    x = np.zeros(shape, dtype)
    C = shape[-1] if channels_last else shape[1]
    rng = np.random.default_rng(seed_for("empty training", shape))
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.random(C).astype(np.float32) + 0.5
    w, b = rng.random(C).astype(np.float32) + 0.5, rng.standard_normal(C).astype(np.float32)
    kept = rm.tobytes() + rv.tobytes()
    eps = 1e-3
    y, save_mean, save_invstd = ft.batch_norm_forward(x, w, b, rm, rv, training=True, eps=eps,
                                                      channels_last=channels_last)
    want = ref.batch_norm_forward(x, w, b, rm.astype(np.float64), rv.astype(np.float64),
                                  training=True, eps=eps, channels_last=channels_last)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert rm.tobytes() + rv.tobytes() == kept, "an empty batch changed the running statistics"
    assert_close(save_mean, want[1], Tolerance(0, 0), "save_mean")
    assert_close(save_invstd, want[2], Tolerance(1e-6, 0), "save_invstd")
    assert np.all(save_mean == 0) and np.allclose(save_invstd, 1 / np.sqrt(eps), rtol=1e-6)
    dx, dweight, dbias = ft.batch_norm_backward(x, x, w, save_mean, save_invstd,
                                                channels_last=channels_last)
    assert dx.shape == x.shape and dweight.dtype == w.dtype
    assert np.all(dweight == 0) and np.all(dbias == 0)
    _, sum_dy_xhat, sum_dy = ft.batch_norm_backward(x, x, None, save_mean, save_invstd,
                                                    channels_last=channels_last, input_grad=False)
    assert np.all(sum_dy_xhat == 0) and np.all(sum_dy == 0)
    one = np.zeros((1, C) if not channels_last else (1, 1, C), dtype)
    with pytest.raises(ValueError, match="x has 1 value per channel"):
        ft.batch_norm_forward(one, running_mean=rm, running_var=rv, channels_last=channels_last)
    with pytest.raises(ValueError, match="x has 1 value per channel"):
        ref.batch_norm_forward(one, channels_last=channels_last)
    assert rm.tobytes() + rv.tobytes() == kept


@pytest.mark.parametrize("shape, channels_last", EMPTY, ids=str)
def test_empty_batch_writes_no_element_of_y(shape, channels_last, isa):
    # y is a zero-size view inside a canary buffer: a kernel that writes any element of it (as
    # if it had values) changes the canary, without relying on the allocator to notice.
    x = np.zeros(shape, np.float32)
    C = shape[-1] if channels_last else shape[1]
    canary = np.full(4096, 7.0, np.float32)
    y = np.ndarray(shape, np.float32, buffer=canary, offset=4000)
    assert y.ctypes.data == canary.ctypes.data + 4000
    stats = [np.empty(C, np.float32), np.empty(C, np.float32)]
    _C.bn_forward(x, None, None, np.zeros(C, np.float32), np.ones(C, np.float32), y, *stats,
                  False, 0.1, 1e-5, channels_last)
    assert np.all(canary == 7.0), "an empty input's forward wrote outside y"
