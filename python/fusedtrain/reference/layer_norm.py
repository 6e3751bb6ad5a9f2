"""Reference layer, RMS, group and instance norm in float64 NumPy: the readable spec of
fusedtrain's kernels.

Same names and signatures as the public API. Statistics are two-pass float64, outputs are
rounded to the input's dtype on return, saved statistics are float64 (shaped as the kernels'),
and instance norm's running statistics are updated in place (rounded to their dtype).
"""

import numbers

import numpy as np

from . import _checks

_MACHINE_EPS = {"float32": 2.0 ** -23, "float64": 2.0 ** -52, "float16": 2.0 ** -10,
                "bfloat16": 2.0 ** -7}


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _rows(x, normalized_shape):
    """x as float64 (rows, cols) and the shape of its per-row statistics."""
    x = np.asarray(x)
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    k = len(tuple(normalized_shape))
    if tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
        raise ValueError(f"normalized_shape {normalized_shape} is not the end of {x.shape}")
    cols = int(np.prod(x.shape[x.ndim - k:]))
    return _f64(x).reshape(-1, cols), x.shape[:x.ndim - k] + (1,) * k


def _param(p, cols, fill):
    return np.full(cols, fill) if p is None else _f64(p).reshape(cols)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, *, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over each row (the normalized dims)."""
    _checks.nonnegative("eps", eps)
    xr, sshape = _rows(x, normalized_shape)
    mean = xr.mean(axis=1)
    rstd = 1.0 / np.sqrt(xr.var(axis=1) + eps)
    y = (xr - mean[:, None]) * rstd[:, None] * _param(weight, xr.shape[1], 1.0) \
        + _param(bias, xr.shape[1], 0.0)
    return y.reshape(np.shape(x)).astype(np.asarray(x).dtype), mean.reshape(sshape), rstd.reshape(sshape)


def _row_grad(dy, x, normalized_shape, mean, rstd, weight, centered):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = weight * dy (layer norm), or
    without the mean(g) term and with xhat = x * rstd (RMS norm); the per-column sums."""
    xr, _ = _rows(x, normalized_shape)
    dyr = _f64(dy).reshape(xr.shape)
    r = _f64(rstd).reshape(-1, 1)
    xhat = (xr - _f64(mean).reshape(-1, 1)) * r if centered else xr * r
    g = dyr * _param(weight, xr.shape[1], 1.0)
    dx = r * (g - (g.mean(axis=1, keepdims=True) if centered else 0.0)
              - xhat * (g * xhat).mean(axis=1, keepdims=True))
    pshape = np.shape(weight) if weight is not None else None
    dw = None if weight is None else (dyr * xhat).sum(axis=0).reshape(pshape)
    db = None if weight is None else dyr.sum(axis=0).reshape(pshape)
    return dx.reshape(np.shape(x)).astype(np.asarray(x).dtype), dw, db


def layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight=None, *, weight_grads=True,
                        bias_grads=True):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = weight * dy; dweight = sum over rows
    of dy * xhat; dbias = sum over rows of dy (None without weight_grads; dbias None without
    bias_grads)."""
    dx, dw, db = _row_grad(dy, x, normalized_shape, mean, rstd, weight, True)
    return (dx, dw, db if bias_grads else None) if weight_grads else (dx, None, None)


def rms_norm_forward(x, normalized_shape, weight=None, *, eps=None):
    """y = x / sqrt(mean(x^2) + eps) * weight; eps None is the machine epsilon of x's dtype."""
    if eps is None:
        eps = _MACHINE_EPS[str(np.asarray(x).dtype)]
    _checks.nonnegative("eps", eps)
    xr, sshape = _rows(x, normalized_shape)
    rstd = 1.0 / np.sqrt((xr * xr).mean(axis=1) + eps)
    y = xr * rstd[:, None] * _param(weight, xr.shape[1], 1.0)
    return y.reshape(np.shape(x)).astype(np.asarray(x).dtype), rstd.reshape(sshape)


def rms_norm_backward(dy, x, normalized_shape, rstd, weight=None, *, weight_grads=True):
    """dx = rstd * g - x * rstd^3 * mean(g * x), g = weight * dy; dweight = sum of dy * x * rstd
    (None without weight_grads)."""
    dx, dw, _ = _row_grad(dy, x, normalized_shape, None, rstd, weight, False)
    return dx, dw if weight_grads else None


def _grouped(x, num_groups, channels_last):
    """x as float64 (N, G, C/G, HW) in channels-first order."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions, got shape {x.shape}")
    xf = np.moveaxis(_f64(x), -1, 1) if channels_last else _f64(x)
    n, c = xf.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"num_groups {num_groups} does not divide {c} channels")
    return xf.reshape(n, num_groups, c // num_groups, int(np.prod(xf.shape[2:], dtype=np.int64)))


def _ungrouped(a, x, channels_last):
    x = np.asarray(x)
    shape = np.moveaxis(np.empty(x.shape, np.int8), -1, 1).shape if channels_last else x.shape
    out = a.reshape(shape)
    return (np.moveaxis(out, 1, -1) if channels_last else out).astype(x.dtype)


def _per_channel(p, c, fill):
    return (np.full(c, fill) if p is None else _f64(p)).reshape(1, -1, 1)


def group_norm_forward(x, num_groups, weight=None, bias=None, *, eps=1e-5, channels_last=False):
    """y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c] with each sample's group statistics;
    mean and rstd are (N, G)."""
    _checks.nonnegative("eps", eps)
    xg = _grouped(x, num_groups, channels_last)
    n, g, cg, hw = xg.shape
    mean = xg.mean(axis=(2, 3))
    rstd = 1.0 / np.sqrt(xg.var(axis=(2, 3)) + eps)
    xhat = ((xg - mean[:, :, None, None]) * rstd[:, :, None, None]).reshape(n, g * cg, hw)
    y = xhat * _per_channel(weight, g * cg, 1.0) + _per_channel(bias, g * cg, 0.0)
    return _ungrouped(y, x, channels_last), mean, rstd


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, channels_last=False,
                        weight_grads=True):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) over each group, g = weight[c] * dy;
    dweight[c] = sum of dy * xhat, dbias[c] = sum of dy over samples and positions (None without
    weight_grads)."""
    xg = _grouped(x, num_groups, channels_last)
    n, g, cg, hw = xg.shape
    dyg = _grouped(dy, num_groups, channels_last)
    r = _f64(rstd).reshape(n, g, 1, 1)
    xhat = (xg - _f64(mean).reshape(n, g, 1, 1)) * r
    w = (np.ones(g * cg) if weight is None else _f64(weight)).reshape(1, g, cg, 1)
    gr = dyg * w
    dx = r * (gr - gr.mean(axis=(2, 3), keepdims=True)
              - xhat * (gr * xhat).mean(axis=(2, 3), keepdims=True))
    dx = _ungrouped(dx.reshape(n, g * cg, hw), x, channels_last)
    if weight is None or not weight_grads:
        return dx, None, None
    return dx, (dyg * xhat).sum(axis=(0, 3)).reshape(-1), dyg.sum(axis=(0, 3)).reshape(-1)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                  use_input_stats=True, momentum=0.1, eps=1e-5, channels_last=False):
    """Group norm with one channel per group; running statistics move towards the mean over the
    batch of the instance means and unbiased variances. Without input statistics, normalizes
    with the running ones."""
    _checks.in_range("momentum", momentum, 0.0, 1.0)
    x = np.asarray(x)
    c = x.shape[-1] if channels_last else x.shape[1]
    if use_input_stats:
        y, mean, rstd = group_norm_forward(x, c, weight, bias, eps=eps, channels_last=channels_last)
        if running_mean is not None:
            xg = _grouped(x, c, channels_last)
            m = xg.shape[2] * xg.shape[3]
            unbiased = xg.var(axis=(2, 3)) * m / (m - 1)
            running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * xg.mean(axis=(2, 3)).mean(axis=0)
            running_var[...] = (1 - momentum) * _f64(running_var) + momentum * unbiased.mean(axis=0)
        return y, mean, rstd
    n = x.shape[0]
    mean = np.tile(_f64(running_mean), (n, 1))
    rstd = np.tile(1.0 / np.sqrt(_f64(running_var) + eps), (n, 1))
    xg = _grouped(x, c, channels_last)
    xhat = (xg - mean[:, :, None, None]) * rstd[:, :, None, None]
    y = xhat.reshape(n, c, -1) * _per_channel(weight, c, 1.0) + _per_channel(bias, c, 0.0)
    return _ungrouped(y, x, channels_last), mean, rstd
