"""Argument checks shared by the reference rules, mirroring the public API's ValueError/TypeError contract."""

import numbers

import numpy as np

# Half-precision storage is the only case where a separate master copy makes sense.
HALF_DTYPE_NAMES = ("float16", "bfloat16")


def nonnegative(name, value):
    # `not value >= 0` also rejects NaN, which would silently poison every weight.
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def in_range(name, value, low, high, *, high_open=False):
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")


def step_count(step):
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step must be an int >= 1 (1-based count of the step being taken), got {step!r}")


def adam_family(step, lr, beta1, beta2, eps, weight_decay):
    """The hyperparameters Adam and NAdam share: a step count, lr, beta1/beta2 in [0, 1), eps and
    weight_decay >= 0."""
    step_count(step)
    nonnegative("lr", lr)
    in_range("beta1", beta1, 0.0, 1.0, high_open=True)
    in_range("beta2", beta2, 0.0, 1.0, high_open=True)
    nonnegative("eps", eps)
    nonnegative("weight_decay", weight_decay)


def norm_order(norm_type):
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type!r}")
    return norm_type


def is_half(array):
    return array.dtype.name in HALF_DTYPE_NAMES


def array_list(name, arrays, like=None, *, float64=False):
    """Checks one list argument; `like` is the list whose length and shapes it must match."""
    if arrays is None or not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name} must be a list of arrays, got {type(arrays).__name__}")
    if like is not None and len(arrays) != len(like):
        raise ValueError(f"{name} has {len(arrays)} arrays, expected {len(like)}")
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}[{i}] must be a NumPy array, got {type(a).__name__}")
        if float64 and a.dtype != np.float64:
            raise TypeError(f"{name}[{i}] must be float64 in the reference, got {a.dtype}")
        if like is not None and a.shape != like[i].shape:
            raise ValueError(f"{name}[{i}] has shape {a.shape}, expected {like[i].shape}")
    return list(arrays)


def master_list(master_params, params):
    if master_params is None:
        return None
    master_params = array_list("master_params", master_params, params, float64=True)
    for i, p in enumerate(params):
        if not is_half(p):
            raise ValueError(f"master_params[{i}] given for {p.dtype} params[{i}]; only half params take a master copy")
    return master_params


def scalar_or_one_element(name, value):
    """Reads grad_scale / found_inf, which may be a Python number or a 1-element array."""
    if value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"{name} must be a number or a 1-element array, got shape {value.shape}")
    return float(value.reshape(-1)[0])


def step_inputs(params, grads, states, master_params, grad_scale, found_inf):
    """Validates every array of one rule call before anything is written.

    `states` maps each state list's name to the list (None for an absent optional list).
    Returns (master_params, grad_scale, found_inf) in their checked forms.
    """
    params = array_list("params", params)
    for p_i, p in enumerate(params):
        if p.dtype != np.float64 and not is_half(p):
            raise TypeError(f"params[{p_i}] must be float64 (or half) in the reference, got {p.dtype}")
    array_list("grads", grads, params)
    for name, arrays in states.items():
        if arrays is not None:
            array_list(name, arrays, params, float64=True)
    master_params = master_list(master_params, params)
    return (master_params, scalar_or_one_element("grad_scale", grad_scale),
            scalar_or_one_element("found_inf", found_inf))
