"""ft.schedules against their formulas, their edge points, and their argument checks."""

import math
import pickle

import pytest

import fusedtrain as ft

S = ft.schedules

# (schedule, formula written out independently, steps to check)
FORMULAS = [
    (S.step_decay(0.1, 3, 0.5), lambda t: 0.1 * 0.5 ** (t // 3), 20),
    (S.exponential(0.2, 0.05), lambda t: 0.2 * math.exp(-0.05 * t), 50),
    (S.inverse_time(0.3, 0.1), lambda t: 0.3 / (1 + 0.1 * t), 50),
    (S.linear(0.5, 10), lambda t: (1 - min(t, 10) / 10) * 0.5 + min(t, 10) / 10 * 0.005, 30),
    (S.linear(0.5, 8, final_fraction=0.2),
     lambda t: (1 - min(t, 8) / 8) * 0.5 + min(t, 8) / 8 * 0.1, 30),
    (S.cosine(1.0, 20), lambda t: 0.5 * (1 + math.cos(math.pi * min(t, 20) / 20)), 40),
    (S.cosine(1.0, 20, lr_min=0.1),
     lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 20) / 20)), 40),
    (S.warmup(S.cosine(1.0, 20), 5),
     lambda t: 0.5 * (1 + math.cos(math.pi * min(t, 20) / 20)) * min(t / 5, 1.0), 40),
    (S.warmup(0.01, 4), lambda t: 0.01 * min(t / 4, 1.0), 10),
]


@pytest.mark.parametrize("sched,formula,steps", FORMULAS, ids=repr)
def test_matches_formula(sched, formula, steps):
    for t in range(steps):
        got = sched(t)
        assert isinstance(got, float)
        assert got == pytest.approx(formula(t), rel=1e-12, abs=1e-15), (sched, t)


def test_edge_points():
    assert S.step_decay(1.0, 4, 0.1)(3) == 1.0 and S.step_decay(1.0, 4, 0.1)(4) == pytest.approx(0.1)
    lin = S.linear(2.0, 10, final_fraction=0.25)
    assert lin(0) == 2.0 and lin(10) == 0.5 and lin(1000) == 0.5
    cos = S.cosine(1.0, 10, lr_min=0.2)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.6) and cos(10) == 0.2 and cos(99) == 0.2
    w = S.warmup(S.exponential(1.0, 0.0), 4)
    assert [w(t) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_picklable_and_comparable():
    sched = S.warmup(S.cosine(1e-3, 100, lr_min=1e-5), 10)
    back = pickle.loads(pickle.dumps(sched))
    assert back == sched and [back(t) for t in range(120)] == [sched(t) for t in range(120)]
    assert "cosine" in repr(sched)


BAD = [
    (S.step_decay, (0.1, 0, 0.5), "step_size"),
    (S.step_decay, (0.1, 2.5, 0.5), "step_size"),
    (S.step_decay, (0.1, 3, 0.0), "gamma"),
    (S.step_decay, (-0.1, 3, 0.5), "lr0"),
    (S.exponential, (0.1, -1.0), "k"),
    (S.exponential, (float("nan"), 1.0), "lr0"),
    (S.exponential, (10 ** 400, 1.0), "lr0"),
    (S.inverse_time, (0.1, -0.5), "k"),
    (S.linear, (0.1, 0), "tau"),
    (S.linear, (0.1, 10, 1.5), "final_fraction"),
    (S.linear, (0.1, 10, -0.1), "final_fraction"),
    (S.cosine, (0.1, 0), "total_steps"),
    (S.cosine, (0.1, 10, 0.2), "lr_min"),
    (S.warmup, (S.cosine(0.1, 10), 0), "warmup_steps"),
    (S.warmup, ("fast", 3), "schedule"),
]


@pytest.mark.parametrize("factory,args,name", BAD, ids=lambda x: getattr(x, "__name__", str(x)))
def test_bad_arguments_raise_value_error_naming_them(factory, args, name):
    with pytest.raises(ValueError, match=name):
        factory(*args)


def test_negative_t_raises():
    with pytest.raises(ValueError, match="t"):
        S.exponential(0.1, 0.1)(-1)
