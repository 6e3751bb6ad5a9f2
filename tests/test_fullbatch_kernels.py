"""The full-batch kernels (fusedtrain._C.fullbatch_*) against float64 NumPy, on every CPU ISA path,
dtype and odd size; bitwise identical for any thread count; bad arguments raise before writing."""

import numpy as np
import pytest

import fusedtrain as ft
from fusedtrain import _C
from fullbatch_problems import curvature_pairs, inverse_curvatures
from precisions import dtype_named
from stepping import seed_for

SHAPES = [(1,), (7,), (4097,), (3, 5), (0,), (33,)]
COMPUTE = ["float32", "float64"]
PARAM = ["float32", "float64", "float16", "bfloat16"]
RTOL = {"float32": 2e-6, "float64": 1e-13}


def _rand(dtype, seed, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32).astype(dtype_named(dtype))
            for s in shapes]


def _dot(a, b):
    return sum(float(np.dot(x.astype(np.float64).ravel(), y.astype(np.float64).ravel()))
               for x, y in zip(a, b))


def _norm_scale(*lists):
    return sum(float(np.sum(np.abs(x.astype(np.float64)))) for xs in lists for x in xs) + 1.0


@pytest.mark.parametrize("dtype", COMPUTE)
@pytest.mark.parametrize("n_others", [1, 2, 3])
def test_dots(dtype, n_others, isa):
    x = _rand(dtype, seed_for("dots", dtype))
    others = [_rand(dtype, seed_for("dots", dtype, j)) for j in range(n_others)]
    got = _C.fullbatch_dots(x, others)
    assert len(got) == n_others
    for v, o in zip(got, others):
        # float32 products are summed in blocks of the compute type: relative to sum |x y|.
        bound = RTOL[dtype] * 4 * sum(float(np.abs(a.astype(np.float64) * b).sum())
                                      for a, b in zip(x, o))
        assert abs(v - _dot(x, o)) <= bound + 1e-300


def _history(dtype, shapes, slots, seed):
    """The history arena (Note [history arena]): rows of all params' values, param after param."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(s)) for s in shapes)
    return rng.standard_normal((2 * slots, total)).astype(dtype)


def _blocks(row, shapes):
    """Row of the arena -> per-param arrays."""
    out, k = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(row[k:k + n].reshape(s))
        k += n
    return out


@pytest.mark.parametrize("dtype", COMPUTE)
def test_history_pair(dtype, isa):
    g = _rand(dtype, seed_for("hist", dtype, "g"))
    prev = _rand(dtype, seed_for("hist", dtype, "p"))
    d = _rand(dtype, seed_for("hist", dtype, "d"))
    hist = _history(dtype, SHAPES, 3, seed_for("hist", dtype))
    before = hist.copy()
    prev0 = [p.copy() for p in prev]
    d0 = [a.copy() for a in d]
    ys, yy, sq = _C.fullbatch_history_(g, prev, d, hist, 1, 0.37)
    y = [a.astype(np.float64) - b for a, b in zip(g, prev0)]
    s = [0.37 * a.astype(np.float64) for a in d0]
    for i, (hs, hy) in enumerate(zip(_blocks(hist[2], SHAPES), _blocks(hist[3], SHAPES))):
        np.testing.assert_allclose(hs, s[i], rtol=RTOL[dtype] * 4)
        np.testing.assert_allclose(hy, y[i], rtol=RTOL[dtype] * 4, atol=1e-7)
        np.testing.assert_array_equal(prev[i], g[i])
        np.testing.assert_array_equal(d[i], -g[i])   # Note [first pass folded]: q = -g
    for r in (0, 1, 4, 5):   # other slots untouched
        np.testing.assert_array_equal(hist[r], before[r])
    scale = _norm_scale(y, s) ** 2
    assert ys == pytest.approx(_dot(y, s), abs=RTOL[dtype] * scale)
    assert yy == pytest.approx(_dot(y, y), abs=RTOL[dtype] * scale)
    minus_g = [-a.astype(np.float64) for a in g]
    assert sq == pytest.approx(_dot(s, minus_g), abs=RTOL[dtype] * _norm_scale(s, minus_g) ** 2)


@pytest.mark.parametrize("dtype", COMPUTE)
@pytest.mark.parametrize("history", [1, 3], ids=lambda k: f"k{k}")
def test_folded_first_pass_is_the_same_direction(dtype, history, isa):
    """Note [first pass folded]: the history pass's q = -g and dot make the two-loop skip its
    first pass with the same bits: d, al, g'd and max |d| equal those of the full recursion."""
    g = _rand(dtype, seed_for("fold", dtype, "g"))
    prev = _rand(dtype, seed_for("fold", dtype, "p"))
    d = _rand(dtype, seed_for("fold", dtype, "d"))
    hist = _history(dtype, SHAPES, history + 1, seed_for("fold", dtype))
    curvature_pairs(hist, np.random.default_rng(seed_for("fold", dtype, "y")))
    ys, _, sq = _C.fullbatch_history_(g, prev, d, hist, history, 0.37)
    slots = list(range(history + 1))            # the new pair is the newest
    ro = inverse_curvatures(hist, slots[:-1]) + [1.0 / ys]
    full = [np.full_like(a, np.nan) for a in d]
    want = _C.fullbatch_direction_(g, full, hist, slots, ro, 0.7)
    got = _C.fullbatch_direction_(g, d, hist, slots, ro, 0.7, None, sq)
    assert got == want
    for a, b in zip(d, full):
        np.testing.assert_array_equal(a, b)


def _two_loop(g, hist, slots, ro, h):
    """The textbook two-loop recursion on flat float64 vectors; returns d and the al."""
    gf = np.concatenate([a.astype(np.float64).ravel() for a in g])
    s = [hist[2 * j].astype(np.float64) for j in slots]
    y = [hist[2 * j + 1].astype(np.float64) for j in slots]
    k = len(slots)
    al = [0.0] * k
    q = -gf
    for i in range(k - 1, -1, -1):
        al[i] = float(s[i] @ q) * ro[i]
        q = q - al[i] * y[i]
    r = q * h
    for i in range(k):
        be = float(y[i] @ r) * ro[i]
        r = r + (al[i] - be) * s[i]
    return r, al


@pytest.mark.parametrize("dtype", COMPUTE)
@pytest.mark.parametrize("slots", [[], [2], [1, 0], [3, 0, 5, 2, 4, 1, 6]], ids=str)
def test_two_loop_direction(dtype, slots, isa):
    g = _rand(dtype, seed_for("2loop", dtype, "g"))
    hist = _history(dtype, SHAPES, 7, seed_for("2loop", dtype))
    curvature_pairs(hist, np.random.default_rng(seed_for("2loop", dtype, "y")))
    ro = inverse_curvatures(hist, slots)
    d = [np.full(s, np.nan, dtype) for s in SHAPES]
    hist_before = hist.copy()
    gtd, dmax, al = _C.fullbatch_direction_(g, d, hist, slots, ro, 0.7)
    want, want_al = _two_loop(g, hist, slots, ro, 0.7)
    got = np.concatenate([a.astype(np.float64).ravel() for a in d])
    tol = RTOL[dtype] * 50 * (1 + len(slots))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(al, want_al, rtol=tol, atol=tol)
    gf = np.concatenate([a.astype(np.float64).ravel() for a in g])
    assert gtd == pytest.approx(float(gf @ want), rel=tol, abs=tol)
    assert dmax == pytest.approx(float(np.abs(want).max()), rel=tol)
    np.testing.assert_array_equal(hist, hist_before)


@pytest.mark.parametrize("dtype", COMPUTE)
@pytest.mark.parametrize("keep", [False, True])
def test_combine_with_copy(dtype, keep, isa):
    """The conjugate-gradient direction d = beta d - g with g copied into g_prev."""
    g = _rand(dtype, seed_for("cg", dtype, "g"))
    d = _rand(dtype, seed_for("cg", dtype, "d"))
    prev = [np.zeros_like(a) for a in g]
    d0 = [a.astype(np.float64) for a in d]
    beta = 0.3 if keep else 0.0
    gd, dmax = _C.fullbatch_combine_(d, g, g, prev, keep, beta, -1.0, 1.0)
    want = [beta * a - b.astype(np.float64) if keep else -b.astype(np.float64)
            for a, b in zip(d0, g)]
    for a, w, p, gg in zip(d, want, prev, g):
        np.testing.assert_allclose(a, w, rtol=RTOL[dtype] * 4, atol=1e-7)
        np.testing.assert_array_equal(p, gg)
    assert gd == pytest.approx(_dot(g, want), rel=RTOL[dtype] * 10)
    assert dmax == pytest.approx(max(float(np.abs(w).max(initial=0)) for w in want), rel=1e-6)


@pytest.mark.parametrize("dtype", PARAM)
@pytest.mark.parametrize("with_dot", [False, True])
def test_grad_copy(dtype, with_dot, isa):
    compute = "float64" if dtype == "float64" else "float32"
    g = _rand(dtype, seed_for("gcopy", dtype))
    d = _rand(compute, seed_for("gcopy", dtype, "d")) if with_dot else None
    out = [np.empty(a.shape, compute) for a in g]
    gd = _C.fullbatch_grad_copy_(g, out, d)
    for a, b in zip(out, g):
        np.testing.assert_array_equal(a, b.astype(compute))
    if with_dot:
        assert gd == pytest.approx(_dot(g, d), rel=1e-5 if compute == "float32" else 1e-13)
    else:
        assert gd == 0.0


@pytest.mark.parametrize("dtype", PARAM)
@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["add", "save_base", "from_base", "restore"])
def test_param_step(dtype, mode, isa):
    compute = "float64" if dtype == "float64" else "float32"
    p = _rand(dtype, seed_for("pstep", dtype))
    d = _rand(compute, seed_for("pstep", dtype, "d"))
    base = _rand(compute, seed_for("pstep", dtype, "b"))
    p0 = [a.astype(compute) for a in p]
    base0 = [b.copy() for b in base]
    _C.fullbatch_param_step_(p, d, base, mode, 0.25)
    for i in range(len(p)):
        c = np.dtype(compute).type
        if mode == 0:
            want = p0[i] + c(0.25) * d[i]
        elif mode == 1:
            want = p0[i] + c(0.25) * d[i]
            np.testing.assert_array_equal(base[i], p0[i])
        elif mode == 2:
            want = base0[i] + c(0.25) * d[i]
        else:
            want = base0[i]
        # One rounding of the compute-type result to the param dtype (a fused multiply-add may
        # round the compute type's value once less).
        np.testing.assert_allclose(p[i].astype(np.float64), want.astype(dtype_named(dtype))
                                   .astype(np.float64), rtol=2.0 ** -7 if dtype == "bfloat16"
                                   else 2.0 ** -10 if dtype == "float16" else RTOL[compute] * 4,
                                   atol=1e-6)


def test_bitwise_identical_across_thread_counts(isa, restore_threads):
    shapes = [(2 ** 19 + 17,), (300001,), (7,), (4097,)]
    g = _rand("float32", seed_for("thr", "g"), shapes)
    hist = _history(np.float32, shapes, 4, seed_for("thr"))
    results = []
    for threads in (1, 2, 3):
        ft.set_num_threads(threads)
        d = [np.zeros(s, np.float32) for s in shapes]
        gtd, dmax, al = _C.fullbatch_direction_(g, d, hist, [2, 0, 3], [0.5, 0.25, 0.125], 0.9)
        dots = _C.fullbatch_dots(g, [d, g])
        results.append((np.concatenate(d).view(np.uint32).copy(), gtd, dmax, al, dots))
    for r in results[1:]:
        np.testing.assert_array_equal(r[0], results[0][0])
        assert r[1:] == results[0][1:]


# ---- bad arguments: named, and nothing written


def test_bad_shape_names_argument_and_index(isa):
    g = _rand("float32", 1)
    d = [np.zeros_like(a) for a in g]
    d[3] = np.zeros((5, 3), np.float32)
    hist = _history(np.float32, SHAPES, 2, 2)
    before = hist.copy()
    with pytest.raises(ValueError, match=r"fullbatch_direction_: grads\[3\] has shape \(3,5\) but "
                                         r"directions\[3\] has shape \(5,3\)"):
        _C.fullbatch_direction_(g, d, hist, [0], [1.0], 1.0)
    with pytest.raises(ValueError, match=r"fullbatch_direction_: history has shape \(4,99\); "
                                         r"expected \(rows, 4153\)"):
        _C.fullbatch_direction_(g, [np.zeros_like(a) for a in g], np.zeros((4, 99), np.float32),
                                [0], [1.0], 1.0)
    np.testing.assert_array_equal(hist, before)


def test_bad_dtype_and_slots(isa):
    g = _rand("float32", 1)
    d = [np.zeros(a.shape, np.float64) for a in g]
    hist = _history(np.float32, SHAPES, 2, 2)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32; expected float64"):
        _C.fullbatch_direction_(g, d, hist, [], [], 1.0)
    d = [np.zeros_like(a) for a in g]
    with pytest.raises(ValueError, match=r"slots\[1\] = 0 is not a distinct slot"):
        _C.fullbatch_direction_(g, d, hist, [0, 0], [1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match=r"slots\[0\] = 2"):
        _C.fullbatch_direction_(g, d, hist, [2], [1.0], 1.0)
    with pytest.raises(ValueError, match="slot 2 is outside"):
        _C.fullbatch_history_(g, [a.copy() for a in g], d, hist, 2, 1.0)
    p16 = _rand("float16", 3)
    with pytest.raises(TypeError, match=r"out\[0\] has dtype float16; expected float32"):
        _C.fullbatch_grad_copy_(p16, [a.copy() for a in p16], None)
    with pytest.raises(TypeError, match=r"base\[0\] has dtype float16"):
        _C.fullbatch_param_step_(p16, [a.astype(np.float32) for a in p16],
                                 [a.copy() for a in p16], 2, 1.0)
    with pytest.raises(ValueError, match="read-only|not writable|writeable"):
        ro_d = [np.zeros_like(a) for a in g]
        ro_d[1].flags.writeable = False
        _C.fullbatch_combine_(ro_d, g, g, None, False, 0.0, -1.0, 1.0)


# Note [no loop vectorizer in the full-batch passes]: a pass's results (sums and the arrays it
# writes) must not depend on where its arrays lie: the same values at other distances from each
# other in memory give the same bits.  Each case: (name, number of arrays, call on them).
ADDRESS_CASES = [
    ("history", 5, lambda a: _C.fullbatch_history_([a[0]], [a[1]], [a[2]], np.stack([a[3], a[4]]),
                                                   0, 0.37)),
    ("combine", 4, lambda a: _C.fullbatch_combine_([a[0]], [a[1]], [a[2]], [a[3]], True, 0.5,
                                                   -0.7, 1.0)),
    ("dots", 4, lambda a: _C.fullbatch_dots([a[0]], [[a[1]], [a[2]], [a[3]]])),
    ("grad_copy", 3, lambda a: _C.fullbatch_grad_copy_([a[0]], [a[1]], [a[2]])),
    ("param_step", 3, lambda a: _C.fullbatch_param_step_([a[0]], [a[1]], [a[2]], 1, 0.37)),
]


@pytest.mark.parametrize("dtype", COMPUTE)
@pytest.mark.parametrize("n", [15, 33, 1030])
@pytest.mark.parametrize("name, arrays, call", ADDRESS_CASES, ids=[c[0] for c in ADDRESS_CASES])
def test_results_do_not_depend_on_addresses(name, arrays, call, n, dtype, isa):
    rng = np.random.default_rng(seed_for("addr", name, n, dtype))
    pool = np.empty(arrays * (n + 40) + 16, dtype)
    for trial in range(8):       # a rounding difference shows for some values only
        values = [rng.standard_normal(n).astype(dtype) for _ in range(arrays)]
        seen = set()
        for gap in range(0, 40, 3):
            for shift in (0, 1, 5):
                placed = []
                for i, v in enumerate(values):
                    at = shift + i * (n + gap)
                    placed.append(pool[at:at + n])
                    placed[-1][...] = v
                out = call(placed)
                seen.add((repr(out), b"".join(p.tobytes() for p in placed)))
        assert len(seen) == 1, f"{name}: {len(seen)} different results for the same values"
