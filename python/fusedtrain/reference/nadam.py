"""Reference NAdam (Dozat 2016): torch.optim.NAdam's single-tensor path and its mu schedule."""

import numpy as np

from . import _checks
from ._precision import load_grad, load_weight, skipped, store_weight
from .adam import decay_and_moments

# Note [NAdam mu product]: torch keeps prod_{i<=t} mu_i as a float32 0-dim tensor, multiplied by
# each step's mu in float32.  It depends only on the step (for fixed beta1 and momentum_decay),
# so it is recomputed here the same way, cached per (beta1, momentum_decay).  Once the product
# is below 2**-60, 1 - product is 1.0 in double and no later factor changes a coefficient.
_PRODUCTS = {}
_NEGLIGIBLE = 2.0 ** -60


def nadam_mu(step, beta1, momentum_decay):
    """mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay)), in torch's double arithmetic."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def nadam_mu_product(step, beta1, momentum_decay):
    """prod_{i<=step} mu_i as torch's float32 "mu_product" state holds it after step `step`."""
    products = _PRODUCTS.setdefault((float(beta1), float(momentum_decay)), [1.0])
    while len(products) <= step and products[-1] >= _NEGLIGIBLE:
        t = len(products)
        products.append(float(np.float32(products[-1]) *
                              np.float32(nadam_mu(t, beta1, momentum_decay))))
    return products[min(step, len(products) - 1)]


def nadam_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
           mu_product=None, maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """NAdam: Adam whose momentum term looks one step ahead, with torch's momentum schedule.

    decoupled:  p *= 1 - lr*weight_decay        else  g = g + weight_decay*p
    mu_t = beta1*(1 - 0.5*0.96**(t*momentum_decay)); P_t = mu_1*...*mu_t (`mu_product`;
    None: computed from step, Note [NAdam mu product])
    m = lerp(m, g, 1 - beta1); v = beta2*v + (1 - beta2)*g*g
    denom = sqrt(v/(1 - beta2**t)) + eps
    p -= lr*(1 - mu_t)/(1 - P_t) * g/denom
    p -= lr*mu_{t+1}/(1 - P_t*mu_{t+1}) * m/denom

    Textbook: Dozat 2016, "Incorporating Nesterov Momentum into Adam", Algorithm 2
    (`m_hat = mu_{t+1} m_t/(1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g_t/(1 - prod_{i<=t} mu_i)`;
    `theta -= lr m_hat/(sqrt(n_hat) + eps)`), with torch's momentum schedule and eps placement.
    """
    _checks.adam_family(step, lr, beta1, beta2, eps, weight_decay)
    _checks.nonnegative("momentum_decay", momentum_decay)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}, master_params,
        grad_scale, found_inf)
    if skipped(found_inf):
        return
    if mu_product is None:
        mu_product = nadam_mu_product(step, beta1, momentum_decay)
    mu = nadam_mu(step, beta1, momentum_decay)
    mu_next = nadam_mu(step + 1, beta1, momentum_decay)
    bias_correction2 = 1 - beta2 ** step
    grad_coef = lr * (1.0 - mu) / (1.0 - mu_product)
    avg_coef = lr * mu_next / (1.0 - mu_product * mu_next)
    for i, (exp_avg, exp_avg_sq) in enumerate(zip(exp_avgs, exp_avg_sqs)):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        g = decay_and_moments(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay,
                              decoupled_weight_decay)
        denom = np.sqrt(exp_avg_sq / bias_correction2) + eps
        p -= grad_coef * g / denom
        p -= avg_coef * exp_avg / denom
        store_weight(params, master_params, i, p)


__all__ = ["nadam_", "nadam_mu", "nadam_mu_product"]
