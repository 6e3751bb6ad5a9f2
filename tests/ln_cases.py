"""Tables of layer/RMS norm and group/instance norm test cases, and their inputs."""

from dataclasses import dataclass

from norm_cases import ChannelCase, NormCase, norm_inputs


@dataclass(frozen=True)
class _Case:
    """The leading fields of every layer and group norm case: its id and x's shape."""
    id: str
    shape: tuple


@dataclass(frozen=True)
class RowCase(_Case, NormCase):
    """Layer / RMS norm: x of `shape`, normalized over its last len(normalized) dims."""
    normalized: tuple
    affine: bool = True
    eps: float = 1e-5


ROW_CASES = [
    RowCase("7x33", (7, 33), (33,)),
    RowCase("row-of-1", (5, 1), (1,)),
    RowCase("row-of-4097", (3, 4097), (4097,), eps=1e-3),
    RowCase("2x3x4x5-last2", (2, 3, 4, 5), (4, 5)),
    RowCase("n1-16", (1, 16), (16,), affine=False),
    RowCase("3d-4x6x40", (4, 6, 40), (40,)),
    RowCase("1d-all", (257,), (257,), eps=0.1),
    RowCase("64x1024", (64, 1024), (1024,)),
    RowCase("300x96", (300, 96), (96,)),
    # More rows than 16 blocks per SM of 2 SMs take: the forward's next-row prefetch (fp32 and
    # 2-byte rows of 32 values a thread, Note [next-row prefetch]) runs.
    RowCase("40x8192", (40, 8192), (8192,)),
    # CUDA rows kernels of 4 vectors per thread in fp32, 8 in fp64 (Note [held row]).
    RowCase("5x4096", (5, 4096), (4096,)),
    # A row beyond the cache budget: the forward's statistics in pieces, the backward's one task.
    RowCase("wide-2x300001", (2, 300001), (300001,)),
    # No rows: nothing to launch, and dweight / dbias are sums of nothing: zeros.
    RowCase("empty-0x33", (0, 33), (33,)),
]
ROW_SMALL = [c for c in ROW_CASES if not c.id.startswith("wide")]


@dataclass(frozen=True)
class GroupCase(_Case, ChannelCase):
    """Group norm: x of `shape` ((N, C, *spatial), or (N, *spatial, C) if channels_last)."""
    groups: int
    channels_last: bool = False
    affine: bool = True
    eps: float = 1e-5


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
    # Small maps: whole groups of channels a few vectors long (Note [short channels]), in
    # chunks; a last vector that overlaps the one before (49, 81 values).
    GroupCase("short-5x64x7x7-g32", (5, 64, 7, 7), 32),
    GroupCase("short-3x12x9x9-g3", (3, 12, 9, 9), 3),
    # Channels-last samples of one row piece each, reduced and applied in one task in tiles of
    # rows longer than 4 KB (Note [hot samples]); 25 rows, a one-vector and a scalar channel tail.
    GroupCase("cl-wide-3x5x5x1048-g8", (3, 5, 5, 1048), 8, channels_last=True),
    # Groups beyond the cache budget (pieces); channels-last samples of several row pieces.
    GroupCase("split-1x4x260x260-g2", (1, 4, 260, 260), 2),
    GroupCase("cl-rows-2x128x128x36-g6", (2, 128, 128, 36), 6, channels_last=True),
    # No samples, and samples of no values: dweight / dbias are sums of nothing.
    GroupCase("empty-0x6x5x7-g3", (0, 6, 5, 7), 3),
    GroupCase("cl-empty-0x5x7x6-g3", (0, 5, 7, 6), 3, channels_last=True),
]
GROUP_SMALL = [c for c in GROUP_CASES if "split" not in c.id and "rows" not in c.id]


def instance_norm_applies(case):
    """Whether torch's instance norm takes x of this case: a sample, and more than one value a
    channel."""
    n, size = case.shape[0], 1
    for d in case.shape:
        size *= d
    return n > 0 and size // (n * case.channels) > 1

DTYPES = ["float32", "float64", "float16", "bfloat16"]


def row_inputs(case, dtype_name, *tags):
    """x, weight, bias of shape normalized, dy."""
    return norm_inputs("ln", case, dtype_name, tags, case.normalized, running_stats=False)


def group_inputs(case, dtype_name, *tags):
    """x, weight, bias (C,), running mean / var (C,), dy."""
    return norm_inputs("gn", case, dtype_name, tags, case.channels, running_stats=True)
