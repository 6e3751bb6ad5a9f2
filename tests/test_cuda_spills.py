"""Register spills of the CUDA kernels, from ptxas' report (tests/ptxas_report.py), for every
architecture the build compiles by default: none but the ones the allowance table names, each at
most the bytes it spills now.

Note [spill allowance]: a spill stores a value to local memory (L1, else L2) and loads it back
where a register would have held it. ptxas decides it when it compiles, so no GPU is needed to see
one, and the host emulation (tests/cuda_emu) cannot: it runs the kernels' C++, not their SASS. A
kernel spills when its registers are capped (its __launch_bounds__ ask for blocks per SM) or when
ptxas, left to itself, trades a few for occupancy. The table names the kernels that spill today and
why that is accepted; a spill anywhere else, or a larger one, is a change of a kernel's register
budget that no GPU has measured, and fails here. The table is per architecture: ptxas allocates
per target. A row that matches no kernel fails too, so the table says what the build is."""
import re

import pytest

from ptxas_report import default_archs, kernel_resources
from source_tree import source_path

_2B = r"ft::(BFloat16|Half)"  # the 2-byte storage types: the same kernel, the same registers
_LN_BWD = "ln_kernels.cu: void ln_rows_backward_kernel<"

# (architecture, kernel pattern, kernels it matches, most spill-store bytes, most spill-load bytes,
# why). Patterns match the start of "unit.cu: readable name"; ln_rows_backward_kernel's arguments
# are <storage, vectors a thread, ColumnSumsIn (0 none, 1 registers, 2 shared), sums a column,
# staged>.
ALLOWANCE = [
    # Note [held row]: the 2-byte rows of 4 vectors hold dy and x at the 80 registers of three
    # blocks per SM beside shared column sums; a few loop invariants spill (about ten 4-byte
    # loads a row, where reloading dy and x from L2 took eight 16-byte loads).
    ("sm_90", _LN_BWD + _2B + r", 4, \(ColumnSumsIn\)2, [12], false>", 4, 32, 48, "Note [held row]"),
    ("sm_90", _LN_BWD + _2B + r", 4, \(ColumnSumsIn\)2, 1, true>", 2, 20, 52, "Note [staged row]"),
    ("sm_80", _LN_BWD + _2B + r", 4, \(ColumnSumsIn\)2, [12], false>", 4, 20, 40, "Note [held row]"),
    ("sm_80", _LN_BWD + _2B + r", 4, \(ColumnSumsIn\)2, 1, true>", 2, 16, 32, "Note [staged row]"),
    # sm_80 only: the staged frozen-weight kernel of 4 vectors (three blocks per SM) and the staged
    # RMS kernel of 2 vectors with register sums (ptxas' own choice of 80).
    ("sm_80", _LN_BWD + _2B + r", 4, \(ColumnSumsIn\)0, 1, true>", 2, 12, 24, "Note [staged row]"),
    ("sm_80", _LN_BWD + _2B + r", 2, \(ColumnSumsIn\)1, 1, true>", 2, 4, 4, "Note [staged row]"),
    # float64, with no blocks per SM asked: ptxas keeps itself to 64 registers and spills one word.
    ("sm_90", _LN_BWD + r"double, 2, \(ColumnSumsIn\)1, 2, false>", 1, 4, 12, "float64, ptxas' choice"),
    ("sm_90", r"optim_kernels.cu: void rule_kernel<ft::math::Adam, double, double>", 1, 4, 8,
     "float64, ptxas' choice"),
    ("sm_80", r"optim_kernels.cu: void rule_kernel<ft::math::Adam, double, double>", 1, 4, 8,
     "float64, ptxas' choice"),
    ("sm_80", r"fullbatch_kernels.cu: void two_loop_kernel<true, double>", 1, 8, 4, "float64, ptxas' choice"),
]


def _archs():
    return default_archs(source_path("CMakeLists.txt"))


@pytest.fixture(scope="module", params=["sm_80", "sm_90"])
def report(request):
    if request.param not in _archs():
        pytest.skip(f"the build does not compile {request.param}")
    return request.param, kernel_resources(source_path("csrc/cuda/bn_kernels.cu").parents[1], request.param)


def test_allowance_covers_the_default_architectures():
    assert sorted({row[0] for row in ALLOWANCE}) == sorted(_archs()), \
        "every architecture the build compiles needs its allowance rows (none is also a row's worth)"


def test_every_kernel_is_reported(report):
    arch, kernels = report
    units = {name.split(":")[0] for name in kernels}
    # A unit of kernels whose report went unread would pass the spill test by saying nothing.
    for unit in ("bn_kernels.cu", "ln_kernels.cu", "gn_kernels.cu", "norm_kernels.cu",
                 "optim_kernels.cu", "fullbatch_kernels.cu"):
        assert unit in units, f"{arch}: ptxas reported no kernel of {unit}"
    assert len(kernels) > 400, f"{arch}: only {len(kernels)} kernels reported"


def test_no_spill_beyond_the_allowance(report):
    arch, kernels = report
    rows = [r for r in ALLOWANCE if r[0] == arch]
    bad = []
    for name, res in sorted(kernels.items()):
        allowed = [r for r in rows if re.match(r[1], name)]
        assert len(allowed) <= 1, f"{name} matches {len(allowed)} allowance rows"
        stores, loads = (allowed[0][3], allowed[0][4]) if allowed else (0, 0)
        if res.spill_stores > stores or res.spill_loads > loads or (res.stack and not allowed):
            bad.append(f"{name}: {res.registers} registers, {res.spill_stores} bytes spill stores, "
                       f"{res.spill_loads} loads, {res.stack} bytes stack (allowed {stores} / {loads})")
    assert not bad, f"{arch}: kernels spilling beyond Note [spill allowance]:\n" + "\n".join(bad)


def test_every_allowance_row_is_a_spill(report):
    arch, kernels = report
    for _, pattern, count, stores, loads, why in (r for r in ALLOWANCE if r[0] == arch):
        spilling = [n for n, r in kernels.items() if re.match(pattern, n) and r.spill_stores + r.spill_loads]
        assert len(spilling) == count, \
            f"{arch}: {pattern} ({why}): {len(spilling)} spilling kernels, the table says {count}: {spilling}"
