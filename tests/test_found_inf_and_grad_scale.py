"""found_inf skips a step without writing anything; grad_scale is the same as dividing the grads first."""

import numpy as np
import pytest

import fusedtrain as ft
from bits import same_bits
from optim_cases import CASES, FIRST_OF_EACH_RULE
from precisions import PRECISIONS
from stepping import SideBySide, seed_for

SHAPES = [(7,), (17, 241), (1,)]
F32, F64, BF16_MASTER = PRECISIONS[0], PRECISIONS[1], PRECISIONS[-1]

FOUND_INF_FORMS = {
    "array-one": lambda: np.ones(1, np.float32),
    "array-inf": lambda: np.array([np.inf], np.float32),
    "number": lambda: 1.0,
    "number-nan": lambda: float("nan"),
    "number-beyond-float64": lambda: 10 ** 400,
    "bool": lambda: True,
}


def _snapshot(problem):
    arrays = list(problem.ext_params) + [a for v in problem.ext_state.values() for a in v]
    arrays += problem.ext_master or []
    return arrays, [a.copy() for a in arrays]


@pytest.mark.parametrize("form", list(FOUND_INF_FORMS))
@pytest.mark.parametrize("precision", [F32, BF16_MASTER], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_found_inf_writes_nothing(case, precision, form, isa):
    problem = SideBySide(case, precision, SHAPES, seed_for(case, precision, "found_inf")).run(2)
    arrays, before = _snapshot(problem)
    grads, _ = problem.new_grads()
    grads_before = [g.copy() for g in grads]
    problem.call_rule(ft, problem.ext_params, grads, problem.ext_state, problem.ext_master, 3,
                  found_inf=FOUND_INF_FORMS[form]())
    for i, (a, b) in enumerate(zip(arrays + grads, before + grads_before)):
        assert same_bits(a, b), f"array #{i} written despite found_inf"


@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_zero_found_inf_takes_the_step(case, isa):
    problem = SideBySide(case, F32, SHAPES, seed_for(case, "found_inf_zero"))
    for k in range(1, 6):
        problem.step(k, found_inf=np.zeros(1, np.float32))
    problem.check()


@pytest.mark.parametrize("scale_form", ["number", "array"])
@pytest.mark.parametrize("precision", [F32, F64, BF16_MASTER], ids=str)
@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_grad_scale_equals_predivided_grads(case, precision, scale_form, isa):
    # A power of two, so dividing is exact and the two runs must agree to the bit.
    scale = 1024.0
    scaled = SideBySide(case, precision, SHAPES, seed_for(case, precision, "scale"))
    plain = SideBySide(case, precision, SHAPES, seed_for(case, precision, "scale"))
    grad_scale = scale if scale_form == "number" else np.array([scale], np.float32)
    for k in range(1, 6):
        grads, _ = plain.new_grads()
        big = [(g.astype(np.float32) * np.float32(scale)).astype(g.dtype) for g in grads]
        big_before = [b.copy() for b in big]
        plain.call_rule(ft, plain.ext_params, grads, plain.ext_state, plain.ext_master, k)
        scaled.call_rule(ft, scaled.ext_params, big, scaled.ext_state, scaled.ext_master, k, grad_scale=grad_scale)
        for b, b0 in zip(big, big_before):
            assert same_bits(b, b0), "grad_scale modified the grads"
    for i, (a, b) in enumerate(zip(scaled.ext_params, plain.ext_params)):
        assert same_bits(a, b), f"params[{i}]"
    for name in case.state_names:
        for i, (a, b) in enumerate(zip(scaled.ext_state[name], plain.ext_state[name])):
            assert same_bits(a, b), f"{name}[{i}]"
