"""Arrays of one call that share memory (Note [aliasing]): an array a rule reads may be exactly an
array it writes (a param as its own grad); any other sharing with a written array raises
ValueError naming both, before anything is written."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from bits import same_bits
from optim_cases import FIRST_OF_EACH_RULE
from precisions import PRECISIONS
from stepping import SideBySide, seed_for

SHAPES = [(7,), (4097,), (3, 5)]
F32, F64 = PRECISIONS[0], PRECISIONS[1]


def _own_grads(problem, steps):
    """Steps `problem` with every param as its own grad (grads = params, the same arrays)."""
    for k in range(1, steps + 1):
        problem.call_rule(ft, problem.ext_params, problem.ext_params, problem.ext_state,
                          problem.ext_master, k)


@pytest.mark.parametrize("precision", [F32, F64], ids=str)
@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_param_as_its_own_grad_equals_a_copy(case, precision, isa):
    # The grad of 0.5 * ||p||^2 is p: passing p itself must step exactly as passing a copy taken
    # at the start of the step does, bit for bit, and as the reference does.
    seed = seed_for(case, precision, "own-grad")
    aliased = SideBySide(case, precision, SHAPES, seed)
    copied = SideBySide(case, precision, SHAPES, seed)
    _own_grads(aliased, 10)
    for k in range(1, 11):
        copied.call_rule(ft, copied.ext_params, [p.copy() for p in copied.ext_params],
                         copied.ext_state, copied.ext_master, k)
        copied.call_rule(ref, copied.ref_params, [p.copy() for p in copied.ref_params],
                         copied.ref_state, copied.ref_master, k)
    copied.check()
    for i, (a, b) in enumerate(zip(aliased.ext_params, copied.ext_params)):
        assert same_bits(a, b), f"params[{i}]"
    for name in case.state_names:
        for i, (a, b) in enumerate(zip(aliased.ext_state[name], copied.ext_state[name])):
            assert same_bits(a, b), f"{name}[{i}]"


def _adam_lists(n=4, size=33):
    rng = np.random.default_rng(3)
    make = lambda: [rng.standard_normal(size).astype(np.float32) for _ in range(n)]
    return {"params": make(), "grads": make(), "exp_avgs": make(),
            "exp_avg_sqs": [np.abs(a) for a in make()]}


def _twice_in_params(c):
    c["params"][2] = c["params"][0]


def _state_is_other_state(c):
    c["exp_avg_sqs"][1] = c["exp_avgs"][1]


def _state_is_param(c):
    c["exp_avgs"][3] = c["params"][1]


def _overlapping_views(c):
    buf = np.zeros(60, np.float32)
    c["exp_avgs"][1], c["exp_avgs"][2] = buf[0:33], buf[20:53]


def _grad_shifted_into_param(c):
    # A grad that overlaps a param without being it: read after part of it is written.
    buf = np.ones(70, np.float32)
    c["params"][0], c["grads"][0] = buf[0:33], buf[10:43]


def _grad_half_view_of_param(c):
    # The same first bytes as a param but read as float16 (float16 grads go with float32
    # params): not the same array, so not allowed.
    c["grads"] = [a.astype(np.float16) for a in c["grads"]]
    c["grads"][0] = c["params"][0].view(np.float16)[:33]


BAD = {
    "same-param-twice": (_twice_in_params, ("params[2]", "params[0]")),
    "state-is-other-state": (_state_is_other_state, ("exp_avg_sqs[1]", "exp_avgs[1]")),
    "state-is-param": (_state_is_param, ("exp_avgs[3]", "params[1]")),
    "overlapping-state-views": (_overlapping_views, ("exp_avgs[2]", "exp_avgs[1]")),
    "grad-shifted-into-param": (_grad_shifted_into_param, ("grads[0]", "params[0]")),
    "grad-half-view-of-param": (_grad_half_view_of_param, ("grads[0]", "params[0]")),
}


@pytest.mark.parametrize("label", list(BAD))
def test_shared_memory_with_a_written_array_raises(label, isa):
    mutate, names = BAD[label]
    call = _adam_lists()
    mutate(call)
    arrays = [a for v in call.values() for a in v]
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match="shares memory") as raised:
        ft.adam_(call["params"], call["grads"], call["exp_avgs"], call["exp_avg_sqs"], step=1)
    message = str(raised.value)
    assert message.startswith("adam_:") and all(n in message for n in names), message
    for i, (a, b) in enumerate(zip(arrays, before)):
        assert same_bits(a, b), f"array #{i} was written"


def test_read_only_lists_may_repeat_an_array(isa):
    # The same grad for several params, and global_norm over repeats: reads share freely.
    call = _adam_lists()
    shared = call["grads"][0]
    reference = _adam_lists()
    ft.adam_(call["params"], [shared] * 4, call["exp_avgs"], call["exp_avg_sqs"], step=1)
    ft.adam_(reference["params"], [shared.copy() for _ in range(4)], reference["exp_avgs"],
             reference["exp_avg_sqs"], step=1)
    for a, b in zip(call["params"], reference["params"]):
        assert same_bits(a, b)
    x = call["params"][0]
    assert ft.global_norm([x, x, x[5:20]]) == ft.global_norm([x, x.copy(), x[5:20].copy()])


def test_clip_grad_norm_rejects_a_grad_twice(isa):
    g = np.full(100, 3.0, np.float32)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with grads\[0\]"):
        ft.clip_grad_norm_([g, g], max_norm=1.0)
    assert np.all(g == 3.0)


def test_ema_of_an_array_with_itself_leaves_it(isa):
    a = np.linspace(-1, 1, 1001).astype(np.float32)
    before = a.copy()
    ft.ema_([a], [a], decay=0.3)
    assert same_bits(a, before)


def _bn(training):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 6)).astype(np.float32)
    return x, np.ones(4, np.float32), np.zeros(4, np.float32)


def test_batch_norm_running_stats_may_not_alias_what_training_reads(isa):
    x, rm, rv = _bn(True)
    w = rm  # the weight read after running_mean[c] is updated
    with pytest.raises(ValueError, match="shares memory"):
        ft.batch_norm_forward(x, w, None, rm, rv, training=True)
    assert np.all(rm == 1)
    with pytest.raises(ValueError, match="running_var shares memory with running_mean"):
        ft.batch_norm_forward(x, None, None, rm, rm, training=True)
    flat = x.reshape(-1)
    with pytest.raises(ValueError, match="shares memory"):
        ft.batch_norm_forward(x, None, None, flat[:4], flat[4:8], training=True)
    # Evaluation reads both: sharing is fine, and equals separate copies.
    y1 = ft.batch_norm_forward(x, rv, None, rv, rv, training=False)
    y2 = ft.batch_norm_forward(x, rv.copy(), None, rv.copy(), rv.copy(), training=False)
    assert all(same_bits(a, b) for a, b in zip(y1, y2))


def test_update_running_stats_rejects_shared_running_stats(isa):
    rm = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="running_var shares memory with running_mean"):
        ft.update_running_stats_(rm, rm, np.ones(4, np.float32), np.ones(4, np.float32), 10,
                                 momentum=0.1)
    assert np.all(rm == 0)


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_many_views_of_one_buffer_in_any_address_order(order, isa):
    # Disjoint views of one buffer, listed in address order, reversed or shuffled (the check
    # sorts them): accepted and stepped like separate arrays; one view moved onto its
    # neighbour's memory is caught wherever it sits in the list.
    n, size = 3000, 5
    rng = np.random.default_rng(11)
    buf = rng.standard_normal(3 * n * size).astype(np.float32)
    views = [buf[k * size:(k + 1) * size] for k in range(3 * n)]
    ranks = {"ascending": np.arange(3 * n), "descending": np.arange(3 * n)[::-1],
             "shuffled": rng.permutation(3 * n)}[order]
    params, exp_avgs, exp_avg_sqs = (list(ranks[j::3]) for j in range(3))
    params = [views[k] for k in params]
    exp_avgs = [views[k] for k in exp_avgs]
    exp_avg_sqs = [np.abs(views[k], out=views[k]) for k in exp_avg_sqs]
    grads = [rng.standard_normal(size).astype(np.float32) for _ in range(n)]
    copies = [[a.copy() for a in lst] for lst in (params, exp_avgs, exp_avg_sqs)]
    ft.adam_(params, grads, exp_avgs, exp_avg_sqs, step=1)
    ft.adam_(*copies[:1], grads, *copies[1:], step=1)
    for got, want in zip((params, exp_avgs, exp_avg_sqs), copies):
        assert all(same_bits(a, b) for a, b in zip(got, want))
    i = int(rng.integers(1, n))
    start = params[i].ctypes.data - buf.ctypes.data
    exp_avgs[i - 1] = np.ndarray(size, np.float32, buffer=buf, offset=start + 8)
    before = buf.copy()
    with pytest.raises(ValueError, match=fr"exp_avgs\[{i - 1}\].*params\[{i}\]|params\[{i}\].*exp_avgs\[{i - 1}\]"):
        ft.adam_(params, grads, exp_avgs, exp_avg_sqs, step=2)
    assert same_bits(buf, before)
