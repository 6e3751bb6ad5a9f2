"""How the reference loads and stores weights and grads: float64 math, rounding only on store."""

import numpy as np


def load_grad(grad, grad_scale, maximize):
    """The gradient a rule sees: unscaled first, then negated for maximize (torch's order)."""
    g = np.asarray(grad, dtype=np.float64)
    if grad_scale is not None:
        g = g / grad_scale
    return -g if maximize else g.copy()


def load_weight(params, master_params, i):
    """The weights the rule updates: the master copy when there is one, else the param itself."""
    source = params[i] if master_params is None else master_params[i]
    return np.asarray(source, dtype=np.float64).copy()


def store_weight(params, master_params, i, value):
    # Assigning into a half array rounds to nearest even, which is what the kernels do on store.
    if master_params is not None:
        master_params[i][...] = value
    params[i][...] = value


def lerp(start, end, weight):
    """start + weight*(end - start), with the two-sided form torch's lerp uses for accuracy near 1."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def skipped(found_inf):
    """True when the caller's overflow flag says this step must not touch anything."""
    return found_inf is not None and found_inf != 0
