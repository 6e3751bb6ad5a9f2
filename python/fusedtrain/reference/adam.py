"""Reference Adam, AdamW and AMSGrad (torch.optim.Adam / AdamW, single-tensor path)."""

import math

import numpy as np

from . import _checks
from ._precision import lerp, load_grad, load_weight, skipped, store_weight


def adam_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
          max_exp_avg_sqs=None, maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """Adam with bias correction; optional decoupled weight decay (AdamW) and AMSGrad.

    decoupled:  p *= 1 - lr*weight_decay        else  g = g + weight_decay*p
    m = lerp(m, g, 1 - beta1)                      (= beta1*m + (1 - beta1)*g)
    v = beta2*v + (1 - beta2)*g*g
    amsgrad:    v_max = max(v_max, v), used in place of v below
    denom = sqrt(v)/sqrt(1 - beta2**step) + eps
    p -= lr/(1 - beta1**step) * m/denom

    Textbook: Goodfellow et al. Algorithm 8.7 (s and r are m and v),
    `theta -= eps * s_hat/(sqrt(r_hat) + delta)` with s_hat = s/(1 - rho1**t),
    r_hat = r/(1 - rho2**t); torch folds the corrections into step_size and denom.
    """
    _checks.adam_family(step, lr, beta1, beta2, eps, weight_decay)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError("amsgrad=True requires max_exp_avg_sqs")
    states = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs,
              "max_exp_avg_sqs": max_exp_avg_sqs if amsgrad else None}
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, states, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    for i, (exp_avg, exp_avg_sq) in enumerate(zip(exp_avgs, exp_avg_sqs)):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        g = decay_and_moments(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay,
                              decoupled_weight_decay)
        second_moment = exp_avg_sq
        if amsgrad:
            np.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            second_moment = max_exp_avg_sqs[i]
        denom = np.sqrt(second_moment) / bias_correction2_sqrt + eps
        p -= step_size * exp_avg / denom
        store_weight(params, master_params, i, p)


def decay_and_moments(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled):
    """The first half of Adam and NAdam: weight decay (decoupled: p *= 1 - lr*weight_decay in
    place; else g + weight_decay*p), then both moments; returns the decayed g."""
    if weight_decay != 0:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    exp_avg[...] = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    return g


def adamw_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.01, amsgrad=False, max_exp_avg_sqs=None, maximize=False,
           grad_scale=None, found_inf=None, master_params=None):
    """AdamW: adam_ with decoupled weight decay, p *= 1 - lr*weight_decay before the Adam step.

    Textbook: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (Adam with the decay
    taken out of the gradient so it is not rescaled by the adaptive denominator).
    """
    adam_(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
          eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True, amsgrad=amsgrad,
          max_exp_avg_sqs=max_exp_avg_sqs, maximize=maximize, grad_scale=grad_scale,
          found_inf=found_inf, master_params=master_params)
