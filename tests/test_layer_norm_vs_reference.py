"""Layer, RMS, group and instance norm (forward, backward) against the float64 reference, on every
dtype and CPU ISA path; stability at mean 1e4, empty inputs."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from bn_cases import output_tol, stats_tol
from ln_cases import (DTYPES, GROUP_CASES, GROUP_SMALL, ROW_CASES, ROW_SMALL, GroupCase,
                      RowCase, group_inputs, instance_norm_applies, row_inputs)
from norm_cases import rng_for
from precisions import Tolerance, assert_close, dtype_named

ROW_GRID = [(c, d) for c in ROW_SMALL for d in DTYPES] + [(c, "float32") for c in ROW_CASES if c not in ROW_SMALL]
GROUP_GRID = [(c, d) for c in GROUP_SMALL for d in DTYPES] + \
    [(c, "float32") for c in GROUP_CASES if c not in GROUP_SMALL]


def _ids(p):
    return f"{p[0]}-{p[1]}"


def _stats_dtype(dtype):
    return np.float64 if dtype == "float64" else np.float32


def _grad_tol(dtype):
    # dx subtracts two per-group means from dy: float32 sums leave a little more error.
    tol = output_tol(dtype)
    return Tolerance(tol.rtol * 4, tol.atol * 4)


def _dx_scale(dy, rstd, w):
    """The size of dx's terms (rstd * w * dy): dx itself can be their cancelling difference (an
    RMS-norm row of one value: dx = rstd * g * eps / (x^2 + eps))."""
    wmax = 1.0 if w is None else float(np.max(np.abs(w)))
    return float(np.max(np.abs(np.asarray(dy, np.float64)), initial=0)) * float(np.max(rstd, initial=0)) * wmax


def _sum_tol(dtype):
    return Tolerance(1e-10, 1e-11) if dtype == "float64" else Tolerance(1e-5, 2e-5)


@pytest.mark.parametrize("case_dtype", ROW_GRID, ids=_ids)
def test_layer_norm(case_dtype, isa):
    case, dtype = case_dtype
    x, w, b, dy = row_inputs(case, dtype)
    y, mean, rstd = ft.layer_norm_forward(x, case.normalized, w, b, eps=case.eps)
    want_y, want_mean, want_rstd = ref.layer_norm_forward(x, case.normalized, w, b, eps=case.eps)
    stat_shape = case.shape[:len(case.shape) - len(case.normalized)] + (1,) * len(case.normalized)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert mean.shape == rstd.shape == stat_shape and mean.dtype == _stats_dtype(dtype)
    assert_close(y, want_y, output_tol(dtype), "y")
    assert_close(mean, want_mean, stats_tol(dtype), "mean")
    assert_close(rstd, want_rstd, stats_tol(dtype), "rstd")

    dx, dw, db = ft.layer_norm_backward(dy, x, case.normalized, mean, rstd, w)
    want_dx, want_dw, want_db = ref.layer_norm_backward(dy, x, case.normalized, mean, rstd, w)
    assert dx.dtype == x.dtype
    assert_close(dx, want_dx, _grad_tol(dtype), "dx", _dx_scale(dy, rstd, w))
    if w is None:
        assert dw is None and db is None
    else:
        assert dw.shape == w.shape and dw.dtype == w.dtype and db.dtype == w.dtype
        assert_close(dw, want_dw, _sum_tol(dtype), "dweight")
        assert_close(db, want_db, _sum_tol(dtype), "dbias")


@pytest.mark.parametrize("case_dtype", ROW_GRID, ids=_ids)
def test_rms_norm(case_dtype, isa):
    case, dtype = case_dtype
    x, w, _, dy = row_inputs(case, dtype, "rms")
    eps = None if case.eps == 1e-5 else case.eps  # None: the dtype's machine epsilon
    y, rstd = ft.rms_norm_forward(x, case.normalized, w, eps=eps)
    want_y, want_rstd = ref.rms_norm_forward(x, case.normalized, w, eps=eps)
    assert y.dtype == x.dtype and rstd.dtype == _stats_dtype(dtype)
    assert_close(y, want_y, output_tol(dtype), "y")
    assert_close(rstd, want_rstd, stats_tol(dtype), "rstd")
    dx, dw = ft.rms_norm_backward(dy, x, case.normalized, rstd, w)
    want_dx, want_dw = ref.rms_norm_backward(dy, x, case.normalized, rstd, w)
    assert_close(dx, want_dx, _grad_tol(dtype), "dx", _dx_scale(dy, rstd, w))
    if w is None:
        assert dw is None
    else:
        assert_close(dw, want_dw, _sum_tol(dtype), "dweight")


def test_rms_norm_default_eps_is_the_dtypes_machine_epsilon(isa):
    x = np.full((2, 4), 1e-5, np.float32)  # mean(x^2) = 1e-10, far below float32's epsilon
    ms = float(x[0, 0]) ** 2
    _, rstd = ft.rms_norm_forward(x, 4)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(ms + np.finfo(np.float32).eps), rtol=1e-6)
    _, rstd64 = ft.rms_norm_forward(x.astype(np.float64), (4,))
    np.testing.assert_allclose(rstd64, 1 / np.sqrt(ms + np.finfo(np.float64).eps), rtol=1e-12)


@pytest.mark.parametrize("case_dtype", GROUP_GRID, ids=_ids)
def test_group_norm(case_dtype, isa):
    case, dtype = case_dtype
    x, w, b, _, _, dy = group_inputs(case, dtype)
    cl = case.channels_last
    y, mean, rstd = ft.group_norm_forward(x, case.groups, w, b, eps=case.eps, channels_last=cl)
    want_y, want_mean, want_rstd = ref.group_norm_forward(x, case.groups, w, b, eps=case.eps,
                                                          channels_last=cl)
    assert mean.shape == rstd.shape == (case.shape[0], case.groups)
    assert mean.dtype == _stats_dtype(dtype) and y.dtype == x.dtype
    assert_close(y, want_y, output_tol(dtype), "y")
    assert_close(mean, want_mean, stats_tol(dtype), "mean")
    assert_close(rstd, want_rstd, stats_tol(dtype), "rstd")
    dx, dw, db = ft.group_norm_backward(dy, x, case.groups, mean, rstd, w, channels_last=cl)
    want_dx, want_dw, want_db = ref.group_norm_backward(dy, x, case.groups, mean, rstd, w,
                                                        channels_last=cl)
    assert_close(dx, want_dx, _grad_tol(dtype), "dx", _dx_scale(dy, rstd, w))
    if w is None:
        assert dw is None and db is None
    else:
        assert_close(dw, want_dw, _sum_tol(dtype), "dweight")
        assert_close(db, want_db, _sum_tol(dtype), "dbias")


def _frozen_calls(kind, case, dtype):
    """(backward(weight_grads), reference backward(weight_grads)) of one case, its forward run."""
    if kind == "group":
        x, w, b, _, _, dy = group_inputs(case, dtype)
        cl = case.channels_last
        _, mean, rstd = ft.group_norm_forward(x, case.groups, w, b, channels_last=cl)
        args = (dy, x, case.groups, mean, rstd, w)
        return (lambda wg: ft.group_norm_backward(*args, channels_last=cl, weight_grads=wg),
                lambda wg: ref.group_norm_backward(*args, channels_last=cl, weight_grads=wg))
    x, w, b, dy = row_inputs(case, dtype, kind)
    if kind == "rms":
        _, rstd = ft.rms_norm_forward(x, case.normalized, w)
        args = (dy, x, case.normalized, rstd, w)
        return (lambda wg: ft.rms_norm_backward(*args, weight_grads=wg),
                lambda wg: ref.rms_norm_backward(*args, weight_grads=wg))
    _, mean, rstd = ft.layer_norm_forward(x, case.normalized, w, b)
    args = (dy, x, case.normalized, mean, rstd, w)
    return (lambda wg: ft.layer_norm_backward(*args, weight_grads=wg),
            lambda wg: ref.layer_norm_backward(*args, weight_grads=wg))


@pytest.mark.parametrize("kind, case_dtype", [(k, cd) for k in ("layer", "rms") for cd in ROW_GRID] +
                         [("group", cd) for cd in GROUP_GRID], ids=lambda p: p if isinstance(p, str) else _ids(p))
def test_backward_without_weight_grads(kind, case_dtype, isa):
    """weight_grads=False (a frozen weight): the column sums are skipped, dx is the same bits as
    with them, and every weight gradient is None, as the reference's."""
    case, dtype = case_dtype
    ours, theirs = _frozen_calls(kind, case, dtype)
    full, frozen = ours(True), ours(False)
    assert frozen[0].tobytes() == full[0].tobytes()
    assert all(g is None for g in frozen[1:]) and all(g is None for g in theirs(False)[1:])


@pytest.mark.parametrize("case_dtype", ROW_GRID, ids=_ids)
def test_layer_norm_backward_without_bias_grads(case_dtype, isa):
    """bias_grads=False (a layer without a bias, or a frozen one): dbias is None, as the
    reference's, and dx and dweight are the same bits as with dbias (its sums are skipped)."""
    case, dtype = case_dtype
    x, w, b, dy = row_inputs(case, dtype, "layer")
    _, mean, rstd = ft.layer_norm_forward(x, case.normalized, w, b)
    args = (dy, x, case.normalized, mean, rstd, w)
    full, alone = ft.layer_norm_backward(*args), ft.layer_norm_backward(*args, bias_grads=False)
    assert alone[2] is None and ref.layer_norm_backward(*args, bias_grads=False)[2] is None
    assert (full[2] is None) == (w is None)
    for got, want in zip(alone[:2], full[:2]):
        assert (got is None and want is None) or got.tobytes() == want.tobytes()


INSTANCE = [c for c in GROUP_SMALL if instance_norm_applies(c)]


@pytest.mark.parametrize("case_dtype", [(c, d) for c in INSTANCE for d in DTYPES], ids=_ids)
@pytest.mark.parametrize("momentum", [0.1, 1.0])
def test_instance_norm(case_dtype, momentum, isa):
    case, dtype = case_dtype
    x, w, b, rm, rv, dy = group_inputs(case, dtype, "instance")
    cl = case.channels_last
    ref_rm, ref_rv = rm.astype(np.float64), rv.astype(np.float64)
    y, mean, rstd = ft.instance_norm(x, rm, rv, w, b, momentum=momentum, eps=case.eps, channels_last=cl)
    want_y, want_mean, want_rstd = ref.instance_norm(x, ref_rm, ref_rv, w, b, momentum=momentum,
                                                     eps=case.eps, channels_last=cl)
    assert mean.shape == (case.shape[0], case.channels)
    assert_close(y, want_y, output_tol(dtype), "y")
    assert_close(rstd, want_rstd, stats_tol(dtype), "rstd")
    assert_close(rm, ref_rm, stats_tol(dtype), "running_mean")
    assert_close(rv, ref_rv, stats_tol(dtype), "running_var")
    # The gradient of the input-statistics path is group norm's with one channel per group.
    dx = ft.group_norm_backward(dy, x, case.channels, mean, rstd, w, channels_last=cl)[0]
    want_dx = ref.group_norm_backward(dy, x, case.channels, mean, rstd, w, channels_last=cl)[0]
    assert_close(dx, want_dx, _grad_tol(dtype), "dx", _dx_scale(dy, rstd, w))

    # Normalizing with the running statistics changes nothing.
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = ft.instance_norm(x, rm, rv, w, b, use_input_stats=False, eps=case.eps,
                                     channels_last=cl)
    want_y, want_mean, want_rstd = ref.instance_norm(x, rm.astype(np.float64), rv.astype(np.float64),
                                                     w, b, use_input_stats=False, eps=case.eps,
                                                     channels_last=cl)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    assert_close(y, want_y, output_tol(dtype), "y (running stats)")
    assert_close(mean, want_mean, stats_tol(dtype), "mean (running stats)")
    assert_close(rstd, want_rstd, stats_tol(dtype), "rstd (running stats)")


def test_instance_norm_is_group_norm_with_one_channel_per_group(isa):
    case = GROUP_CASES[0]
    x, w, b, _, _, _ = group_inputs(case, "float32", "same")
    y_in, m_in, r_in = ft.instance_norm(x, None, None, w, b)
    y_gn, m_gn, r_gn = ft.group_norm_forward(x, case.channels, w, b)
    for a, c in ((y_in, y_gn), (m_in, m_gn), (r_in, r_gn)):
        assert np.array_equal(a, c)


def test_layer_norm_statistics_are_batch_norms(isa):
    # Note [planar view]: a row's statistics are those of a batch-norm channel of (1, rows, cols).
    x = rng_for("same-stats").standard_normal((6, 5, 77)).astype(np.float32) * 3 + 2
    _, mean, rstd = ft.layer_norm_forward(x, (5, 77), eps=0.0)
    bn_mean, bn_var, _ = ft.batch_norm_stats(x.reshape(1, 6, 5 * 77))
    assert np.array_equal(mean.reshape(-1), bn_mean)
    np.testing.assert_allclose(rstd.reshape(-1), 1 / np.sqrt(bn_var.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("kind", ["layer", "rms", "group", "group-cl"])
def test_stable_at_mean_1e4(kind, dtype, isa):
    # E[x^2] - E[x]^2 in float32 would lose every digit of a unit variance at mean 1e4.
    rng = rng_for("1e4", kind, dtype)
    shape = (6, 3000) if kind in ("layer", "rms") else ((4, 16, 37, 29) if kind == "group" else (4, 37, 29, 16))
    spread = 64.0 if dtype == "bfloat16" else 1.0  # bf16 has 8 bits: a spread it can represent
    x = (1e4 + spread * rng.standard_normal(shape)).astype(np.float32).astype(dtype_named(dtype))
    dy = rng.standard_normal(shape).astype(np.float32).astype(x.dtype)
    y_tol = output_tol(dtype) if dtype != "float32" else Tolerance(0, 2e-5)
    dx_tol = output_tol(dtype) if dtype != "float32" else Tolerance(0, 1e-4)
    dx_tol = Tolerance(dx_tol.rtol * 4, dx_tol.atol * 4)
    if kind in ("layer", "rms"):
        if kind == "layer":
            y, mean, rstd = ft.layer_norm_forward(x, 3000)
            want = ref.layer_norm_forward(x, 3000)
            assert_close(rstd, want[2], Tolerance(1e-5, 0), "rstd")
            dx = ft.layer_norm_backward(dy, x, 3000, mean, rstd)[0]
            want_dx = ref.layer_norm_backward(dy, x, 3000, mean, rstd)[0]
        else:
            y, rstd = ft.rms_norm_forward(x, 3000)
            want = ref.rms_norm_forward(x, 3000)
            assert_close(rstd, want[1], Tolerance(1e-6, 0), "rstd")
            dx = ft.rms_norm_backward(dy, x, 3000, rstd)[0]
            want_dx = ref.rms_norm_backward(dy, x, 3000, rstd)[0]
    else:
        cl = kind == "group-cl"
        y, mean, rstd = ft.group_norm_forward(x, 4, channels_last=cl)
        want = ref.group_norm_forward(x, 4, channels_last=cl)
        assert_close(rstd, want[2], Tolerance(1e-5, 0), "rstd")
        dx = ft.group_norm_backward(dy, x, 4, mean, rstd, channels_last=cl)[0]
        want_dx = ref.group_norm_backward(dy, x, 4, mean, rstd, channels_last=cl)[0]
    assert_close(y, want[0], y_tol, "y")
    assert_close(dx, want_dx, dx_tol, "dx")


def test_empty_inputs(isa):
    x = np.zeros((0, 8), np.float32)
    w = np.ones(8, np.float32)
    y, mean, rstd = ft.layer_norm_forward(x, 8, w, np.zeros(8, np.float32))
    assert y.shape == (0, 8) and mean.shape == (0, 1)
    dx, dw, db = ft.layer_norm_backward(x, x, 8, mean, rstd, w)
    assert dx.shape == (0, 8) and np.all(dw == 0) and np.all(db == 0)
    g = np.zeros((0, 4, 3), np.float32)
    y, mean, rstd = ft.group_norm_forward(g, 2, np.ones(4, np.float32), None)
    assert y.shape == g.shape and mean.shape == (0, 2)
    dx, dw, db = ft.group_norm_backward(g, g, 2, mean, rstd, np.ones(4, np.float32))
    assert np.all(dw == 0) and np.all(db == 0)


def test_zero_weight_gives_zero_input_gradient(isa):
    # Note [norm grad]: the weight multiplies dy; it is never divided by.
    case = RowCase("zero-w", (4, 37), (37,))
    x, _, b, dy = row_inputs(case, "float32")
    w = np.zeros(37, np.float32)
    _, mean, rstd = ft.layer_norm_forward(x, 37, w, b)
    dx = ft.layer_norm_backward(dy, x, 37, mean, rstd, w)[0]
    assert np.all(dx == 0)
    gcase = GroupCase("zero-w", (2, 4, 9), 2)
    x, _, b, _, _, dy = group_inputs(gcase, "float32")
    w = np.zeros(4, np.float32)
    _, mean, rstd = ft.group_norm_forward(x, 2, w, b)
    assert np.all(ft.group_norm_backward(dy, x, 2, mean, rstd, w)[0] == 0)
