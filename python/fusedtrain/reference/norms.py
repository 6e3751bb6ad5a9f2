"""Reference global gradient norm and norm clipping (torch.nn.utils.get_total_norm / clip_grad_norm_)."""

import math

import numpy as np

from . import _checks


def _vector_norm(values, norm_type):
    if values.size == 0:
        return 0.0
    if math.isinf(norm_type):
        return float(np.max(values))
    return float(np.sum(values ** norm_type) ** (1.0 / norm_type))


def global_norm(arrays, norm_type=2.0):
    """The norm_type-norm of all elements of all arrays taken as one vector.

    Computed as torch does: the norm of each array, then the norm of those norms
    (equal to the norm of the concatenation); max |x| for norm_type = inf; 0 for no elements.
    """
    norm_type = _checks.norm_order(norm_type)
    arrays = _checks.array_list("arrays", arrays)
    per_array = np.array([_vector_norm(np.abs(np.asarray(a, dtype=np.float64)).ravel(), norm_type)
                          for a in arrays], dtype=np.float64)
    return _vector_norm(per_array, norm_type)


def clip_grad_norm_(grads, max_norm, norm_type=2.0):
    """Rescales grads in place so their global norm is at most max_norm; returns the norm before.

    grads *= min(1, max_norm/(norm + 1e-6))

    Textbook: gradient clipping by norm (Goodfellow et al. section 10.11.1,
    `if ||g|| > v: g <- g*v/||g||`), with torch's 1e-6 guard against division by zero.
    """
    _checks.nonnegative("max_norm", max_norm)
    total = global_norm(grads, norm_type)
    grads = _checks.array_list("grads", grads)
    clip_coef = min(1.0, max_norm / (total + 1e-6))
    for g in grads:
        # Assigning back rounds to the grads' own dtype, as the in-place multiply does.
        g[...] = np.asarray(g, dtype=np.float64) * clip_coef
    return total
