"""Reference batch norm in float64 NumPy: the readable spec of fusedtrain's batch-norm kernels.

Same names and signatures as the public API. Statistics are two-pass float64 (mean, then the
mean of squared deviations), outputs are rounded to the input's dtype on return, saved
statistics are float64, and running statistics are updated in place (rounded to their dtype).
"""

import numpy as np

from . import _checks


def _channel_axes(x, channels_last):
    """(axes reduced over, shape that broadcasts a (C,) vector against x)."""
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    c_axis = x.ndim - 1 if channels_last else 1
    axes = tuple(a for a in range(x.ndim) if a != c_axis)
    bshape = [1] * x.ndim
    bshape[c_axis] = x.shape[c_axis]
    return axes, tuple(bshape)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def batch_norm_stats(x, *, channels_last=False):
    """Per-channel (mean, biased var, count) of x."""
    x = np.asarray(x)
    axes, _ = _channel_axes(x, channels_last)
    xd = _f64(x)
    count = xd.size // max(xd.shape[xd.ndim - 1 if channels_last else 1], 1)
    if count == 0:
        c = x.shape[-1 if channels_last else 1]
        return np.zeros(c), np.zeros(c), 0
    mean = xd.mean(axis=axes)
    var = xd.var(axis=axes)  # two-pass: mean((x - mean)^2)
    return mean, var, count


def merge_stats(means, vars, counts):
    """Union statistics of K disjoint sets, computed by pooling: the total mean and the mean of
    squared deviations from it (sum of within-set m2 plus between-set terms)."""
    means, vars = _f64(means), _f64(vars)
    counts = _f64(counts)
    n = counts.sum()
    if n == 0:
        return np.zeros(means.shape[1]), np.zeros(means.shape[1]), 0
    mean = (counts[:, None] * means).sum(axis=0) / n
    m2 = (counts[:, None] * (vars + (means - mean) ** 2)).sum(axis=0)
    return mean, m2 / n, int(n) if float(n).is_integer() else float(n)


def update_running_stats_(running_mean, running_var, mean, var, count, *, momentum):
    """r = (1 - momentum) * r + momentum * batch, with the unbiased var * count / (count - 1)."""
    _checks.in_range("momentum", momentum, 0.0, 1.0)
    if not count > 1:
        raise ValueError(f"count must be > 1, got {count!r}")
    unbiased = _f64(var) * count / (count - 1)
    running_mean[...] = momentum * _f64(mean) + (1 - momentum) * _f64(running_mean)
    running_var[...] = momentum * unbiased + (1 - momentum) * _f64(running_var)


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                       training=True, momentum=0.1, eps=1e-5, channels_last=False):
    """y = (x - mean) / sqrt(var + eps) * weight + bias; batch statistics in training (running
    statistics updated in place), running statistics in evaluation."""
    _checks.in_range("momentum", momentum, 0.0, 1.0)
    _checks.nonnegative("eps", eps)
    x = np.asarray(x)
    axes, bshape = _channel_axes(x, channels_last)
    if training:
        # An empty batch: mean 0 and var 0 (the statistics of no values), running stats kept.
        mean, var, count = batch_norm_stats(x, channels_last=channels_last)
        if count == 1:
            raise ValueError("x has 1 value per channel; training needs more than 1, or none")
        if running_mean is not None and count > 0:
            update_running_stats_(running_mean, running_var, mean, var, count, momentum=momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required when training=False")
        mean, var = _f64(running_mean), _f64(running_var)
    invstd = 1.0 / np.sqrt(var + eps)
    y = (_f64(x) - mean.reshape(bshape)) * invstd.reshape(bshape)
    if weight is not None:
        y = y * _f64(weight).reshape(bshape)
    if bias is not None:
        y = y + _f64(bias).reshape(bshape)
    return y.astype(x.dtype), mean, invstd


def batch_norm_backward(dy, x, weight, save_mean, save_invstd, *, channels_last=False,
                        input_grad=True, sums=None):
    """dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)); dweight = sum(dy * xhat);
    dbias = sum(dy); xhat = (x - save_mean) * save_invstd.

    input_grad=False: (None, sum(dy * xhat), sum(dy)), with or without a weight.
    sums=(sum_dy, sum_dy_xhat, count): dx with these sums over count values in place of x's
    own (the means above are sum / count); returns (dx, None, None)."""
    x = np.asarray(x)
    axes, bshape = _channel_axes(x, channels_last)
    xd, dyd = _f64(x), _f64(dy)
    m = xd.size // x.shape[-1 if channels_last else 1]
    invstd = _f64(save_invstd).reshape(bshape)
    xhat = (xd - _f64(save_mean).reshape(bshape)) * invstd
    sum_dy = dyd.sum(axis=axes)
    sum_dy_xhat = (dyd * xhat).sum(axis=axes)
    if not input_grad:
        return None, sum_dy_xhat, sum_dy
    if sums is not None:
        sum_dy, sum_dy_xhat, m = _f64(sums[0]), _f64(sums[1]), float(sums[2])
    w = np.ones(x.shape[-1 if channels_last else 1]) if weight is None else _f64(weight)
    if xd.size == 0:  # nothing to differentiate: the sums over no values are 0
        dx = np.empty_like(x)
        return (dx, None, None) if weight is None or sums is not None else (dx, sum_dy_xhat, sum_dy)
    dx = w.reshape(bshape) * invstd * (dyd - (sum_dy / m).reshape(bshape)
                                       - xhat * (sum_dy_xhat / m).reshape(bshape))
    if weight is None or sums is not None:
        return dx.astype(x.dtype), None, None
    return dx.astype(x.dtype), sum_dy_xhat, sum_dy
