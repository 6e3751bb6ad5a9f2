"""Reference SGD and SGD with momentum / Nesterov momentum (torch.optim.SGD, single-tensor path)."""

from . import _checks
from ._precision import load_grad, load_weight, skipped, store_weight


def sgd_(params, grads, *, lr, weight_decay=0.0, maximize=False,
         grad_scale=None, found_inf=None, master_params=None):
    """Plain stochastic gradient descent.

    d_p = g + weight_decay*p ;  p -= lr*d_p

    Textbook: Goodfellow et al. Algorithm 8.1, `theta <- theta - eps*g`; CS231n's
    `x += -learning_rate * dx`.
    """
    _checks.nonnegative("lr", lr)
    _checks.nonnegative("weight_decay", weight_decay)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {}, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    for i in range(len(params)):
        p = load_weight(params, master_params, i)
        d_p = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            d_p = d_p + weight_decay * p
        p -= lr * d_p
        store_weight(params, master_params, i, p)


def momentum_(params, grads, momentum_buffers, *, step, lr, momentum=0.9, dampening=0.0,
              nesterov=False, weight_decay=0.0, maximize=False,
              grad_scale=None, found_inf=None, master_params=None):
    """SGD with (heavy-ball or Nesterov) momentum.

    d_p = g + weight_decay*p
    buf = d_p                                   at step 1 (torch clones the first gradient)
    buf = momentum*buf + (1 - dampening)*d_p    afterwards
    d_p = d_p + momentum*buf if nesterov else buf
    p  -= lr*d_p

    Textbook: with dampening = 0 this is CS231n's `v = rho*v + dx; x -= lr*v`, which is
    Goodfellow et al. Algorithm 8.2 (`v = a*v - eps*g; theta += v`) with v = -lr*buf.
    The Nesterov form is Algorithm 8.3 (gradient at theta + a*v) after the change of
    variables p = theta + a*v, which lets the gradient be taken at the stored weights.
    """
    _checks.step_count(step)
    _checks.nonnegative("lr", lr)
    _checks.nonnegative("momentum", momentum)
    _checks.nonnegative("weight_decay", weight_decay)
    master_params, grad_scale, found_inf = _checks.step_inputs(
        params, grads, {"momentum_buffers": momentum_buffers}, master_params, grad_scale, found_inf)
    if skipped(found_inf):
        return
    for i, buf in enumerate(momentum_buffers):
        p = load_weight(params, master_params, i)
        d_p = load_grad(grads[i], grad_scale, maximize)
        if weight_decay != 0:
            d_p = d_p + weight_decay * p
        if step == 1:
            buf[...] = d_p
        else:
            buf[...] = momentum * buf + (1.0 - dampening) * d_p
        d_p = d_p + momentum * buf if nesterov else buf
        p -= lr * d_p
        store_weight(params, master_params, i, p)
