"""Table-driven invalid calls of the functions that take loose arrays (batch, layer, RMS, group,
instance norm): a template of a valid call, a mutation that spoils it, and the check that the
call raises the right error naming the function and the argument, writing nothing."""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import fusedtrain as ft
from bits import same_bits


def set_arg(name, value):
    """Mutation: call[name] = value (or value(call) when callable)."""
    def mutate(call):
        call[name] = value(call) if callable(value) else value
    return mutate


def read_only(name):
    def mutate(call):
        call[name].flags.writeable = False
    return mutate


@dataclass(frozen=True)
class Bad:
    target: str
    label: str
    mutate: Callable
    error: type
    names: tuple

    def __str__(self):
        return f"{self.target}[{self.label}]"


def check_bad_call(case, templates):
    """templates: target -> (template(), names of its positional arguments)."""
    template, positional = templates[case.target]
    call = template()
    case.mutate(call)
    arrays = [v for v in call.values() if isinstance(v, np.ndarray)]
    before = [a.copy() for a in arrays]
    args = [call.pop(n) for n in positional if n in call]
    with pytest.raises(case.error) as raised:
        getattr(ft, case.target)(*args, **call)
    message = str(raised.value)
    assert any(n in message for n in case.names), f"{message!r} names none of {case.names}"
    assert message.startswith(case.target), f"{message!r} does not name {case.target}"
    for i, (a, b) in enumerate(zip(arrays, before)):
        assert same_bits(a, b), f"array #{i} of the call was modified"


def check_template_call(target, templates):
    template, positional = templates[target]
    call = template()
    args = [call.pop(n) for n in positional]
    getattr(ft, target)(*args, **call)


def bad_call_tests(cases, templates):
    """The two tests of a table of bad calls, for a test module to bind to its own names: each
    case raises naming the argument and writes nothing; each template call is valid, so a case
    fails for its mutation alone."""
    @pytest.mark.parametrize("case", cases, ids=str)
    def test_bad_input_raises_naming_argument_and_writes_nothing(case, isa):
        check_bad_call(case, templates)

    @pytest.mark.parametrize("target", list(templates))
    def test_valid_template_call_succeeds(target, isa):
        check_template_call(target, templates)

    return (test_bad_input_raises_naming_argument_and_writes_nothing,
            test_valid_template_call_succeeds)
