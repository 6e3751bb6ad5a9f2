"""global_norm against the float64 reference and torch.nn.utils.get_total_norm."""

import math

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from precisions import dtype_named
from stepping import seed_for

NORM_TYPES = [1.0, 2.0, 3.5, float("inf")]
SHAPES = [(0,), (1,), (7,), (4097,), (3, 5), (0, 4), (33,)]
RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-5, "bfloat16": 1e-5}


def _arrays(dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype_named(dtype)) for s in shapes]


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", list(RTOL))
def test_matches_reference(dtype, norm_type, isa):
    arrays = _arrays(dtype, SHAPES, seed_for("norm", dtype))
    got = ft.global_norm(arrays, norm_type)
    assert isinstance(got, float)
    assert got == pytest.approx(ref.global_norm(arrays, norm_type), rel=RTOL[dtype])


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_large_float32(norm_type, isa):
    arrays = _arrays("float32", [(2 ** 20 + 3,), (5,)], seed_for("norm-large"))
    assert ft.global_norm(arrays, norm_type) == pytest.approx(ref.global_norm(arrays, norm_type), rel=1e-5)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_no_elements_is_zero(norm_type, isa):
    assert ft.global_norm([], norm_type) == 0.0
    assert ft.global_norm([np.zeros(0, np.float32), np.zeros((2, 0), np.float32)], norm_type) == 0.0


def test_infinity_and_nan_propagate(isa):
    a = np.ones(9, np.float32)
    a[4] = np.inf
    assert ft.global_norm([a], 2.0) == math.inf
    a[4] = np.nan
    assert math.isnan(ft.global_norm([a], 2.0))


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch(dtype, norm_type, isa, torch):
    arrays = _arrays(dtype, SHAPES, seed_for("norm-torch", dtype))
    # torch refuses the inf norm of an empty tensor; empty arrays add nothing to any norm anyway.
    tensors = [torch.from_numpy(a) for a in arrays if a.size]
    want = float(torch.nn.utils.get_total_norm(tensors, norm_type, foreach=False))
    assert ft.global_norm(arrays, norm_type) == pytest.approx(want, rel=RTOL[dtype])


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_nan_anywhere_makes_every_norm_nan(norm_type, isa):
    from amp_clip_cases import nan_norm_arrays
    for arrays in nan_norm_arrays():
        assert math.isnan(ft.global_norm(arrays, norm_type)), (norm_type, [a.dtype for a in arrays])
