"""Reference Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")."""

import numpy as np

from . import _checks
from ._precision import lerp, load_grad, load_weight, skipped, store_weight


def lion_(params, grads, exp_avgs, *, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
          maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """Lion: the sign of an interpolated momentum sets every coordinate's step.

    p *= 1 - lr*weight_decay                     (decoupled, as the paper's Algorithm 2)
    c = lerp(m, g, 1 - beta1)                      (= beta1*m + (1 - beta1)*g)
    p -= lr * sign(c)
    m = lerp(m, g, 1 - beta2)                      (= beta2*m + (1 - beta2)*g)

    Textbook: Chen et al. 2023, Algorithm 2, `update = sign(beta1*m + (1 - beta1)*g);
    theta -= lr*(update + lambda*theta); m = beta2*m + (1 - beta2)*g`.
    """
    _checks.nonnegative("lr", lr)
    _checks.in_range("beta1", beta1, 0.0, 1.0)
    _checks.in_range("beta2", beta2, 0.0, 1.0)
    _checks.nonnegative("weight_decay", weight_decay)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {"exp_avgs": exp_avgs}, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    for i, exp_avg in enumerate(exp_avgs):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            p *= 1 - lr * weight_decay
        p -= lr * np.sign(lerp(exp_avg, g, 1 - beta1))
        exp_avg[...] = lerp(exp_avg, g, 1 - beta2)
        store_weight(params, master_params, i, p)
