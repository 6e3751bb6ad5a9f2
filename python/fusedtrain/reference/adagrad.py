"""Reference AdaGrad (torch.optim.Adagrad, single-tensor path)."""

import numpy as np

from . import _checks
from ._precision import load_grad, load_weight, skipped, store_weight


def adagrad_(params, grads, state_sums, *, step, lr=0.01, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """AdaGrad: per-coordinate step sizes shrinking with the sum of squared gradients.

    g   = g + weight_decay*p
    clr = lr / (1 + (step - 1)*lr_decay)
    sum = sum + g*g
    p  -= clr * g / (sqrt(sum) + eps)

    Textbook: Goodfellow et al. Algorithm 8.4, `r = r + g*g; theta -= eps/(delta + sqrt(r)) * g`,
    exactly, when lr_decay = 0. torch's initial_accumulator_value is the caller's initial sum.
    """
    _checks.step_count(step)
    _checks.nonnegative("lr", lr)
    _checks.nonnegative("lr_decay", lr_decay)
    _checks.nonnegative("weight_decay", weight_decay)
    _checks.nonnegative("eps", eps)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {"state_sums": state_sums}, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    clr = lr / (1 + (step - 1) * lr_decay)
    for i, state_sum in enumerate(state_sums):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            g = g + weight_decay * p
        state_sum += g * g
        p -= clr * g / (np.sqrt(state_sum) + eps)
        store_weight(params, master_params, i, p)
