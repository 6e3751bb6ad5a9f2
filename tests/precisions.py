"""Table of storage precisions the rules are tested in, with the tolerances each one earns."""

from dataclasses import dataclass

import numpy as np
import pytest


def dtype_named(name):
    """NumPy dtype for a name; bfloat16 comes from ml_dtypes and skips the test when it is missing."""
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


@dataclass(frozen=True)
class Tolerance:
    # Errors are allowed up to atol*max|expected| + rtol*|expected|, so atol is relative to the
    # array's own scale: state such as exp_avg_sq lives far below the weights' magnitude.
    rtol: float
    atol: float


@dataclass(frozen=True)
class Precision:
    id: str
    param: str
    grad: str
    master: bool = False

    @property
    def half(self):
        return self.param in ("float16", "bfloat16")

    @property
    def state(self):
        return "float32" if self.half else self.param

    @property
    def param_tol(self):
        if self.param == "float64":
            return Tolerance(1e-10, 1e-12)
        if self.param == "float32":
            return Tolerance(2e-5, 2e-6)
        # Float32 and float64 math can round a half weight to neighbouring values, and with
        # weight decay that one-ulp difference feeds back; a few ulps of the storage type.
        ulp = 2.0 ** -10 if self.param == "float16" else 2.0 ** -7
        return Tolerance(4 * ulp, 2 * ulp)

    @property
    def state_tol(self):
        if self.param == "float64":
            return Tolerance(1e-10, 1e-12)
        if self.half and not self.master:
            # State sees the rounded weights through weight decay and the grads' own rounding:
            # where float32 and float64 math round a weight to neighbouring values, weight decay
            # carries a fraction of that ulp into the state, and momentum sums it over steps.
            # The ulp is that of the largest weights (|w| ~ 5 among a million normal draws: 4
            # unit ulps), and a GPU's fused multiply-adds round at other ties than the CPU's.
            ulp = 2.0 ** -10 if self.param == "float16" else 2.0 ** -7
            return Tolerance(1e-3, max(1e-4, ulp / 8))
        return Tolerance(2e-5, 2e-6)

    def __str__(self):
        return self.id


PRECISIONS = [
    Precision("f32", "float32", "float32"),
    Precision("f64", "float64", "float64"),
    Precision("f16", "float16", "float16"),
    Precision("f16-g32", "float16", "float32"),
    Precision("f16-master", "float16", "float16", master=True),
    Precision("bf16", "bfloat16", "bfloat16"),
    Precision("bf16-g32", "bfloat16", "float32"),
    Precision("bf16-master", "bfloat16", "bfloat16", master=True),
]

FULL = [p for p in PRECISIONS if not p.half]


def assert_close(got, want, tol, what, scale=0.0):
    """Errors within atol * scale + rtol * |want|, scale the larger of max|want| and the given
    one (a trajectory's starting magnitude: a weight that ends near zero still carries the
    rounding it gathered at its earlier size)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    if want.size == 0:
        return
    scale = max(float(np.max(np.abs(want))), scale, 1e-30)
    err = np.abs(got - want)
    bound = tol.atol * scale + tol.rtol * np.abs(want)
    bad = ~(err <= bound)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{want.size} elements off; first at flat index {i}: "
            f"got {got.ravel()[i]!r}, expected {want.ravel()[i]!r} (max err {float(err.max()):.3g}, "
            f"scale {scale:.3g}, rtol {tol.rtol}, atol {tol.atol})")
