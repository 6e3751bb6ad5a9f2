"""Hyperparameter checks shared by the public functions: raise ValueError naming the argument."""
import math
import numbers


# Note [step range] (csrc/core/option_overrides.h): steps are whole numbers in [1, 2**53].
MAX_STEP = 2 ** 53


def to_float(fn, name, value):
    """float(value), with a number beyond the float64 range a ValueError naming the argument."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{fn}: {name} is beyond the float64 range") from None


def _number(fn, name, value):
    if type(value) is float and value == value:  # the common case, ahead of the ABC checks
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = to_float(fn, name, value)
    if math.isnan(value):
        raise ValueError(f"{fn}: {name} must not be NaN")
    return value


def at_least(fn, name, value, low=0.0):
    value = _number(fn, name, value)
    if value < low:
        raise ValueError(f"{fn}: {name} must be >= {low}, got {value}")
    return value


def in_range(fn, name, value, low, high, high_inclusive):
    value = _number(fn, name, value)
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        close = "]" if high_inclusive else ")"
        raise ValueError(f"{fn}: {name} must be in [{low}, {high}{close}, got {value}")
    return value


def step_count(fn, step):
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"{fn}: step must be an int (the 1-based count of this step), "
                        f"got {type(step).__name__}")
    if not 1 <= step <= MAX_STEP:
        raise ValueError(f"{fn}: step must be in [1, 2**53] (the 1-based count of this step), "
                         f"got {step}")
    return int(step)


def grad_scale(fn, value):
    """A number grad_scale: finite and > 0 (grads are divided by it)."""
    value = _number(fn, "grad_scale", value)
    if not 0 < value < math.inf:
        raise ValueError(f"{fn}: grad_scale must be a finite number > 0 (grads are divided by "
                         f"it), got {value}")
    return value


def found_inf(fn, value):
    """A number found_inf as 1.0 (skip the step: any nonzero, NaN included) or 0.0."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: found_inf must be a number or a 1-element array, "
                        f"got {type(value).__name__}")
    return 0.0 if value == 0 else 1.0


def flag(fn, name, value):
    if not isinstance(value, (bool, numbers.Integral)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def listed_once(fn, params):
    """ValueError naming both places when a param is listed twice in one param group: one fused
    call would write it twice at once (the kernels refuse params that share memory); torch.optim
    warns and steps it twice, one occurrence after the other."""
    seen = {}
    for i, p in enumerate(params):
        j = seen.setdefault(id(p), i)
        if j != i:
            raise ValueError(f"{fn}: params[{i}] is params[{j}], listed twice in one param "
                             f"group; list each param once")


def options(cls, **fields):
    """A kernel options struct from keyword fields."""
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o
