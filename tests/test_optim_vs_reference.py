"""Multi-step trajectories of every rule x option set x precision x ISA x size against the float64 reference."""

import numpy as np
import pytest

from optim_cases import CASES, FIRST_OF_EACH_RULE
from precisions import PRECISIONS, Precision
from stepping import SideBySide, seed_for

STEPS = 20

# Empty, scalar-like, shorter than any vector width, and odd-sized 2-D past several vector bodies.
SHAPES = {"0": (0,), "1": (1,), "7": (7,), "4097": (17, 241)}


@pytest.mark.parametrize("size", list(SHAPES))
@pytest.mark.parametrize("precision", PRECISIONS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_trajectory_matches_reference(case, precision, size, isa):
    SideBySide(case, precision, [SHAPES[size]], seed_for(case, precision, size)).run(STEPS).check()


@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_large_float32_trajectory(case, isa):
    # Big enough to be split across threads and to end in a ragged tail.
    f32 = Precision("f32", "float32", "float32")
    SideBySide(case, f32, [(2 ** 20 + 3,)], seed_for(case, "large")).run(STEPS).check()


def _mixed_odd_shapes(count, seed):
    rng = np.random.default_rng(seed)
    sizes = 2 * rng.integers(0, 1500, size=count) + 1
    return [(int(n),) if i % 3 else (1, int(n)) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("precision", [PRECISIONS[0], PRECISIONS[-1]], ids=str)
@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_many_tensors_trajectory(case, precision, isa):
    # Hundreds of small tensors in one call exercise the multi-tensor chunking.
    shapes = _mixed_odd_shapes(300, seed_for("many"))
    SideBySide(case, precision, shapes, seed_for(case, precision, "many")).run(STEPS).check()
