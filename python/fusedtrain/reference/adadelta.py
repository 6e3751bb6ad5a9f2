"""Reference AdaDelta (torch.optim.Adadelta, single-tensor path)."""

import numpy as np

from . import _checks
from ._precision import load_grad, load_weight, skipped, store_weight


def adadelta_(params, grads, square_avgs, acc_deltas, *, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """AdaDelta: step sizes from the ratio of running RMS of updates to running RMS of gradients.

    g          = g + weight_decay*p
    square_avg = rho*square_avg + (1 - rho)*g*g
    std        = sqrt(square_avg + eps)
    delta      = sqrt(acc_delta + eps) / std * g
    acc_delta  = rho*acc_delta + (1 - rho)*delta*delta
    p         -= lr*delta

    Textbook: Zeiler (2012), Algorithm 1, `dx = -RMS[dx]_{t-1}/RMS[g]_t * g`, with lr = 1.
    """
    _checks.nonnegative("lr", lr)
    _checks.in_range("rho", rho, 0.0, 1.0)
    _checks.nonnegative("eps", eps)
    _checks.nonnegative("weight_decay", weight_decay)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {"square_avgs": square_avgs, "acc_deltas": acc_deltas},
        master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    for i, (square_avg, acc_delta) in enumerate(zip(square_avgs, acc_deltas)):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            g = g + weight_decay * p
        square_avg[...] = rho * square_avg + (1.0 - rho) * g * g
        std = np.sqrt(square_avg + eps)
        delta = np.sqrt(acc_delta + eps) / std * g
        acc_delta[...] = rho * acc_delta + (1.0 - rho) * delta * delta
        p -= lr * delta
        store_weight(params, master_params, i, p)
