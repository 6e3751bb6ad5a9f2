"""Every public function, called with generated arguments, good and hostile, keeps the contract:

- it raises TypeError or ValueError, and every array it was given is byte-identical; or
- it returns, every output (and array updated in place) is finite when the inputs were finite and
  the hyperparameters ordinary, for float64 arrays the results agree with
  ``fusedtrain.reference``, and the same call on the same values placed elsewhere in memory gives
  the same bits (for the full-batch optimizers: a twin on moved params takes the same steps).

Any other exception, a crash, or a sanitizer report (CI runs this file under ASan and UBSan) is a
failure. Examples are drawn deterministically (the same in every run); FUSEDTRAIN_FUZZ_EXAMPLES
sets how many per target (default 100), FUSEDTRAIN_FUZZ_RANDOM=1 draws fresh ones each run.
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fusedtrain as ft  # noqa: E402
import fusedtrain.reference as ref  # noqa: E402
from optim_cases import RULES  # noqa: E402
from precisions import Tolerance, assert_close  # noqa: E402

EXAMPLES = int(os.environ.get("FUSEDTRAIN_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("FUSEDTRAIN_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck))
# One float64 step, in another order of operations than the reference's; loose enough for the
# cancellation of centered RMSProp at alpha near 0, far below what a wrong formula gives.
F64_TOL = Tolerance(1e-7, 1e-10)

# float64 twice: the calls compared with the reference.
try:
    import ml_dtypes
    DTYPES = ["float32", "float64", "float64", "float16", ml_dtypes.bfloat16]
except ImportError:
    DTYPES = ["float32", "float64", "float64", "float16"]

# Values a hostile caller passes for a number; none is an ordinary hyperparameter.
HOSTILE = [-1.0, -1e-30, float("nan"), float("inf"), -float("inf"), 10 ** 400, -10 ** 400, 1e308,
           True, "0.1", None, [0.1], np.array([0.1]), np.array([np.nan]), np.zeros((2,)),
           np.float32(0.5), 0, 2]


@dataclass
class Call:
    """One generated call: positional and keyword arguments, and what the contract expects."""
    target: str
    args: list
    kwargs: dict
    ordinary: bool = True          # finite inputs and ordinary hyperparameters: outputs finite
    compare: bool = True           # float64 and comparable: agree with the reference
    notes: list = field(default_factory=list)
    scale: float = 0.0             # magnitude of the terms a result is the difference of

    def arrays(self):
        out = []
        for v in list(self.args) + list(self.kwargs.values()):
            for a in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(a, np.ndarray) and not any(a is b for b in out):
                    out.append(a)
        return out


def _map_arrays(v, f):
    """v with every array a in its lists, tuples and dicts replaced by f(a)."""
    if isinstance(v, np.ndarray):
        return f(v)
    if isinstance(v, list):
        return [_map_arrays(a, f) for a in v]
    if isinstance(v, tuple):
        return tuple(_map_arrays(a, f) for a in v)
    if isinstance(v, dict):
        return {k: _map_arrays(a, f) for k, a in v.items()}
    return v


def _copy_tree(v):
    return _map_arrays(v, lambda a: a.copy())


def _relocated(v, memo, shift):
    """v with every C-contiguous array copied to a new place `shift` elements into a larger
    allocation (an array passed twice stays one array), flags kept: Note [no loop vectorizer in
    the full-batch passes] asks that results not depend on where arrays lie."""
    def move(a):
        if id(a) not in memo:
            r = a
            if a.flags.c_contiguous and a.size:
                r = np.empty(a.size + 8, a.dtype)[shift:shift + a.size].reshape(a.shape)
                r[...] = a
                r.flags.writeable = a.flags.writeable
            memo[id(a)] = r
        return memo[id(a)]
    return _map_arrays(v, move)


def _bits(values):
    return [(np.asarray(v).dtype.str, np.asarray(v).tobytes()) for v in values]


def _finite(a):
    return np.all(np.isfinite(np.asarray(a, dtype=np.float64)))


def _flat(result):
    if result is None:
        return []
    if isinstance(result, (tuple, list)):
        return [r for r in result if r is not None]
    return [result]


def check_contract(call):
    arrays = call.arrays()
    before = [a.tobytes() for a in arrays]
    ref_args, ref_kwargs = _copy_tree(call.args), _copy_tree(call.kwargs)
    if isinstance(ref_kwargs.get("lr"), np.ndarray):  # the reference takes numbers
        ref_kwargs["lr"] = float(ref_kwargs["lr"].reshape(-1)[0])
    memo = {}
    moved_args = _relocated(call.args, memo, 1 + len(arrays) % 7)
    moved_kwargs = _relocated(call.kwargs, memo, 1 + len(arrays) % 7)
    fn = getattr(ft, call.target)
    try:
        result = fn(*call.args, **call.kwargs)
    except (TypeError, ValueError) as e:
        for i, (a, b) in enumerate(zip(arrays, before)):
            assert a.tobytes() == b, f"{call.target} raised {e!r} but changed array #{i}"
        assert str(e).startswith(call.target), f"message does not name the function: {e}"
        event("rejected")
        return
    moved = fn(*moved_args, **moved_kwargs)
    assert _bits(_flat(moved)) == _bits(_flat(result)), \
        f"{call.target}: the same values elsewhere in memory gave another result ({call.notes})"
    assert _bits(_leaves(moved_args, moved_kwargs)) == _bits(_leaves(call.args, call.kwargs)), \
        f"{call.target}: the same values elsewhere in memory were updated otherwise ({call.notes})"
    inputs_finite = all(_finite(b) for b in arrays if b.dtype.kind == "f" or b.dtype.name == "bfloat16")
    if call.ordinary and inputs_finite:
        for a in arrays + [np.asarray(r) for r in _flat(result)]:
            assert _finite(a), f"{call.target} returned or wrote a non-finite value ({call.notes})"
    if call.compare:
        want = getattr(ref, call.target)(*ref_args, **ref_kwargs)
        got_out, want_out = _flat(result), _flat(want)
        assert len(got_out) == len(want_out)
        for g, w in zip(got_out, want_out):
            assert_close(g, w, F64_TOL, f"{call.target} result", call.scale)
        for g, w in zip(_leaves(call.args, call.kwargs), _leaves(ref_args, ref_kwargs)):
            assert_close(g, w, F64_TOL, f"{call.target} in-place array", call.scale)
    event("compared with the reference" if call.compare else "accepted")


def _leaves(args, kwargs):
    """The arrays of the call's lists (what a call updates in place), in a fixed order."""
    out = []
    for v in list(args) + [kwargs[k] for k in sorted(kwargs) if isinstance(kwargs[k], list)]:
        for a in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(a, np.ndarray):
                out.append(a)
    return out


# ---------------------------------------------------------------- array strategies

def _shape(draw, max_dims=3, max_side=9):
    return tuple(draw(st.lists(st.integers(0, max_side), min_size=0, max_size=max_dims)))


def _array(draw, shape, dtype, low=-4.0, high=4.0):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    return np.asarray(rng.uniform(low, high, shape)).astype(np.float32).astype(dtype)


def _other_float(a):
    """a in another float dtype than its own (float64, or float32 for a float64 array)."""
    return a.astype(np.float64 if a.dtype != np.float64 else np.float32)


def _spoil_array(draw, a, writable):
    """A bad variant of array a (wrong dtype, shape, layout, type) or None."""
    a = np.asarray(a)
    kind = draw(st.sampled_from(["dtype-int", "dtype-other", "shape", "noncontiguous", "readonly",
                                 "none", "pylist", "0d"]))
    if kind == "dtype-int":
        return a.astype(np.int32)
    if kind == "dtype-other":
        return _other_float(a)
    if kind == "shape":
        return np.zeros(a.size + 1, a.dtype)
    if kind == "noncontiguous":
        if a.size < 2:
            return np.zeros(4, a.dtype)[::2]
        return np.repeat(a.reshape(-1), 2)[::2].reshape(a.shape)
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "none":
        return None
    if kind == "pylist":
        return a.astype(np.float64).tolist()
    return np.float32(1.0) if writable else np.array(1.0, np.float32)


def _hyper(draw, call, name, ordinary):
    """An ordinary value from the strategy, or (sometimes) a hostile one."""
    if draw(st.integers(0, 9)) == 0:
        call.ordinary = call.compare = False
        call.notes.append(name)
        return draw(st.sampled_from(HOSTILE))
    return draw(ordinary)


def _maybe_spoil_lists(draw, call, names, written):
    """Sometimes spoils one list of the call: an element, its length, its type, or aliasing."""
    if draw(st.integers(0, 3)) != 0:
        return
    call.ordinary = call.compare = False
    name = draw(st.sampled_from(names))
    lst = call.kwargs.get(name) if name in call.kwargs else call.args[names.index(name)]
    kind = draw(st.sampled_from(["element", "length", "tuple", "not-a-list", "alias", "none"]))
    call.notes.append(f"{name}:{kind}")
    if kind == "element" and lst:
        i = draw(st.integers(0, len(lst) - 1))
        lst[i] = _spoil_array(draw, lst[i], name in written)
    elif kind == "length":
        lst.append(lst[0].copy() if lst else np.zeros(3, np.float32))
    elif kind == "tuple":
        _replace_list(call, names, name, tuple(lst))
    elif kind == "not-a-list":
        _replace_list(call, names, name, lst[0] if lst else 3.0)
    elif kind == "alias" and lst:
        other = draw(st.sampled_from(names))
        src = call.kwargs.get(other) if other in call.kwargs else call.args[names.index(other)]
        if src:
            i, j = draw(st.integers(0, len(lst) - 1)), draw(st.integers(0, len(src) - 1))
            lst[i] = src[j]
    elif kind == "none":
        _replace_list(call, names, name, None)


def _replace_list(call, names, name, value):
    if name in call.kwargs:
        call.kwargs[name] = value
    else:
        call.args[names.index(name)] = value


# ---------------------------------------------------------------- the optimizer rules

ORDINARY = {
    "lr": st.floats(0.0, 1.0), "weight_decay": st.floats(0.0, 0.5), "momentum": st.floats(0.0, 0.99),
    "dampening": st.floats(0.0, 1.0), "lr_decay": st.floats(0.0, 1.0), "eps": st.floats(1e-8, 1.0),
    "alpha": st.floats(0.0, 1.0), "rho": st.floats(0.0, 1.0), "beta1": st.floats(0.0, 0.99),
    "beta2": st.floats(0.0, 0.999), "momentum_decay": st.floats(0.0, 0.5),
}
# State lists that must stay >= 0 (second moments), and so must the square averages of
# centered RMSProp stay above the squared grad averages.
NONNEGATIVE = {"state_sums", "square_avgs", "acc_deltas", "exp_avg_sqs", "max_exp_avg_sqs"}


def _keyword_state(rule, options):
    """The optional state lists the options switch on; a hostile momentum counts as > 0."""
    m = options.get("momentum", 0.0)
    ordinary = isinstance(m, (int, float)) and not isinstance(m, bool) and m == m
    return rule.keyword_state({**options, "momentum": m if ordinary else 1.0})


@st.composite
def rule_calls(draw, target):
    rule = RULES[target]
    pdt = np.dtype(draw(st.sampled_from(DTYPES)))
    half = pdt.itemsize == 2
    sdt = np.float32 if half else pdt
    gdt = np.float32 if half and draw(st.booleans()) else pdt
    shapes = [_shape(draw) for _ in range(draw(st.integers(0, 4)))]
    call = Call(target, [], {})
    call.compare = pdt == np.float64
    params = [_array(draw, s, pdt) for s in shapes]
    grads = [_array(draw, s, gdt) for s in shapes]
    options = {}
    for k, default in rule.defaults().items():
        if k in ORDINARY and draw(st.booleans()):
            options[k] = _hyper(draw, call, k, ORDINARY[k])
    if "lr" not in rule.defaults():
        options["lr"] = _hyper(draw, call, "lr", ORDINARY["lr"])
    for flag in ("maximize", "nesterov", "centered", "amsgrad", "decoupled_weight_decay"):
        if flag in rule.defaults() and draw(st.booleans()):
            options[flag] = True
    needed = set()
    for flag, needs in rule.flag_needs:
        if options.get(flag):
            for k, v in needs.items():
                options[k] = draw(st.floats(*v)) if isinstance(v, tuple) else v
                needed.add(k)
    for k, (low, high) in rule.off_by_default.items():
        if k not in needed and draw(st.booleans()):
            options[k] = draw(st.floats(low, high))
    state_names = rule.positional_state + _keyword_state(rule, options)
    states = {}
    for name in state_names:
        low = 0.0 if name in NONNEGATIVE else -4.0
        states[name] = [_array(draw, s, sdt, low) for s in shapes]
    # (np.asarray: a ufunc on a 0-d array returns a scalar, not an array.)
    if "grad_avgs" in states:
        states["square_avgs"] = [np.asarray(a + g.astype(sdt) ** 2)
                                 for a, g in zip(states["square_avgs"], states["grad_avgs"])]
        if isinstance(options.get("alpha"), float):
            # alpha near 0 leaves square_avgs - grad_avgs**2 at rounding noise, which
            # 1 / sqrt amplifies without bound (NaN in torch too): not an ordinary input.
            options["alpha"] = max(options["alpha"], 0.1)
    if "max_exp_avg_sqs" in states:
        states["max_exp_avg_sqs"] = [np.asarray(np.maximum(m, v))
                                     for m, v in zip(states["max_exp_avg_sqs"], states["exp_avg_sqs"])]
    if rule.takes_step:
        step = draw(st.integers(1, 50))
        form = draw(st.integers(0, 9))
        if form == 0:
            call.ordinary = call.compare = False
            options["step"] = draw(st.sampled_from([0, -1, 2 ** 53 + 1, 10 ** 30, 1.5, True, None,
                                                    np.array([np.nan]), np.array([0.5]),
                                                    np.array([1e30]), np.array([-2.0])]))
            call.notes.append("step")
        elif form == 1:
            options["step"] = np.array([step], np.float64)
        else:
            options["step"] = step
    if draw(st.integers(0, 4)) == 0 and isinstance(options.get("lr"), float):
        with np.errstate(over="ignore"):
            options["lr"] = np.array([options["lr"]], np.float32 if draw(st.booleans()) else np.float64)
        call.compare = call.compare and options["lr"].dtype == np.float64
    scale_form = draw(st.integers(0, 5))
    if scale_form == 1:
        options["grad_scale"] = draw(st.sampled_from([0.5, 1024.0, np.array([64.0], np.float32)]))
    elif scale_form == 2:
        call.ordinary = call.compare = False
        options["grad_scale"] = draw(st.sampled_from([0.0, -2.0, float("nan"), float("inf"),
                                                      10 ** 400, np.array([0.0]), "2"]))
        call.notes.append("grad_scale")
    inf_form = draw(st.integers(0, 5))
    if inf_form == 1:
        options["found_inf"] = draw(st.sampled_from([0.0, 1.0, np.zeros(1, np.float32),
                                                     np.ones(1, np.float32), float("nan"), True]))
    if half and draw(st.booleans()):
        options["master_params"] = [p.astype(np.float32) for p in params]
    if draw(st.integers(0, 5)) == 0:
        options["max_grad_norm"] = draw(st.sampled_from([1.0, 0.01, -1.0]))
        call.compare = False
    args = [params, grads] + [states[n] for n in rule.positional_state]
    names = ["params", "grads", *rule.positional_state]
    for n in _keyword_state(rule, options):
        options[n] = states[n]
        names.append(n)
    call.args, call.kwargs = args, options
    written = {n for n in names if n != "grads"}
    _maybe_spoil_lists(draw, call, names + (["master_params"] if "master_params" in options else []), written)
    if call.compare and isinstance(options.get("step"), np.ndarray):
        call.compare = False  # the reference takes a Python step
    return call


@pytest.mark.parametrize("target", list(RULES))
def test_fuzz_rules(target):
    @FUZZ
    @given(rule_calls(target))
    def run(call):
        check_contract(call)
    run()


# ---------------------------------------------------------------- utilities

@st.composite
def utility_calls(draw, target):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shapes = [_shape(draw) for _ in range(draw(st.integers(0, 4)))]
    call = Call(target, [], {})
    call.compare = dt == np.float64
    arrays = [_array(draw, s, dt) for s in shapes]
    norm_type = st.sampled_from([1.0, 2.0, 3.5, float("inf")])
    if target == "global_norm":
        call.args = [arrays]
        call.kwargs = {"norm_type": _hyper(draw, call, "norm_type", norm_type)}
        names, written = ["arrays"], set()
    elif target == "clip_grad_norm_":
        call.args = [arrays]
        call.kwargs = {"max_norm": _hyper(draw, call, "max_norm", st.floats(0.0, 10.0)),
                       "norm_type": _hyper(draw, call, "norm_type", norm_type)}
        names, written = ["grads"], {"grads"}
    else:
        adt = np.float32 if dt.itemsize == 2 else dt
        call.args = [[_array(draw, s, adt) for s in shapes], arrays]
        call.kwargs = {"decay": _hyper(draw, call, "decay", st.floats(0.0, 1.0))}
        names, written = ["averages", "params"], {"averages"}
    _maybe_spoil_lists(draw, call, names, written)
    return call


@pytest.mark.parametrize("target", ["global_norm", "clip_grad_norm_", "ema_"])
def test_fuzz_utilities(target):
    @FUZZ
    @given(utility_calls(target))
    def run(call):
        check_contract(call)
    run()


# ---------------------------------------------------------------- batch norm

def _bn_shape(draw):
    dims = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4))
    channels = draw(st.integers(1, 6))
    channels_last = draw(st.booleans())
    shape = [dims[0]] + ([channels] if not channels_last else []) + dims[1:] + ([channels] if channels_last else [])
    return tuple(shape), channels, channels_last


def _maybe(draw, call, value, name, spoil_writable=False):
    """value, or (sometimes) a spoiled version of it."""
    if draw(st.integers(0, 11)) != 0:
        return value
    call.ordinary = call.compare = False
    call.notes.append(name)
    if value is None or draw(st.booleans()):
        return draw(st.sampled_from(HOSTILE))
    return _spoil_array(draw, value, spoil_writable)


@st.composite
def bn_calls(draw, target):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shape, C, cl = _bn_shape(draw)
    call = Call(target, [], {})
    call.compare = dt == np.float64
    pdt = dt if draw(st.booleans()) else np.dtype(np.float32)
    call.compare = call.compare and pdt == np.float64
    x = _array(draw, shape, dt)
    flag = lambda name: _hyper(draw, call, name, st.just(cl))
    if target == "batch_norm_forward":
        training = draw(st.booleans())
        running = draw(st.booleans()) or not training
        w = _array(draw, (C,), pdt, 0.5, 2.0) if draw(st.booleans()) else None
        b = _array(draw, (C,), pdt) if draw(st.booleans()) else None
        rm = _array(draw, (C,), pdt) if running else None
        rv = _array(draw, (C,), pdt, 0.1, 4.0) if running else None
        if draw(st.integers(0, 15)) == 0 and rm is not None:
            w = rm  # aliasing: allowed in eval, rejected in training
            call.ordinary = call.ordinary and not training
            call.compare = call.compare and not training
        call.args = [_maybe(draw, call, x, "x"), _maybe(draw, call, w, "weight"),
                     _maybe(draw, call, b, "bias"), _maybe(draw, call, rm, "running_mean", True),
                     _maybe(draw, call, rv, "running_var", True)]
        call.kwargs = {"training": _hyper(draw, call, "training", st.just(training)),
                       "momentum": _hyper(draw, call, "momentum", st.floats(0.0, 1.0)),
                       "eps": _hyper(draw, call, "eps", st.floats(1e-5, 1.0)),
                       "channels_last": flag("channels_last")}
    elif target == "batch_norm_backward":
        _, mean, invstd = ft.batch_norm_forward(x, channels_last=cl) if x.size // C > 1 else \
            (None, np.zeros(C, np.float64 if dt == np.float64 else np.float32),
             np.ones(C, np.float64 if dt == np.float64 else np.float32))
        w = _array(draw, (C,), pdt, 0.5, 2.0) if draw(st.booleans()) else None
        call.args = [_maybe(draw, call, _array(draw, shape, dt), "dy"), _maybe(draw, call, x, "x"),
                     _maybe(draw, call, w, "weight"), _maybe(draw, call, mean, "save_mean"),
                     _maybe(draw, call, invstd, "save_invstd")]
        call.kwargs = {"channels_last": flag("channels_last")}
        # Note [given sums]: the whole backward, its sums alone, or dx from a larger batch's sums.
        half = draw(st.sampled_from(["whole", "sums", "dx"]))
        if half == "sums":
            call.kwargs["input_grad"] = _hyper(draw, call, "input_grad", st.just(False))
        elif half == "dx":
            m = x.size // C
            count = draw(st.integers(max(m, 1), 4 * max(m, 1)))
            if draw(st.integers(0, 7)) == 0:
                count = draw(st.sampled_from([m - 1, 0, float("nan"), 10 ** 400, "9", None]))
                call.ordinary = call.compare = False
            call.kwargs["sums"] = (_maybe(draw, call, _array(draw, (C,), np.float64), "sum_dy"),
                                   _maybe(draw, call, _array(draw, (C,), np.float64), "sum_dy_xhat"),
                                   count)
    elif target == "batch_norm_stats":
        call.args = [_maybe(draw, call, x, "x")]
        call.kwargs = {"channels_last": flag("channels_last")}
    elif target == "merge_stats":
        k = draw(st.integers(0, 4))
        sdt = np.float64 if dt == np.float64 else np.float32
        means = _array(draw, (k, C), sdt)
        vars_ = _array(draw, (k, C), sdt, 0.0, 4.0)
        counts = draw(st.lists(st.integers(0, 1000).map(float), min_size=k, max_size=k))
        if draw(st.integers(0, 5)) == 0:
            counts = draw(st.sampled_from([counts[:-1], [-1.0] * k, [float("nan")] * k,
                                           [10 ** 400] * k, 5.0, "12", [1.0] * (k + 1)]))
            call.ordinary = call.compare = False
        call.args = [_maybe(draw, call, means, "means"), _maybe(draw, call, vars_, "vars"), counts]
    elif target == "update_running_stats_":
        rm, rv = _array(draw, (C,), pdt), _array(draw, (C,), pdt, 0.1, 4.0)
        mean, var = _array(draw, (C,), dt), _array(draw, (C,), dt, 0.0, 4.0)
        if draw(st.integers(0, 15)) == 0:
            rv = rm
            call.ordinary = call.compare = False
        count = draw(st.integers(2, 10 ** 6))
        if draw(st.integers(0, 7)) == 0:
            count = draw(st.sampled_from([1, 0, -5, float("nan"), 10 ** 400, "9", np.array([7.0])]))
            call.ordinary = call.compare = False
        call.args = [_maybe(draw, call, rm, "running_mean", True), _maybe(draw, call, rv, "running_var", True),
                     _maybe(draw, call, mean, "mean"), _maybe(draw, call, var, "var"), count]
        call.kwargs = {"momentum": _hyper(draw, call, "momentum", st.floats(0.0, 1.0))}
    return call


@pytest.mark.parametrize("target", ["batch_norm_forward", "batch_norm_backward", "batch_norm_stats",
                                    "merge_stats", "update_running_stats_"])
def test_fuzz_batch_norm(target):
    @FUZZ
    @given(bn_calls(target))
    def run(call):
        check_contract(call)
    run()


# ---------------------------------------------------------------- layer, RMS, group, instance norm

LN_TARGETS = ["layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward",
              "group_norm_forward", "group_norm_backward", "instance_norm"]


def _terms_scale(dy, rstd, w):
    """A normalization's dx is ``w * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))``: where
    those terms cancel (a row of one value, xhat = +-1) the result is tiny and carries the
    rounding of terms of size |w * rstd * dy|; errors are judged against that size."""
    size = lambda a: float(np.max(np.abs(np.asarray(a, np.float64)), initial=0.0))
    return size(dy) * size(rstd) * (1.0 if w is None else size(w))


@st.composite
def ln_calls(draw, target):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    pdt = dt if draw(st.booleans()) else np.dtype(np.float32)
    call = Call(target, [], {})
    call.compare = dt == np.float64 and pdt == np.float64
    sdt = np.float64 if dt == np.float64 else np.float32
    if target.startswith(("layer", "rms")):
        shape = tuple(draw(st.lists(st.integers(0, 7), min_size=1, max_size=4)))
        k = draw(st.integers(1, len(shape)))
        normalized = shape[len(shape) - k:]
        call.compare = call.compare and int(np.prod(shape)) > 0
        if draw(st.integers(0, 9)) == 0:
            normalized = draw(st.sampled_from([(), normalized + (1,), (3.0,), "ab", -1, (0,)]))
            call.ordinary = call.compare = False
        x = _array(draw, shape, dt)
        w = _array(draw, shape[len(shape) - k:], pdt, 0.5, 2.0) if draw(st.booleans()) else None
        b = _array(draw, shape[len(shape) - k:], pdt) if draw(st.booleans()) else None
        rms = target.startswith("rms")
        eps = _hyper(draw, call, "eps", st.floats(1e-5, 1.0))
        if target.endswith("forward"):
            call.args = [_maybe(draw, call, x, "x"), normalized, _maybe(draw, call, w, "weight")]
            if not rms:
                call.args.append(_maybe(draw, call, b, "bias"))
            call.kwargs = {"eps": eps}
        else:
            try:
                out = (ft.rms_norm_forward if rms else ft.layer_norm_forward)(x, shape[len(shape) - k:])
            except ValueError:  # no values to normalize
                return call
            stats = [_maybe(draw, call, out[1], "rstd")] if rms else \
                [_maybe(draw, call, out[1], "mean"), _maybe(draw, call, out[2], "rstd")]
            dy = _array(draw, shape, dt)
            call.scale = _terms_scale(dy, out[-1], w)
            call.args = [_maybe(draw, call, dy, "dy"), _maybe(draw, call, x, "x"),
                         normalized, *stats, _maybe(draw, call, w, "weight")]
            call.kwargs = {"weight_grads": _hyper(draw, call, "weight_grads", st.booleans())}
            if not rms:
                call.kwargs["bias_grads"] = _hyper(draw, call, "bias_grads", st.booleans())
        return call
    shape, C, cl = _bn_shape(draw)
    call.compare = call.compare and int(np.prod(shape)) > 0
    divisors = [g for g in range(1, C + 1) if C % g == 0]
    groups = C if target == "instance_norm" else draw(st.sampled_from(divisors))
    if target != "instance_norm" and draw(st.integers(0, 9)) == 0:
        groups = draw(st.sampled_from([0, -1, C + 1, 2.0, None]))
        call.ordinary = call.compare = False
    x = _array(draw, shape, dt)
    w = _array(draw, (C,), pdt, 0.5, 2.0) if draw(st.booleans()) else None
    b = _array(draw, (C,), pdt) if draw(st.booleans()) else None
    flag = lambda name, v: _hyper(draw, call, name, st.just(v))
    if target == "group_norm_forward":
        call.args = [_maybe(draw, call, x, "x"), groups, _maybe(draw, call, w, "weight"),
                     _maybe(draw, call, b, "bias")]
        call.kwargs = {"eps": _hyper(draw, call, "eps", st.floats(1e-5, 1.0)),
                       "channels_last": flag("channels_last", cl)}
    elif target == "group_norm_backward":
        try:
            _, mean, rstd = ft.group_norm_forward(x, groups, channels_last=cl)
        except (TypeError, ValueError):
            mean, rstd = np.zeros((shape[0], 1), sdt), np.ones((shape[0], 1), sdt)
        dy = _array(draw, shape, dt)
        call.scale = _terms_scale(dy, rstd, w)
        call.args = [_maybe(draw, call, dy, "dy"), _maybe(draw, call, x, "x"),
                     groups, _maybe(draw, call, mean, "mean"), _maybe(draw, call, rstd, "rstd"),
                     _maybe(draw, call, w, "weight")]
        call.kwargs = {"channels_last": flag("channels_last", cl),
                       "weight_grads": _hyper(draw, call, "weight_grads", st.booleans())}
    else:
        use_input_stats = draw(st.booleans())
        running = draw(st.booleans()) or not use_input_stats
        rm = _array(draw, (C,), pdt) if running else None
        rv = _array(draw, (C,), pdt, 0.1, 4.0) if running else None
        call.args = [_maybe(draw, call, x, "x"), _maybe(draw, call, rm, "running_mean", True),
                     _maybe(draw, call, rv, "running_var", True), _maybe(draw, call, w, "weight"),
                     _maybe(draw, call, b, "bias")]
        call.kwargs = {"use_input_stats": flag("use_input_stats", use_input_stats),
                       "momentum": _hyper(draw, call, "momentum", st.floats(0.0, 1.0)),
                       "eps": _hyper(draw, call, "eps", st.floats(1e-5, 1.0)),
                       "channels_last": flag("channels_last", cl)}
    return call


@pytest.mark.parametrize("target", LN_TARGETS)
def test_fuzz_layer_and_group_norm(target):
    @FUZZ
    @given(ln_calls(target))
    def run(call):
        if call.args:
            check_contract(call)
    run()


# ---------------------------------------------------------------- RunningStats

@FUZZ
@given(st.data())
def test_fuzz_running_stats(data):
    draw = data.draw
    C = draw(st.integers(1, 5))
    channels_last = draw(st.booleans())
    rs = ft.RunningStats(C, channels_last=channels_last)
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        dims = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
        c = C if draw(st.integers(0, 7)) else C + 1
        shape = (dims[0], *dims[1:], c) if channels_last else (dims[0], c, *dims[1:])
        x = _array(draw, shape, np.dtype(draw(st.sampled_from(DTYPES))))
        try:
            rs.update(x)
        except (TypeError, ValueError) as e:
            assert c != C, f"a batch of {C} channels was refused: {e}"
            continue
        assert c == C, "a batch with the wrong channel count was accepted"
        batches.append(np.moveaxis(x.astype(np.float64), -1, 1) if channels_last else x.astype(np.float64))
    values = [np.moveaxis(b, 1, -1).reshape(-1, C) for b in batches]
    values = np.concatenate(values) if values else np.zeros((0, C))
    assert rs.count == values.shape[0]
    if values.size:
        # Float32 and half batches are summed in float32: errors scale with the data, not the mean.
        scale = float(np.max(np.abs(values))) + 1e-30
        np.testing.assert_allclose(rs.mean, values.mean(axis=0), rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(rs.var, values.var(axis=0), rtol=1e-4, atol=1e-5 * scale ** 2)
    for bad in (0, -1, 2.5, "3", None, True, 10 ** 400):
        with pytest.raises((TypeError, ValueError)):
            ft.RunningStats(bad)


# ---------------------------------------------------------------- full-batch methods (ft.optim)

FULLBATCH_ORDINARY = {
    "lr": st.floats(0.05, 1.0), "max_iter": st.integers(1, 5),
    "max_eval": st.sampled_from([None, 1, 3, 12]), "tolerance_grad": st.sampled_from([0.0, 1e-7]),
    "tolerance_change": st.sampled_from([0.0, 1e-9]), "history_size": st.integers(1, 6),
    "beta": st.sampled_from(["polak_ribiere", "fletcher_reeves"]),
    "restart_every": st.sampled_from([None, 1, 2, 4]),
}
# What a faulty closure does at one of its calls; each must make step() raise, except inf-grad.
CLOSURE_FAULTS = ["nan-loss", "shape", "dtype", "count", "not-a-tuple", "raises", "inf-grad"]


class ClosureFault(RuntimeError):
    pass


@dataclass
class FullBatchRun:
    """Params, hyperparameters and a separable quadratic f = sum c (x - a)^2 / 2 whose closure
    may misbehave at one of its calls."""
    target: str
    params: list
    kwargs: dict
    curvature: list
    center: list
    fault: tuple = None
    ordinary: bool = True
    compare: bool = True
    notes: list = field(default_factory=list)

    def closure(self, params, faulty=True):
        calls = {"n": 0}

        def closure():
            calls["n"] += 1
            x = [np.asarray(p, np.float64) for p in params]
            loss = 0.5 * sum(float(np.sum(c * (v - a) ** 2))
                             for v, c, a in zip(x, self.curvature, self.center))
            grads = [(c * (v - a)).astype(p.dtype) for v, c, a, p in
                     zip(x, self.curvature, self.center, params)]
            if not faulty or self.fault is None or calls["n"] != self.fault[1]:
                return loss, grads
            kind = self.fault[0]
            if kind == "nan-loss":
                return math.nan, grads
            if kind == "shape":
                grads[-1] = np.zeros(grads[-1].size + 1, grads[-1].dtype)
            elif kind == "dtype":
                grads[0] = _other_float(grads[0])
            elif kind == "count":
                grads = grads[1:]
            elif kind == "not-a-tuple":
                return loss
            elif kind == "raises":
                raise ClosureFault("the data loader failed")
            elif kind == "inf-grad":
                grads[0] = np.full_like(grads[0], np.inf)
            return loss, grads
        closure.calls = calls
        return closure


@st.composite
def fullbatch_runs(draw, target):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shapes = [_shape(draw, max_side=7) for _ in range(draw(st.integers(1, 4)))]
    params = [_array(draw, s, dt) for s in shapes]
    run = FullBatchRun(target, params, {}, [], [])
    run.compare = dt == np.float64
    keys = ["lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change"]
    keys += ["history_size"] if target == "LBFGS" else ["beta", "restart_every"]
    for key in keys:
        run.kwargs[key] = draw(FULLBATCH_ORDINARY[key])
    run.kwargs["line_search_fn"] = draw(st.sampled_from([None, "strong_wolfe"]))
    if draw(st.integers(0, 3)) == 0:       # one hostile hyperparameter
        key = draw(st.sampled_from(keys + ["line_search_fn"]))
        # Not a count of 1e308 iterations: valid, and it would run them (zero tolerances).
        run.kwargs[key] = draw(st.sampled_from(
            [v for v in HOSTILE if key not in ("max_iter", "max_eval") or
             not (isinstance(v, (int, float)) and 100 < v < math.inf)]))
        run.ordinary = run.compare = False
        run.notes.append(key)
    if target == "ConjugateGradient" and run.kwargs["line_search_fn"] is None and run.ordinary:
        run.kwargs["lr"] = draw(st.floats(0.01, 0.2))    # a fixed step that a c of 4 allows
    if draw(st.integers(0, 7)) == 0:
        run.ordinary = run.compare = False
        i = draw(st.integers(0, len(params) - 1))
        kind = draw(st.sampled_from(["element", "mixed-dtype", "not-a-list", "empty"]))
        run.notes.append(f"params:{kind}")
        if kind == "element":
            params[i] = _spoil_array(draw, params[i], True)
        elif kind == "mixed-dtype":
            params[i] = _other_float(params[i])
        elif kind == "not-a-list":
            run.params = 3.0
        else:
            run.params = []
    # The loss is defined on whatever arrays the params are after spoiling.
    shapes = [np.shape(p) for p in params]
    run.curvature = [_array(draw, s, np.float64, 0.25, 4.0) for s in shapes]
    run.center = [_array(draw, s, np.float64) for s in shapes]
    if draw(st.integers(0, 3)) == 0:
        run.fault = (draw(st.sampled_from(CLOSURE_FAULTS)), draw(st.integers(1, 4)))
        if run.fault[0] == "inf-grad":
            run.ordinary = run.compare = False
        run.notes.append(f"closure:{run.fault[0]}@{run.fault[1]}")
    return run


def check_fullbatch_contract(run):
    """Construction and two steps keep the contract of check_contract: an error names the class
    and leaves every param byte-identical (Note [failed step]); a step that returns leaves finite
    params, which in float64 are the reference's."""
    cls = getattr(ft.optim, run.target)
    params = run.params
    arrays = [p for p in (params if isinstance(params, list) else []) if isinstance(p, np.ndarray)]
    ref_params = [p.copy() for p in params] if run.compare else None
    try:
        opt = cls(params, **run.kwargs)
    except (TypeError, ValueError) as e:
        assert str(e).startswith(run.target), f"message does not name the class: {e}"
        event("rejected")
        return
    ref_opt = getattr(ref, run.target)(ref_params, **run.kwargs) if run.compare else None
    # A twin on the same values elsewhere in memory takes the same steps, bit for bit (Note [no
    # loop vectorizer in the full-batch passes]).
    twin_params = _relocated(params, {}, 1 + len(arrays) % 7) if run.fault is None else None
    twin = cls(twin_params, **run.kwargs) if twin_params is not None else None
    closure = run.closure(params)
    for _ in range(2):
        before = [a.tobytes() for a in arrays]
        try:
            opt.step(closure)
        except (TypeError, ValueError, ClosureFault) as e:
            for i, (a, b) in enumerate(zip(arrays, before)):
                assert a.tobytes() == b, f"{run.target}.step raised {e!r} but changed params[{i}]"
            if not isinstance(e, ClosureFault):
                assert str(e).startswith(run.target + ".step"), \
                    f"message does not name the step: {e}"
            assert not run.ordinary or run.fault is not None, \
                f"{run.target}.step refused an ordinary call: {e!r} ({run.notes})"
            event("step rejected")
            return
        if ref_opt is not None:
            ref_opt.step(run.closure(ref_params, faulty=False))
        if twin is not None:
            twin.step(run.closure(twin_params))
            assert _bits(twin_params) == _bits(arrays), \
                f"{run.target}: the same params elsewhere in memory took another step ({run.notes})"
    assert run.fault is None or run.fault[0] == "inf-grad" or closure.calls["n"] < run.fault[1], \
        f"a step that met the faulty closure call returned ({run.notes})"
    if run.ordinary:
        for i, p in enumerate(arrays):
            assert _finite(p), f"{run.target} wrote a non-finite params[{i}] ({run.notes})"
    if ref_opt is not None:
        # Iterates, not evaluation counts: these small quadratics often reach the optimum within
        # rounding, where rounding alone decides the line search's branches (the counts are
        # compared on problems that do not: test_lbfgs.py, test_conjugate_gradient.py).
        for g, w in zip(arrays, ref_params):
            np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10)
    event("compared with the reference" if ref_opt is not None else "accepted")


@pytest.mark.parametrize("target", ["LBFGS", "ConjugateGradient"])
def test_fuzz_full_batch(target):
    @FUZZ
    @given(fullbatch_runs(target))
    def run(r):
        check_fullbatch_contract(r)
    run()
