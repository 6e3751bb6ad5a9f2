"""Reference RMSProp, plain / centered / momentum / Nesterov (torch.optim.RMSprop, single-tensor path)."""

import numpy as np

from . import _checks
from ._precision import lerp, load_grad, load_weight, skipped, store_weight


def rmsprop_(params, grads, square_avgs, *, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0,
             momentum=0.0, momentum_buffers=None, centered=False, grad_avgs=None,
             nesterov=False, maximize=False, grad_scale=None, found_inf=None, master_params=None):
    """RMSProp: divide the gradient by a running RMS of recent gradients.

    g          = g + weight_decay*p
    square_avg = alpha*square_avg + (1 - alpha)*g*g
    centered:    grad_avg = lerp(grad_avg, g, 1 - alpha)
                 avg = sqrt(square_avg - grad_avg**2) + eps
    else:        avg = sqrt(square_avg) + eps
    momentum > 0: buf = momentum*buf + g/avg
                  p -= lr*(g/avg + momentum*buf) if nesterov else lr*buf
    else:         p -= lr*g/avg

    Textbook: Goodfellow et al. Algorithm 8.5 (`r = rho*r + (1-rho)*g*g; theta -= eps/sqrt(delta + r)*g`)
    with rho = alpha; the two differ only in where the small constant sits. The Nesterov form is
    Algorithm 8.6 (RMSProp with Nesterov momentum) after the change of variables p = theta + alpha*v,
    v = -lr*buf, which takes the gradient at the stored weights instead of at an interim point.
    """
    _checks.nonnegative("lr", lr)
    _checks.in_range("alpha", alpha, 0.0, 1.0)
    _checks.nonnegative("eps", eps)
    _checks.nonnegative("weight_decay", weight_decay)
    _checks.nonnegative("momentum", momentum)
    if nesterov and not momentum > 0:
        raise ValueError("nesterov requires momentum > 0")
    if momentum > 0 and momentum_buffers is None:
        raise ValueError("momentum > 0 requires momentum_buffers")
    if centered and grad_avgs is None:
        raise ValueError("centered=True requires grad_avgs")
    states = {"square_avgs": square_avgs,
              "momentum_buffers": momentum_buffers if momentum > 0 else None,
              "grad_avgs": grad_avgs if centered else None}
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, states, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    for i, square_avg in enumerate(square_avgs):
        p = load_weight(params, master_params, i)
        g = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            g = g + weight_decay * p
        square_avg[...] = alpha * square_avg + (1.0 - alpha) * g * g
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg[...] = lerp(grad_avg, g, 1.0 - alpha)
            avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = np.sqrt(square_avg) + eps
        if momentum > 0:
            buf = momentum_buffers[i]
            buf[...] = momentum * buf + g / avg
            p -= lr * (g / avg + momentum * buf) if nesterov else lr * buf
        else:
            p -= lr * g / avg
        store_weight(params, master_params, i, p)
