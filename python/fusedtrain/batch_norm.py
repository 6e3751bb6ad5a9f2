"""Batch normalization (forward, backward) and the per-channel statistics behind it, fused.

Semantics are ``torch.nn.functional.batch_norm``'s (Ioffe & Szegedy 2015). ``x`` is
``(N, C, *spatial)`` (any number of spatial dims, ``(N, C)`` included) or, with
``channels_last=True``, ``(N, *spatial, C)``; C-contiguous either way (a PyTorch tensor in
``torch.channels_last`` memory format is ``x.permute(0, 2, 3, 1)`` in this convention). M is the
number of values per channel, ``x.size / C``.

Dtypes: float32, float64, float16, bfloat16 inputs; statistics are computed in float64 from
float32 (float64) partial sums and saved as float32 (float64 for float64 input). ``weight``,
``bias`` and the running statistics have the input's dtype or float32.

Outputs are new arrays of the input's own library (NumPy for NumPy, ``torch.empty`` on the
tensor's device for PyTorch, CuPy for CuPy). On CUDA the kernels run on ``stream=`` or the
framework's current stream, without a host sync; ``merge_stats`` runs on the host. Every argument is checked before anything is written: a call that
raises leaves the running statistics as they were.

Numerics: per channel, blocks of values are summed around their own approximate mean and merged
by Chan's rule, so the variance stays accurate when |mean| >> std (no ``E[x^2] - E[x]^2``);
results are bitwise identical for any thread count.
"""
import math
import numbers
import sys

import numpy as np

from . import _C
from . import _checks as chk
from ._streams import launch_stream


# ---------------------------------------------------------------- output allocation

_TORCH_TYPES = {}  # type -> whether it is one of torch's (tensor subclasses included)
# Note [huge pages] (csrc/core/huge_pages.h): torch CPU outputs from this size on, as NumPy's.
_HUGE_PAGE_BYTES = 4 << 20


def _is_torch(x):
    t = type(x)
    known = _TORCH_TYPES.get(t)
    if known is None:
        known = _TORCH_TYPES[t] = t.__module__.split(".", 1)[0] == "torch"
    return known


def _is_float64(x):
    return str(getattr(x, "dtype", "")).endswith("float64")


def _empty(like, shape, dtype=None, stats=False):
    """A new array of `like`'s library and device: `like`'s dtype, or with stats=True float32
    (float64 for float64 `like`)."""
    if _is_torch(like):
        torch = sys.modules["torch"]  # the caller's tensor proves torch is imported
        if stats:
            dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        if type(like) is torch.Tensor:
            # like's device and (unless given) dtype without reading them in Python: a fifth
            # less host time than torch.empty(shape, dtype=, device=) per output.  Not for
            # subclasses, whose new_empty may return their own type.
            out = like.new_empty(shape) if dtype is None else like.new_empty(shape, dtype=dtype)
        else:
            out = torch.empty(shape, dtype=dtype if dtype is not None else like.dtype,
                              device=like.device)
        return _huge_page_hint(out)
    if stats:
        dtype = np.float64 if _is_float64(like) else np.float32
    if not isinstance(like, np.ndarray) and hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        return xp.empty(shape, dtype=dtype if dtype is not None else like.dtype)
    return np.empty(shape, dtype=dtype if dtype is not None else like.dtype)


def _empty_like(like, shape):
    """A new C-contiguous array with `like`'s dtype, library and device and its own shape,
    ``shape`` (y, dx; the caller has read it).

    A plain torch tensor in C order takes ``torch.empty_like``: about 0.7 us from Python on the
    2-core VM where ``new_empty(shape)`` takes 1.1-1.5 (no shape or dtype to parse), and a small
    layer's host time holds three or four of them."""
    if _is_torch(like):
        torch = sys.modules["torch"]  # the caller's tensor proves torch is imported
        if type(like) is torch.Tensor and like.is_contiguous():
            return _huge_page_hint(torch.empty_like(like))
    return _empty(like, shape)


def _huge_page_hint(out):
    """A new torch output, asked to be backed by huge pages if it is a large CPU one (Note [huge
    pages])."""
    if out.nbytes >= _HUGE_PAGE_BYTES and not out.is_cuda:
        _C._advise_huge_pages(out.data_ptr(), out.nbytes)
    return out


def _shape_of(fn, name, x):
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype"):
        raise TypeError(f"{fn}: {name} is a {type(x).__name__}; expected a NumPy array or an "
                        f"array with __dlpack__ (torch, cupy, ...)")
    return tuple(map(int, shape))


def _layout(fn, x, channels_last):
    """``(shape, N, C)`` of a per-channel normalization's x, which must have both."""
    shape = _shape_of(fn, "x", x)
    if len(shape) < 2:
        raise ValueError(f"{fn}: x must have at least 2 dimensions (N, C, ...), got shape {shape}")
    return shape, shape[0], (shape[-1] if channels_last else shape[1])


def _channels(fn, x, channels_last):
    return _layout(fn, x, channels_last)[2]


def _momentum(fn, momentum):
    return chk.in_range(fn, "momentum", momentum, 0.0, 1.0, True)


def _eps(fn, eps):
    eps = chk.at_least(fn, "eps", eps)
    if math.isinf(eps):
        raise ValueError(f"{fn}: eps must be finite")
    return eps


# ---------------------------------------------------------------- forward / backward

def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                       training=True, momentum=0.1, eps=1e-5, channels_last=False, stream=None):
    """Batch normalization; returns ``(y, save_mean, save_invstd)``.

    Training: per channel, the batch mean and biased variance over its M values,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (weight and bias optional); when the
    running statistics are given they are updated in place in the same pass,
    ``r = (1 - momentum) * r + momentum * batch`` with the unbiased variance
    ``var * M / (M - 1)`` for ``running_var``. M == 1 raises ValueError. An empty batch
    (M == 0), as torch's, leaves the running statistics as they are; its ``save_mean`` is 0 and
    ``save_invstd`` ``1 / sqrt(eps)`` (the statistics of no values, as :func:`batch_norm_stats`
    gives them), and its backward gives zero ``dweight`` and ``dbias``.

    Evaluation (``training=False``): normalizes with ``running_mean`` / ``running_var`` (both
    required) and changes nothing.

    ``save_mean`` and ``save_invstd = 1 / sqrt(var + eps)`` are float32 (float64 for float64
    input) and feed :func:`batch_norm_backward`. In evaluation mode they hold the running mean
    and its invstd.

    Textbook form: Ioffe & Szegedy, Algorithm 1 (and 2 for inference); Goodfellow et al.
    section 8.7.1.
    """
    fn = "batch_norm_forward"
    training = chk.flag(fn, "training", training)
    momentum = _momentum(fn, momentum)
    eps = _eps(fn, eps)
    channels_last = chk.flag(fn, "channels_last", channels_last)
    shape, _, C = _layout(fn, x, channels_last)
    y = _empty_like(x, shape)
    save_mean = _empty(x, (C,), stats=True)
    save_invstd = _empty(x, (C,), stats=True)
    _C.bn_forward(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd,
                  training, momentum, eps, channels_last, launch_stream([x], stream))
    return y, save_mean, save_invstd


def batch_norm_backward(dy, x, weight, save_mean, save_invstd, *, channels_last=False,
                        input_grad=True, sums=None, stream=None):
    """Gradients of the training-mode forward; returns ``(dx, dweight, dbias)``.

    With ``xhat = (x - save_mean) * save_invstd`` over each channel's M values:
    ``dbias = sum(dy)``, ``dweight = sum(dy * xhat)``,
    ``dx = weight * save_invstd * (dy - dbias / M - xhat * dweight / M)``.
    ``dweight`` and ``dbias`` are None when ``weight`` is None (then weight is taken as 1); they
    have ``weight``'s dtype, ``dx`` has ``x``'s.

    For a forward in evaluation mode the gradient is simply ``dy * weight * invstd``; this
    function is the training-mode backward, as ``torch.ops.aten.native_batch_norm_backward``
    with ``train=True``.

    Its two halves, the channel sums and the elementwise dx, also run apart, for a batch split
    over processes (synchronized batch norm adds every process's sums between them):

    - ``input_grad=False``: the sums only (one pass over dy and x); returns
      ``(None, sum(dy * xhat), sum(dy))``, in ``weight``'s dtype, or as float32 arrays (float64
      for float64 x) when ``weight`` is None.
    - ``sums=(sum_dy, sum_dy_xhat, count)``: dx from the sums of the whole batch, ``count``
      values per channel of which x is a slice (xhat taken with this call's ``save_mean`` and
      ``save_invstd``), with no reduction; returns ``(dx, None, None)``.
    """
    fn = "batch_norm_backward"
    channels_last = chk.flag(fn, "channels_last", channels_last)
    input_grad = chk.flag(fn, "input_grad", input_grad)
    sum_dy = sum_dy_xhat = None
    count = 0.0
    if sums is not None:
        if not isinstance(sums, (tuple, list)) or len(sums) != 3:
            raise TypeError(f"{fn}: sums must be a tuple (sum_dy, sum_dy_xhat, count), got "
                            f"{type(sums).__name__}")
        if not input_grad:
            raise ValueError(f"{fn}: sums are given to compute dx, but input_grad is False")
        sum_dy, sum_dy_xhat, count = sums
        count = chk.at_least(fn, "count", count, 1)
    shape, _, C = _layout(fn, x, channels_last)
    if weight is not None:
        _shape_of(fn, "weight", weight)
    dx = _empty_like(x, shape) if input_grad else None
    dweight = dbias = None
    if sums is None and (weight is not None or not input_grad):
        like = weight if weight is not None else x
        dweight = _empty(like, (C,), stats=weight is None)
        dbias = _empty(like, (C,), stats=weight is None)
    _C.bn_backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, channels_last,
                   launch_stream([x], stream), sum_dy, sum_dy_xhat, count)
    return dx, dweight, dbias


# ---------------------------------------------------------------- statistics building blocks

def batch_norm_stats(x, *, channels_last=False, stream=None):
    """Per-channel ``(mean, var, count)`` of ``x``: the mean and biased variance as float32
    arrays (float64 for float64 input) and the number of values per channel as an int.

    These are the local statistics of synchronized batch norm: merge those of every process
    with :func:`merge_stats`, then normalize with them (README, "Batch norm").
    """
    fn = "batch_norm_stats"
    channels_last = chk.flag(fn, "channels_last", channels_last)
    C = _channels(fn, x, channels_last)
    mean = _empty(x, (C,), stats=True)
    var = _empty(x, (C,), stats=True)
    return mean, var, _stats_into(x, mean, var, channels_last=channels_last, fn=fn,
                                  stream=stream)


def _stats_into(x, mean, var, *, channels_last, fn, stream=None):
    """:func:`batch_norm_stats` into the caller's ``(C,)`` float32 or float64 arrays (views
    allowed: synchronized batch norm writes float64 statistics straight into its send buffer);
    returns the count."""
    return int(_C.bn_stats(x, mean, var, channels_last, fn, stream=launch_stream([x], stream)))


def _grad_sums_into(dy, x, save_mean, save_invstd, sum_dy_xhat, sum_dy, *, channels_last):
    """The sums half of :func:`batch_norm_backward` (``input_grad=False``, no weight) into the
    caller's ``(C,)`` float32 or float64 arrays (synchronized batch norm writes float64 sums
    straight into its all_reduce buffer)."""
    _C.bn_backward(dy, x, None, save_mean, save_invstd, None, sum_dy_xhat, sum_dy, channels_last,
                   launch_stream([x]))


def _counts(fn, counts, k):
    if isinstance(counts, numbers.Real):
        raise TypeError(f"{fn}: counts must be a sequence or 1-d array of {k} counts, "
                        f"got a single number")
    try:
        values = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{fn}: counts must be a sequence or 1-d array of numbers ({e})") from None
    except OverflowError:
        raise ValueError(f"{fn}: counts has a number beyond the float64 range") from None
    if values.ndim != 1:
        raise ValueError(f"{fn}: counts must be 1-d (one count per row of means), "
                         f"got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{fn}: counts must be finite and >= 0")
    return [float(v) for v in values]


def _stacked(fn, name, arrays):
    if isinstance(arrays, (list, tuple)):
        if not arrays:
            raise ValueError(f"{fn}: {name} is empty")
        if _is_torch(arrays[0]):
            return sys.modules["torch"].stack(list(arrays))
        return np.stack([np.asarray(a) for a in arrays])
    return arrays


def merge_stats(means, vars, counts):
    """Chan's parallel merge of per-channel statistics over axis 0; returns
    ``(mean, var, count)``.

    ``means`` and ``vars`` are ``(K, C)`` arrays (or lists of K ``(C,)`` arrays) of means and
    biased variances of K disjoint sets of values with ``counts[k]`` values each; the result is
    the mean and biased variance of their union, exactly what :func:`batch_norm_stats` of the
    concatenated data gives (up to rounding), and the total count (an int when the counts are
    integers). Rows with count 0 are ignored; all counts 0 gives mean 0, var 0.

    ``n = na + nb; d = mb - ma; mean = ma + d * nb / n; m2 = m2a + m2b + d^2 * na * nb / n``
    with ``m2 = var * count`` (Chan, Golub & LeVeque 1979).
    """
    fn = "merge_stats"
    means = _stacked(fn, "means", means)
    vars = _stacked(fn, "vars", vars)
    shape = _shape_of(fn, "means", means)
    if len(shape) != 2:
        raise ValueError(f"{fn}: means must be 2-d (K, C), got shape {shape}")
    counts = _counts(fn, counts, shape[0])
    mean = _empty(means, (shape[1],), stats=True)
    var = _empty(means, (shape[1],), stats=True)
    _C.bn_merge_stats(means, vars, counts, mean, var)
    total = float(sum(counts))
    return mean, var, int(total) if total.is_integer() else total


def _on_gpu(a):
    return bool(getattr(a, "is_cuda", False)) or type(a).__module__.split(".")[0] == "cupy"


def _count(fn, count):
    if hasattr(count, "shape"):  # a 1-element array, as a distributed all-reduce leaves it
        if int(np.prod(getattr(count, "shape"))) != 1:
            raise ValueError(f"{fn}: count must be a number or a 1-element array")
        if _on_gpu(count):
            return count       # read by the kernel where it is (Note [device count])
        count = float(count.item() if hasattr(count, "item") else count)
    count = chk._number(fn, "count", count)
    if not count > 1 or math.isinf(count):
        raise ValueError(f"{fn}: count must be finite and > 1 (the unbiased variance divides by "
                         f"count - 1), got {count}")
    return count


def update_running_stats_(running_mean, running_var, mean, var, count, *, momentum,
                          stream=None):
    """Update running statistics in place from a batch's ``(mean, var, count)``, as the
    training-mode forward does: ``running_mean = (1 - momentum) * running_mean + momentum * mean``,
    ``running_var = (1 - momentum) * running_var + momentum * var * count / (count - 1)``.

    ``var`` is the biased variance that :func:`batch_norm_stats` / :func:`merge_stats` return;
    ``count`` is a Python number (or a 1-element array) greater than 1. A 1-element float32 or
    float64 array on a GPU is read there by the kernel, so the host never waits for the device
    (as a count that a collective left on the GPU); it is not checked (a count of 1 makes
    ``running_var`` infinite), since checking it would be that wait (Note [device count]).
    """
    fn = "update_running_stats_"
    momentum = _momentum(fn, momentum)
    count = _count(fn, count)
    _C.bn_update_running_stats(running_mean, running_var, mean, var, count, momentum,
                               launch_stream([running_mean], stream))


# ---------------------------------------------------------------- streaming dataset statistics

class RunningStats:
    """Per-channel mean and population variance of a stream of batches, mergeable.

    For the "zero-center and normalize your data" preprocessing: feed the training set batch by
    batch (``update``), combine the statistics of shards computed elsewhere (``merge``), then
    use ``(x - rs.mean) / rs.std``. The result equals the statistics of the whole dataset at
    once (Chan's merge in float64; batches summed as in :func:`batch_norm_stats`).

    ``mean``, ``var`` (population, i.e. biased) and ``std`` are float64 NumPy arrays of
    ``num_features`` values; ``count`` is the number of values per channel seen so far (mean and
    var are 0 while it is 0). Batches are ``(N, C, *spatial)`` arrays, or ``(N, *spatial, C)``
    with ``channels_last=True``, of any supported dtype and library (CPU).
    """

    def __init__(self, num_features, channels_last=False):
        fn = "RunningStats"
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
            raise TypeError(f"{fn}: num_features must be an int, got {type(num_features).__name__}")
        if num_features < 1:
            raise ValueError(f"{fn}: num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)
        self.channels_last = chk.flag(fn, "channels_last", channels_last)
        self._mean = np.zeros(self.num_features)
        self._var = np.zeros(self.num_features)
        self._count = 0

    def _absorb(self, mean, var, count):
        merged_mean = np.empty(self.num_features)
        merged_var = np.empty(self.num_features)
        _C.bn_merge_stats(np.stack([self._mean, mean]), np.stack([self._var, var]),
                          [float(self._count), float(count)], merged_mean, merged_var)
        self._mean, self._var, self._count = merged_mean, merged_var, self._count + count

    def update(self, batch):
        """Adds one batch's values; returns self."""
        fn = "RunningStats.update"
        C = _channels(fn, batch, self.channels_last)
        if C != self.num_features:
            raise ValueError(f"{fn}: batch has {C} channels but num_features is "
                             f"{self.num_features}")
        mean = np.empty(C)
        var = np.empty(C)
        count = _C.bn_stats(batch, mean, var, self.channels_last, fn)
        self._absorb(mean, var, int(count))
        return self

    def merge(self, other):
        """Adds the values another RunningStats has seen; returns self."""
        if not isinstance(other, RunningStats):
            raise TypeError(f"RunningStats.merge: other must be a RunningStats, "
                            f"got {type(other).__name__}")
        if other.num_features != self.num_features:
            raise ValueError(f"RunningStats.merge: other has {other.num_features} features, "
                             f"this one {self.num_features}")
        self._absorb(other._mean, other._var, other._count)
        return self

    def all_reduce(self, group=None):
        """Merges the statistics of every rank of a torch.distributed process group into this
        one, on every rank; returns self.

        Afterwards every rank holds the statistics of all the values all ranks had seen (the
        same bits on each), as if one process had seen them all: each data-parallel worker
        updates its own RunningStats on its shard of the dataset, then all call
        ``all_reduce()``. ``group`` is a process group (None: the default group, all ranks).
        A collective: every rank of the group must call it, a rank that saw nothing included,
        with the same ``num_features``. One ``all_gather`` of ``2 * num_features + 1`` float64
        per rank (on the current CUDA device for an NCCL group), merged by Chan's rule (Note
        [one gather, Chan's merge] in ``fusedtrain/_distributed.py``).
        """
        from . import _distributed  # imports torch: only for those who ask
        group = _distributed.default_group("RunningStats.all_reduce", group)
        self._mean, self._var, self._count = _distributed.all_reduce_arrays(
            self._mean, self._var, self._count, group)
        return self

    @property
    def mean(self):
        return self._mean.copy()

    @property
    def var(self):
        return self._var.copy()

    @property
    def std(self):
        return np.sqrt(self._var)

    @property
    def count(self):
        return self._count

    def __repr__(self):
        return (f"RunningStats(num_features={self.num_features}, count={self._count}, "
                f"channels_last={self.channels_last})")


__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_stats", "merge_stats",
           "update_running_stats_", "RunningStats"]
