"""Reference exponential moving average of weights (Polyak averaging)."""

import numpy as np

from . import _checks
from ._precision import lerp


def ema_(averages, params, *, decay):
    """averages = decay*averages + (1 - decay)*params, computed as lerp(averages, params, 1 - decay).

    Textbook: Polyak averaging with exponential decay (Goodfellow et al. section 8.7.3),
    `theta_hat = alpha*theta_hat + (1 - alpha)*theta`.
    """
    _checks.in_range("decay", decay, 0.0, 1.0)
    params = _checks.array_list("params", params)
    averages = _checks.array_list("averages", averages, params, float64=True)
    for a, p in zip(averages, params):
        a[...] = lerp(a, np.asarray(p, dtype=np.float64), 1.0 - decay)
