"""Invalid calls raise TypeError/ValueError naming the argument, and leave every array bit-identical."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from bad_input_cases import CASES, valid_call
from bits import same_bits


def _arrays_in(call):
    return [a for v in call.values() if isinstance(v, (list, tuple)) for a in v if isinstance(a, np.ndarray)]


def _call(module, target, positional, call):
    args = [call[n] for n in positional]
    kwargs = {k: v for k, v in call.items() if k not in positional}
    return getattr(module, target)(*args, **kwargs)




@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_raises_and_writes_nothing(case, isa):
    positional, call = valid_call(case.target, case.param_dtype)
    case.mutate(call)
    arrays = _arrays_in(call)
    before = [a.copy() for a in arrays]
    with pytest.raises(case.error) as raised:
        _call(ft, case.target, positional, call)
    message = str(raised.value)
    assert any(n in message for n in case.names), f"{message!r} names none of {case.names}"
    for i, (a, b) in enumerate(zip(arrays, before)):
        assert same_bits(a, b), f"array #{i} of the call was modified"


@pytest.mark.parametrize("case", [c for c in CASES if c.hyper], ids=str)
def test_reference_rejects_the_same_hyperparameters(case):
    positional, call = valid_call(case.target, "float64")
    case.mutate(call)
    with pytest.raises(case.error) as raised:
        _call(ref, case.target, positional, call)
    assert any(n in str(raised.value) for n in case.names)


@pytest.mark.parametrize("param_dtype", ["float32", "float16"])
@pytest.mark.parametrize("target", sorted({c.target for c in CASES}))
def test_valid_template_call_succeeds(target, param_dtype, isa):
    # Guards the table: each bad case differs from a call that works by its one mutation only.
    positional, call = valid_call(target, param_dtype)
    _call(ft, target, positional, call)


def test_read_only_grads_are_accepted(isa):
    positional, call = valid_call("adam_")
    for g in call["grads"]:
        g.flags.writeable = False
    _call(ft, "adam_", positional, call)


def test_first_bad_list_is_named(isa):
    # Note [import order]: the lists are imported one after the other, so with faults in two lists
    # the error names the earlier list's, even at a later index; nothing is written either way.
    positional, call = valid_call("adam_")
    call["grads"][3] = call["grads"][3][:-1]  # wrong shape, row 3
    call["exp_avg_sqs"][1] = call["exp_avg_sqs"][1].astype(np.float64)  # wrong dtype, row 1
    params = [p.copy() for p in call["params"]]
    with pytest.raises(ValueError, match=r"^adam_: grads\[3\] has shape"):
        _call(ft, "adam_", positional, call)
    call["grads"][3] = np.zeros_like(call["params"][3])
    with pytest.raises(TypeError, match=r"^adam_: exp_avg_sqs\[1\] has dtype float64"):
        _call(ft, "adam_", positional, call)
    assert all(same_bits(a, b) for a, b in zip(call["params"], params))
