"""The normalization kernels the torch modules call, as torch custom operators, for the graphs
torch.compile traces (Note [traced kernels]).

Note [traced kernels]: torch.compile's tracer (Dynamo) cannot look into a C++ extension's
functions: each call of one in a module's forward ended the graph there (three breaks for one
LayerNorm, and ``fullgraph=True`` failed). Registered as custom operators (``torch.library``,
namespace ``fusedtrain``) with a fake implementation that gives each output's shape and dtype
without running anything, they become nodes of the graph: the modules' autograd Functions,
forward and backward, trace whole, and the compiled graph calls the same kernels on the same
arrays, so the results are the same bits as in eager mode. Eager calls keep calling ``ft``
directly (an operator's dispatch costs more host time than the kernel call, Note [eager
apply]); ``kernels()`` picks the operators only while torch.compile traces.

An operator returns tensors only: an absent result (dweight without a weight, dx of a sums-only
backward) is an empty tensor there and None again in the wrappers below, which take the same
arguments as ``ft``'s functions. Batch and instance norm update the running statistics in place
(``mutates_args``), as their ``ft`` functions do."""
from typing import List, Optional, Tuple

import torch

import fusedtrain as ft

_T = torch.Tensor
_OT = Optional[torch.Tensor]
SUPPORTED = hasattr(torch.library, "custom_op") and hasattr(torch, "compiler") and \
    hasattr(torch.compiler, "is_compiling")
# False while not traced (and where torch.compile is too old for these operators).
is_compiling = torch.compiler.is_compiling if SUPPORTED else (lambda: False)


def kernels():
    """The kernel functions for this call: these operators while torch.compile traces, else ``ft``."""
    return _Traced if is_compiling() else ft


def _stats_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _absent(x):
    return torch.empty(0, dtype=x.dtype, device=x.device)


def _like(t):
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _or_absent(t, x):
    return _absent(x) if t is None else t


def _row_stats(x, normalized_shape, n):
    """n fake (rows..., 1...) statistics arrays of a layer/RMS norm of x."""
    k = len(normalized_shape)
    shape = tuple(x.shape[:x.dim() - k]) + (1,) * k
    return [torch.empty(shape, dtype=_stats_dtype(x), device=x.device) for _ in range(n)]


def _channels(x, channels_last):
    return x.shape[-1] if channels_last else x.shape[1]


def _channel_stats(x, shape):
    return [torch.empty(shape, dtype=_stats_dtype(x), device=x.device) for _ in range(2)]


def _fake_weight_grad(x, weight, present):
    return _like(weight) if weight is not None and present else _absent(x)


if SUPPORTED:
    op = torch.library.custom_op

    @op("fusedtrain::layer_norm_forward", mutates_args=())
    def _ln_fwd(x: _T, normalized_shape: List[int], weight: _OT, bias: _OT, eps: float) -> Tuple[_T, _T, _T]:
        return ft.layer_norm_forward(x, normalized_shape, weight, bias, eps=eps)

    @_ln_fwd.register_fake
    def _(x, normalized_shape, weight, bias, eps):
        return (_like(x), *_row_stats(x, normalized_shape, 2))

    @op("fusedtrain::rms_norm_forward", mutates_args=())
    def _rms_fwd(x: _T, normalized_shape: List[int], weight: _OT, eps: Optional[float]) -> Tuple[_T, _T]:
        return ft.rms_norm_forward(x, normalized_shape, weight, eps=eps)

    @_rms_fwd.register_fake
    def _(x, normalized_shape, weight, eps):
        return (_like(x), *_row_stats(x, normalized_shape, 1))

    @op("fusedtrain::layer_norm_backward", mutates_args=())
    def _ln_bwd(dy: _T, x: _T, normalized_shape: List[int], mean: _T, rstd: _T, weight: _OT,
                weight_grads: bool, bias_grads: bool) -> Tuple[_T, _T, _T]:
        dx, dw, db = ft.layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight,
                                            weight_grads=weight_grads, bias_grads=bias_grads)
        return dx, _or_absent(dw, x), _or_absent(db, x)

    @_ln_bwd.register_fake
    def _(dy, x, normalized_shape, mean, rstd, weight, weight_grads, bias_grads):
        return (_like(x), _fake_weight_grad(x, weight, weight_grads),
                _fake_weight_grad(x, weight, weight_grads and bias_grads))

    @op("fusedtrain::rms_norm_backward", mutates_args=())
    def _rms_bwd(dy: _T, x: _T, normalized_shape: List[int], rstd: _T, weight: _OT,
                 weight_grads: bool) -> Tuple[_T, _T]:
        dx, dw = ft.rms_norm_backward(dy, x, normalized_shape, rstd, weight, weight_grads=weight_grads)
        return dx, _or_absent(dw, x)

    @_rms_bwd.register_fake
    def _(dy, x, normalized_shape, rstd, weight, weight_grads):
        return _like(x), _fake_weight_grad(x, weight, weight_grads)

    @op("fusedtrain::group_norm_forward", mutates_args=())
    def _gn_fwd(x: _T, num_groups: int, weight: _OT, bias: _OT, eps: float,
                channels_last: bool) -> Tuple[_T, _T, _T]:
        return ft.group_norm_forward(x, num_groups, weight, bias, eps=eps, channels_last=channels_last)

    @_gn_fwd.register_fake
    def _(x, num_groups, weight, bias, eps, channels_last):
        return (_like(x), *_channel_stats(x, (x.shape[0], num_groups)))

    @op("fusedtrain::group_norm_backward", mutates_args=())
    def _gn_bwd(dy: _T, x: _T, num_groups: int, mean: _T, rstd: _T, weight: _OT, channels_last: bool,
                weight_grads: bool) -> Tuple[_T, _T, _T]:
        dx, dw, db = ft.group_norm_backward(dy, x, num_groups, mean, rstd, weight,
                                            channels_last=channels_last, weight_grads=weight_grads)
        return dx, _or_absent(dw, x), _or_absent(db, x)

    @_gn_bwd.register_fake
    def _(dy, x, num_groups, mean, rstd, weight, channels_last, weight_grads):
        dw = _fake_weight_grad(x, weight, weight_grads)
        return _like(x), dw, _like(dw)

    @op("fusedtrain::instance_norm", mutates_args=("running_mean", "running_var"))
    def _in(x: _T, running_mean: _OT, running_var: _OT, weight: _OT, bias: _OT, use_input_stats: bool,
            momentum: float, eps: float, channels_last: bool) -> Tuple[_T, _T, _T]:
        return ft.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats=use_input_stats,
                                momentum=momentum, eps=eps, channels_last=channels_last)

    @_in.register_fake
    def _(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, channels_last):
        return (_like(x), *_channel_stats(x, (x.shape[0], _channels(x, channels_last))))

    @op("fusedtrain::batch_norm_forward", mutates_args=("running_mean", "running_var"))
    def _bn_fwd(x: _T, weight: _OT, bias: _OT, running_mean: _OT, running_var: _OT, training: bool,
                momentum: float, eps: float, channels_last: bool) -> Tuple[_T, _T, _T]:
        return ft.batch_norm_forward(x, weight, bias, running_mean, running_var, training=training,
                                     momentum=momentum, eps=eps, channels_last=channels_last)

    @_bn_fwd.register_fake
    def _(x, weight, bias, running_mean, running_var, training, momentum, eps, channels_last):
        return (_like(x), *_channel_stats(x, (_channels(x, channels_last),)))

    @op("fusedtrain::batch_norm_backward", mutates_args=())
    def _bn_bwd(dy: _T, x: _T, weight: _OT, save_mean: _T, save_invstd: _T, channels_last: bool,
                input_grad: bool) -> Tuple[_T, _T, _T]:
        dx, dw, db = ft.batch_norm_backward(dy, x, weight, save_mean, save_invstd,
                                            channels_last=channels_last, input_grad=input_grad)
        return _or_absent(dx, x), _or_absent(dw, x), _or_absent(db, x)

    @_bn_bwd.register_fake
    def _(dy, x, weight, save_mean, save_invstd, channels_last, input_grad):
        return ((_like(x) if input_grad else _absent(x)), _fake_weight_grad(x, weight, True),
                _fake_weight_grad(x, weight, True))

    OPS = [_ln_fwd, _rms_fwd, _ln_bwd, _rms_bwd, _gn_fwd, _gn_bwd, _in, _bn_fwd, _bn_bwd]


def _present(t, present):
    return t if present else None


class _Traced:
    """``ft``'s normalization functions, the same arguments, through the operators."""

    @staticmethod
    def layer_norm_forward(x, normalized_shape, weight=None, bias=None, *, eps=1e-5):
        return _ln_fwd(x, list(normalized_shape), weight, bias, eps)

    @staticmethod
    def rms_norm_forward(x, normalized_shape, weight=None, *, eps=None):
        return _rms_fwd(x, list(normalized_shape), weight, eps)

    @staticmethod
    def layer_norm_backward(dy, x, normalized_shape, mean, rstd, weight=None, *, weight_grads=True,
                            bias_grads=True):
        dx, dw, db = _ln_bwd(dy, x, list(normalized_shape), mean, rstd, weight, weight_grads, bias_grads)
        wg = weight is not None and weight_grads
        return dx, _present(dw, wg), _present(db, wg and bias_grads)

    @staticmethod
    def rms_norm_backward(dy, x, normalized_shape, rstd, weight=None, *, weight_grads=True):
        dx, dw = _rms_bwd(dy, x, list(normalized_shape), rstd, weight, weight_grads)
        return dx, _present(dw, weight is not None and weight_grads)

    @staticmethod
    def group_norm_forward(x, num_groups, weight=None, bias=None, *, eps=1e-5, channels_last=False):
        return _gn_fwd(x, num_groups, weight, bias, eps, channels_last)

    @staticmethod
    def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, channels_last=False,
                            weight_grads=True):
        dx, dw, db = _gn_bwd(dy, x, num_groups, mean, rstd, weight, channels_last, weight_grads)
        wg = weight is not None and weight_grads
        return dx, _present(dw, wg), _present(db, wg)

    @staticmethod
    def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                      use_input_stats=True, momentum=0.1, eps=1e-5, channels_last=False):
        return _in(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                   channels_last)

    @staticmethod
    def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, *,
                           training=True, momentum=0.1, eps=1e-5, channels_last=False):
        return _bn_fwd(x, weight, bias, running_mean, running_var, training, momentum, eps,
                       channels_last)

    @staticmethod
    def batch_norm_backward(dy, x, weight, save_mean, save_invstd, *, channels_last=False,
                            input_grad=True):
        dx, dw, db = _bn_bwd(dy, x, weight, save_mean, save_invstd, channels_last, input_grad)
        return _present(dx, input_grad), _present(dw, weight is not None), _present(db, weight is not None)
