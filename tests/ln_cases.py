"""Tables of layer/RMS norm and group/instance norm test cases, and their inputs."""

from dataclasses import dataclass

import numpy as np

from precisions import dtype_named
from stepping import seed_for


@dataclass(frozen=True)
class RowCase:
    """Layer / RMS norm: x of `shape`, normalized over its last len(normalized) dims."""
    id: str
    shape: tuple
    normalized: tuple
    affine: bool = True
    eps: float = 1e-5

    def __str__(self):
        return self.id


ROW_CASES = [
    RowCase("7x33", (7, 33), (33,)),
    RowCase("row-of-1", (5, 1), (1,)),
    RowCase("row-of-4097", (3, 4097), (4097,), eps=1e-3),
    RowCase("2x3x4x5-last2", (2, 3, 4, 5), (4, 5)),
    RowCase("n1-16", (1, 16), (16,), affine=False),
    RowCase("3d-4x6x40", (4, 6, 40), (40,)),
    RowCase("1d-all", (257,), (257,), eps=0.1),
    RowCase("64x1024", (64, 1024), (1024,)),
    # A row beyond the cache budget: the forward's statistics in pieces, the backward's one task.
    RowCase("wide-2x300001", (2, 300001), (300001,)),
]
ROW_SMALL = [c for c in ROW_CASES if not c.id.startswith("wide")]


@dataclass(frozen=True)
class GroupCase:
    """Group norm: x of `shape` ((N, C, *spatial), or (N, *spatial, C) if channels_last)."""
    id: str
    shape: tuple
    groups: int
    channels_last: bool = False
    affine: bool = True
    eps: float = 1e-5

    @property
    def channels(self):
        return self.shape[-1] if self.channels_last else self.shape[1]

    def to_nchw(self, a):
        return np.moveaxis(a, -1, 1) if self.channels_last else a

    def __str__(self):
        return self.id


GROUP_CASES = [
    GroupCase("2x6x5x7-g3", (2, 6, 5, 7), 3),
    GroupCase("n1-8x9-g8", (1, 8, 9), 8),
    GroupCase("3x4x1-g2", (3, 4, 1), 2),
    GroupCase("2d-5x6-g2", (5, 6), 2, affine=False),
    GroupCase("2x32x13x11-g8", (2, 32, 13, 11), 8, eps=1e-3),
    GroupCase("5d-2x4x3x5x6-g2", (2, 4, 3, 5, 6), 2),
    GroupCase("g1-3x5x17", (3, 5, 17), 1),
    GroupCase("cl-2x5x7x6-g3", (2, 5, 7, 6), 3, channels_last=True),
    GroupCase("cl-n1-9x9x16-g4", (1, 9, 9, 16), 4, channels_last=True),
    GroupCase("cl-3x1x1x8-g4", (3, 1, 1, 8), 4, channels_last=True, affine=False),
    GroupCase("cl-2x3x4x5x12-g12", (2, 3, 4, 5, 12), 12, channels_last=True),
    # Groups beyond the cache budget (pieces); channels-last samples of several row pieces.
    GroupCase("split-1x4x260x260-g2", (1, 4, 260, 260), 2),
    GroupCase("cl-rows-2x128x128x36-g6", (2, 128, 128, 36), 6, channels_last=True),
]
GROUP_SMALL = [c for c in GROUP_CASES if "split" not in c.id and "rows" not in c.id]

DTYPES = ["float32", "float64", "float16", "bfloat16"]


def rng_for(*tags):
    return np.random.default_rng(seed_for(*tags))


def row_inputs(case, dtype_name, *tags):
    """x (mean 0.5, spread 2), weight, bias of shape normalized (float32, float64 for float64), dy."""
    dtype = dtype_named(dtype_name)
    rng = rng_for("ln", case.id, dtype_name, *tags)
    x = (0.5 + 2.0 * rng.standard_normal(case.shape)).astype(np.float32).astype(dtype)
    pdtype = np.float64 if dtype_name == "float64" else np.float32
    w = b = None
    if case.affine:
        w = rng.uniform(0.5, 1.5, case.normalized).astype(pdtype)
        b = rng.standard_normal(case.normalized).astype(pdtype)
    dy = rng.standard_normal(case.shape).astype(np.float32).astype(dtype)
    return x, w, b, dy


def group_inputs(case, dtype_name, *tags):
    """x, weight, bias (C,), running mean / var (C,), dy."""
    dtype = dtype_named(dtype_name)
    rng = rng_for("gn", case.id, dtype_name, *tags)
    C = case.channels
    x = (0.5 + 2.0 * rng.standard_normal(case.shape)).astype(np.float32).astype(dtype)
    pdtype = np.float64 if dtype_name == "float64" else np.float32
    w = b = None
    if case.affine:
        w = rng.uniform(0.5, 1.5, C).astype(pdtype)
        b = rng.standard_normal(C).astype(pdtype)
    rm = rng.standard_normal(C).astype(pdtype)
    rv = rng.uniform(0.5, 2.0, C).astype(pdtype)
    dy = rng.standard_normal(case.shape).astype(np.float32).astype(dtype)
    return x, w, b, rm, rv, dy
