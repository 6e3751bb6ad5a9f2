"""Multi-tensor utilities of a training step: global gradient norm, norm clipping, EMA weights."""

from . import _C
from . import _checks as chk
from . import _dtensor
from ._streams import launch_stream


def _norm_type(fn, norm_type):
    p = chk._number(fn, "norm_type", norm_type)
    if not p > 0:
        raise ValueError(f"{fn}: norm_type must be > 0 or inf, got {p}")
    return p


def global_norm(arrays, norm_type=2.0, *, stream=None):
    """The p-norm of all elements of ``arrays`` taken together, as a Python float.

    ``(sum_i sum_j |x_ij|**p)**(1/p)``, ``max |x|`` for ``norm_type=inf``; equal to
    ``torch.nn.utils.get_total_norm`` (the norm of the per-tensor norms).  Partial sums are
    combined in a fixed order, so the result does not depend on the thread count.
    On CUDA arrays the result is read back, which waits for ``stream``.
    DTensors (FSDP2's sharded grads) give the norm across ranks: our kernel on the local
    shards, one all-reduce over the mesh's shard group (Note [DTensor shards]).
    """
    norm_type = _norm_type("global_norm", norm_type)
    if _dtensor.leads_with_dtensor(arrays):
        return _dtensor.global_norm("global_norm", "arrays", arrays, norm_type, stream)[0]
    return _C.global_norm(arrays, norm_type, launch_stream(arrays, stream))


def clip_grad_norm_(grads, max_norm, norm_type=2.0, *, stream=None):
    """Scale ``grads`` in place so their global norm is at most ``max_norm``; returns the norm
    before clipping.

    ``grads *= min(1, max_norm / (norm + 1e-6))``, as ``torch.nn.utils.clip_grad_norm_``
    (Goodfellow et al. section 10.11.1, clipping the norm of the gradient). DTensor grads are
    clipped to their norm across ranks, as torch's clip_grad_norm_ does (one all-reduce).
    """
    fn = "clip_grad_norm_"
    max_norm = chk.at_least(fn, "max_norm", max_norm)
    norm_type = _norm_type(fn, norm_type)
    if _dtensor.leads_with_dtensor(grads):
        return _dtensor.clip_grad_norm_(fn, grads, max_norm, norm_type, stream)
    return _C.clip_grad_norm_(grads, max_norm, norm_type, launch_stream(grads, stream))


def _clip_coefficient(max_norm, total_norm):
    """min(1, max_norm / (total_norm + 1e-6)), the kernels' clip_coefficient (csrc/math/norms.h)
    for the norms taken across ranks in Python."""
    return min(1.0, max_norm / (total_norm + 1e-6))


def ema_(averages, params, *, decay, stream=None):
    """Exponential moving average of parameters, in place: ``a = decay * a + (1 - decay) * p``.

    Evaluated as ``a.lerp_(p, 1 - decay)`` like ``torch.optim.swa_utils``' EMA. DTensors
    (FSDP2) are averaged shard by shard.  Textbook form:
    Polyak averaging in its exponentially decaying form, Goodfellow et al. section 8.7.3.
    ``averages`` have the params' dtype, or float32 for float16/bfloat16 params.
    """
    fn = "ema_"
    o = chk.options(_C.EmaOptions, decay=chk.in_range(fn, "decay", decay, 0.0, 1.0, True))
    if _dtensor.leads_with_dtensor(averages, params):
        averages = _dtensor.local_shards(fn, "averages", averages)
        params = _dtensor.local_shards(fn, "params", params)
    _C.ema_(averages, params, o, launch_stream(averages, stream))


__all__ = ["global_norm", "clip_grad_norm_", "ema_"]
