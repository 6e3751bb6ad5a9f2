"""Hyperparameter checks shared by the public functions: raise ValueError naming the argument."""
import math
import numbers


def _number(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
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
    if step < 1:
        raise ValueError(f"{fn}: step must be >= 1 (the 1-based count of this step), got {step}")
    return int(step)


def flag(fn, name, value):
    if not isinstance(value, (bool, numbers.Integral)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def options(cls, **fields):
    """A kernel options struct from keyword fields."""
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o
