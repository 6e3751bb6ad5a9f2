"""Layer, RMS, group and instance normalization (forward, backward), fused.

Semantics are ``torch.nn.functional.layer_norm / rms_norm / group_norm / instance_norm``'s:
layer norm (Ba, Kiros & Hinton 2016) normalizes each sample over its last dimensions, RMS norm
(Zhang & Sennrich 2019) divides by their root mean square without subtracting the mean, group
norm (Wu & He 2018) normalizes each sample over groups of channels, instance norm (Ulyanov et
al. 2016) is group norm with one channel per group plus running statistics.

Conventions are batch norm's (:mod:`fusedtrain.batch_norm`): C-contiguous float32, float64,
float16 or bfloat16 input of NumPy, PyTorch (CPU or CUDA) or CuPy; ``weight`` and ``bias`` of
the input's dtype or float32; statistics accumulated in float64 from float32 (float64) partial
sums around each block's own mean, so they stay accurate at |mean| >> std; saved statistics
float32 (float64 for float64 input); results bitwise identical for any thread count; every
argument checked before anything is written. Outputs are new arrays of the input's library.

The statistics are the same code as batch norm's (Note [planar view] in
``csrc/core/norm_args.h``): a layer-norm row is a batch-norm channel of the view
``(1, rows, cols)``, a group of NCHW input a channel of ``(1, N * G, C / G * HW)``.
"""
import numbers

from . import _C
from . import _checks as chk
from ._streams import launch_stream
from .batch_norm import _empty, _empty_like, _eps, _layout, _momentum, _shape_of

# torch.finfo(dtype).eps: rms_norm's default eps, by the dtype's name.
_MACHINE_EPS = {"float32": 2.0 ** -23, "float64": 2.0 ** -52, "float16": 2.0 ** -10,
                "bfloat16": 2.0 ** -7}


def _normalized_dims(fn, x, normalized_shape):
    """How many trailing dimensions of x normalized_shape names, after checking it matches them."""
    shape = _shape_of(fn, "x", x)
    if type(normalized_shape) is int and shape and shape[-1] == normalized_shape:
        return 1, shape  # the common call, and a module's normalized_shape of one int below
    if (type(normalized_shape) is tuple and 0 < len(normalized_shape) <= len(shape)
            and all(type(d) is int for d in normalized_shape)
            and shape[len(shape) - len(normalized_shape):] == normalized_shape):
        return len(normalized_shape), shape
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        dims = tuple(normalized_shape)
    except TypeError:
        raise TypeError(f"{fn}: normalized_shape must be an int or a sequence of ints, got "
                        f"{type(normalized_shape).__name__}") from None
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        raise TypeError(f"{fn}: normalized_shape must hold ints, got {dims!r}")
    dims = tuple(int(d) for d in dims)
    if not dims or len(dims) > len(shape) or shape[len(shape) - len(dims):] != dims:
        raise ValueError(f"{fn}: normalized_shape {dims} must be the last dimensions of x, "
                         f"shape {shape}")
    return len(dims), shape


def _stat_shape(shape, k):
    """mean / rstd of layer and RMS norm: x's leading dimensions, 1 for each normalized one
    (torch.native_layer_norm's shape)."""
    return shape[:len(shape) - k] + (1,) * k


def _dtype_name(x):
    return str(getattr(x, "dtype", "")).replace("torch.", "")


# ---------------------------------------------------------------- layer norm

def layer_norm_forward(x, normalized_shape, weight=None, bias=None, *, eps=1e-5, stream=None):
    """Layer normalization; returns ``(y, mean, rstd)``.

    Over the last ``len(normalized_shape)`` dimensions of each sample (a row of
    ``prod(normalized_shape)`` values): ``y = (x - mean) * rstd * weight + bias`` with the row's
    mean, ``rstd = 1 / sqrt(var + eps)`` and its biased variance. ``weight`` and ``bias`` have
    the shape ``normalized_shape`` (optional). ``mean`` and ``rstd`` are float32 (float64 for
    float64 input) of shape ``x.shape[:-k] + (1,) * k``, as ``torch.native_layer_norm`` returns
    them, and feed :func:`layer_norm_backward`. A row of one value gives ``y = bias``.
    """
    fn = "layer_norm_forward"
    eps = _eps(fn, eps)
    k, shape = _normalized_dims(fn, x, normalized_shape)
    y = _empty_like(x, shape)
    mean = _empty(x, _stat_shape(shape, k), stats=True)
    rstd = _empty(x, _stat_shape(shape, k), stats=True)
    _C.ln_forward(x, k, weight, bias, y, mean, rstd, eps, False, fn, launch_stream([x], stream))
    return y, mean, rstd


def layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight=None, *, weight_grads=True,
                        bias_grads=True, stream=None):
    """Gradients of :func:`layer_norm_forward`; returns ``(dx, dweight, dbias)``.

    With ``xhat = (x - mean) * rstd`` and ``g = weight * dy`` over each row of H values:
    ``dx = rstd * (g - sum(g) / H - xhat * sum(g * xhat) / H)``, ``dweight = sum(dy * xhat)``
    and ``dbias = sum(dy)`` over the rows. ``dweight`` and ``dbias`` have ``weight``'s shape
    and dtype, and are None when ``weight`` is None or ``weight_grads=False`` (a frozen weight:
    the column sums are skipped, dx is the same). ``bias_grads=False`` (a layer without a bias,
    or a frozen one) leaves ``dbias`` None and skips its sums; dx and dweight are the same.
    """
    fn = "layer_norm_backward"
    weight_grads = chk.flag(fn, "weight_grads", weight_grads)
    bias_grads = chk.flag(fn, "bias_grads", bias_grads)
    k, shape = _normalized_dims(fn, x, normalized_shape)
    dx = _empty_like(x, shape)
    dweight = dbias = None
    if weight is not None and weight_grads:
        pshape = _shape_of(fn, "weight", weight)
        dweight = _empty_like(weight, pshape)
        dbias = _empty_like(weight, pshape) if bias_grads else None
    _C.ln_backward(dy, x, k, mean, rstd, weight, dx, dweight, dbias, False, fn,
                   launch_stream([x], stream))
    return dx, dweight, dbias


# ---------------------------------------------------------------- RMS norm

def rms_norm_forward(x, normalized_shape, weight=None, *, eps=None, stream=None):
    """RMS normalization; returns ``(y, rstd)``.

    ``y = x * rstd * weight`` with ``rstd = 1 / sqrt(mean(x^2) + eps)`` over the last
    ``len(normalized_shape)`` dimensions; ``eps=None`` is the machine epsilon of x's dtype
    (torch's default, ``torch.finfo(x.dtype).eps``). ``rstd`` is shaped as layer norm's.
    """
    fn = "rms_norm_forward"
    k, shape = _normalized_dims(fn, x, normalized_shape)
    eps = _MACHINE_EPS.get(_dtype_name(x), 0.0) if eps is None else _eps(fn, eps)
    y = _empty_like(x, shape)
    rstd = _empty(x, _stat_shape(shape, k), stats=True)
    _C.ln_forward(x, k, weight, None, y, None, rstd, eps, True, fn, launch_stream([x], stream))
    return y, rstd


def rms_norm_backward(dy, x, normalized_shape, rstd, weight=None, *, weight_grads=True,
                      stream=None):
    """Gradients of :func:`rms_norm_forward`; returns ``(dx, dweight)``.

    With ``g = weight * dy`` over each row of H values:
    ``dx = rstd * g - x * rstd^3 * sum(g * x) / H`` and ``dweight = sum(dy * x * rstd)`` over
    the rows (None when ``weight`` is None or ``weight_grads=False``).
    """
    fn = "rms_norm_backward"
    weight_grads = chk.flag(fn, "weight_grads", weight_grads)
    k, shape = _normalized_dims(fn, x, normalized_shape)
    dx = _empty_like(x, shape)
    dweight = None
    if weight is not None and weight_grads:
        dweight = _empty_like(weight, _shape_of(fn, "weight", weight))
    _C.ln_backward(dy, x, k, None, rstd, weight, dx, dweight, None, True, fn,
                   launch_stream([x], stream))
    return dx, dweight


# ---------------------------------------------------------------- group and instance norm

def _groups(fn, num_groups):
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"{fn}: num_groups must be an int, got {type(num_groups).__name__}")
    return int(num_groups)


def group_norm_forward(x, num_groups, weight=None, bias=None, *, eps=1e-5, channels_last=False,
                       stream=None):
    """Group normalization; returns ``(y, mean, rstd)``.

    ``x`` is ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last=True``; its C
    channels form ``num_groups`` groups of ``C / num_groups`` consecutive channels (C must be
    divisible). Per sample and group: ``y = (x - mean) * rstd * weight[c] + bias[c]`` with the
    group's mean and ``rstd = 1 / sqrt(var + eps)`` (biased variance). ``mean`` and ``rstd``
    are ``(N, num_groups)``, float32 (float64 for float64 input).
    """
    fn = "group_norm_forward"
    num_groups = _groups(fn, num_groups)
    eps = _eps(fn, eps)
    channels_last = chk.flag(fn, "channels_last", channels_last)
    shape, n, _ = _layout(fn, x, channels_last)
    y = _empty_like(x, shape)
    mean = _empty(x, (n, max(num_groups, 0)), stats=True)
    rstd = _empty(x, (n, max(num_groups, 0)), stats=True)
    _C.gn_forward(x, num_groups, weight, bias, None, None, y, mean, rstd, True, 0.0, eps,
                  channels_last, False, launch_stream([x], stream))
    return y, mean, rstd


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, channels_last=False,
                        weight_grads=True, stream=None):
    """Gradients of :func:`group_norm_forward` (and of :func:`instance_norm` with input
    statistics, ``num_groups = C``); returns ``(dx, dweight, dbias)``.

    With ``xhat = (x - mean) * rstd`` and ``g = weight[c] * dy`` over each group's M values:
    ``dx = rstd * (g - sum(g) / M - xhat * sum(g * xhat) / M)``; ``dweight[c] = sum(dy * xhat)``
    and ``dbias[c] = sum(dy)`` over the samples and positions of channel c (None when
    ``weight`` is None or ``weight_grads=False``).
    """
    fn = "group_norm_backward"
    num_groups = _groups(fn, num_groups)
    channels_last = chk.flag(fn, "channels_last", channels_last)
    weight_grads = chk.flag(fn, "weight_grads", weight_grads)
    shape, _, C = _layout(fn, x, channels_last)
    dx = _empty_like(x, shape)
    dweight = dbias = None
    if weight is not None and weight_grads:
        _shape_of(fn, "weight", weight)
        dweight, dbias = _empty(weight, (C,)), _empty(weight, (C,))
    _C.gn_backward(dy, x, num_groups, mean, rstd, weight, dx, dweight, dbias, channels_last,
                   launch_stream([x], stream))
    return dx, dweight, dbias


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                  use_input_stats=True, momentum=0.1, eps=1e-5, channels_last=False,
                  stream=None):
    """Instance normalization, ``torch.nn.functional.instance_norm``; returns
    ``(y, mean, rstd)`` with ``mean`` and ``rstd`` of shape ``(N, C)``.

    ``use_input_stats=True``: group norm with one channel per group (each sample's channel is
    normalized by its own mean and biased variance); when the running statistics are given they
    are updated in place, ``r = (1 - momentum) * r + momentum * batch`` with ``batch`` the mean
    over the samples of the instance means, and of the unbiased instance variances
    ``var * M / (M - 1)`` (M values per instance, which must be more than 1). The gradient is
    :func:`group_norm_backward` with ``num_groups = C``.
    ``use_input_stats=False``: normalizes with ``running_mean`` / ``running_var`` (required) and
    changes nothing; ``mean`` / ``rstd`` then hold them for every sample, and the gradient is
    ``dy * weight * rstd``.
    """
    fn = "instance_norm"
    use_input_stats = chk.flag(fn, "use_input_stats", use_input_stats)
    momentum = _momentum(fn, momentum)
    eps = _eps(fn, eps)
    channels_last = chk.flag(fn, "channels_last", channels_last)
    shape, n, C = _layout(fn, x, channels_last)
    y = _empty_like(x, shape)
    mean = _empty(x, (n, C), stats=True)
    rstd = _empty(x, (n, C), stats=True)
    _C.gn_forward(x, C, weight, bias, running_mean, running_var, y, mean, rstd, use_input_stats,
                  momentum, eps, channels_last, True, launch_stream([x], stream))
    return y, mean, rstd


__all__ = ["layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward",
           "group_norm_forward", "group_norm_backward", "instance_norm"]
