"""Table of batch-norm test cases (shapes x layouts x affine), dtypes and their tolerances, and inputs."""

from dataclasses import dataclass

import numpy as np

from norm_cases import ChannelCase, norm_inputs
from precisions import Tolerance


@dataclass(frozen=True)
class BnCase(ChannelCase):
    """Batch norm: x of `shape`, the running statistics updated with `momentum`."""
    id: str
    shape: tuple
    channels_last: bool = False
    affine: bool = True
    momentum: float = 0.1

    @property
    def per_channel(self):
        return int(np.prod(self.shape)) // self.channels


CASES = [
    BnCase("2d-8x3", (8, 3)),
    BnCase("2d-64x33-noaffine", (64, 33), affine=False),
    BnCase("2d-5x1", (5, 1), momentum=0.5),
    BnCase("3d-5x7x9", (5, 7, 9)),
    BnCase("3d-cl-5x9x7", (5, 9, 7), channels_last=True, momentum=0.0),
    BnCase("4d-4x3x5x7", (4, 3, 5, 7), momentum=1.0),
    BnCase("4d-3x1x17x13", (3, 1, 17, 13), affine=False),
    BnCase("4d-2x7x33x33", (2, 7, 33, 33)),
    BnCase("4d-6x5x7x7", (6, 5, 7, 7)),  # runs of 49: the masked planar walk on CUDA
    BnCase("4d-cl-4x5x5x7", (4, 5, 5, 7), channels_last=True),
    BnCase("4d-cl-3x11x13x1", (3, 11, 13, 1), channels_last=True, affine=False),
    BnCase("4d-cl-4x40x40x24", (4, 40, 40, 24), channels_last=True, momentum=0.3),
    # Row tiles (Note [row tiles]) of several vectors, one vector and scalar channels, rows not
    # a multiple of the tile.
    BnCase("4d-cl-3x5x7x83", (3, 5, 7, 83), channels_last=True),
    BnCase("4d-cl-wide-2x3x5x1048", (2, 3, 5, 1048), channels_last=True),  # Note [hot samples]
    BnCase("5d-2x3x3x5x4", (2, 3, 3, 5, 4)),
    BnCase("5d-cl-2x3x5x4x16", (2, 3, 5, 4, 16), channels_last=True, affine=False),
    # Channels of more than the cache budget: split statistics and split backward paths.
    BnCase("4d-split-2x3x260x260", (2, 3, 260, 260)),
    BnCase("4d-split-1x2x520x520", (1, 2, 520, 520), momentum=0.2),
]
SMALL = [c for c in CASES if "split" not in c.id and "40x40" not in c.id]

DTYPES = ["float32", "float64", "float16", "bfloat16"]


def ulp(dtype):
    return {"float32": 2.0 ** -23, "float64": 2.0 ** -52, "float16": 2.0 ** -10,
            "bfloat16": 2.0 ** -7}[str(np.dtype(dtype))]


def output_tol(dtype):
    """Tolerance of y and dx against the float64 reference: rounding of the storage type plus
    float32 arithmetic for every dtype but float64."""
    name = str(np.dtype(dtype))
    if name == "float64":
        return Tolerance(1e-11, 1e-12)
    if name == "float32":
        return Tolerance(2e-5, 2e-6)
    return Tolerance(2 * ulp(name), 2 * ulp(name))


def stats_tol(dtype):
    """Saved and running statistics: float64 math for float64 input, float32 storage otherwise."""
    return Tolerance(1e-12, 1e-13) if str(np.dtype(dtype)) == "float64" else Tolerance(2e-6, 2e-7)


def make_inputs(case, dtype_name, *tags):
    """x, weight, bias, running mean / var (C,), dy."""
    return norm_inputs("bn", case, dtype_name, tags, case.channels, running_stats=True)
