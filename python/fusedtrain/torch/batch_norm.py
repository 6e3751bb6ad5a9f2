"""torch.nn.BatchNorm1d/2d/3d drop-ins whose forward and backward are fusedtrain's batch-norm kernels.

The modules subclass their torch namesakes, so arguments, parameters, buffers
(``running_mean``, ``running_var``, ``num_batches_tracked``), ``state_dict`` keys, ``repr`` and
``isinstance`` checks are torch's own; only the computation changes. Inputs in the
``torch.channels_last`` (``channels_last_3d``) memory format go to the kernels as the permuted
view ``(N, *spatial, C)`` with ``channels_last=True``: no copy, and the output keeps the format.
"""
import torch

import fusedtrain as ft


def _channels_last_view(x):
    """x as the C-contiguous (N, *spatial, C) view of its own memory, or None if it is not laid
    out that way. A tensor contiguous both ways (C == 1, or all spatial sizes 1) takes the
    plain path."""
    if x.dim() < 3 or x.is_contiguous():
        return None
    view = x.permute(0, *range(2, x.dim()), 1)
    return view if view.is_contiguous() else None


def _to_channels_first(y):
    """The (N, C, *spatial) view of an (N, *spatial, C) tensor: channels_last strides."""
    return y.permute(0, y.dim() - 1, *range(1, y.dim() - 1))


def _detached(t):
    return None if t is None else t.detach()


def _grad_layout(dy, x_in, channels_last):
    """The output grad in the layout and dtype of the kernel's input ``x_in``."""
    # For a channels_last grad this permute-then-contiguous is a view; otherwise one copy.
    dy = (dy.permute(0, *range(2, dy.dim()), 1) if channels_last else dy).contiguous()
    return dy if dy.dtype == x_in.dtype else dy.to(x_in.dtype)


class _BatchNormFunction(torch.autograd.Function):
    """y = BN(x) on our kernels; the backward is ours in training mode, a per-channel scale in
    evaluation mode (the statistics are constants there)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        view = _channels_last_view(x)
        channels_last = view is not None
        x_in = view if channels_last else x.contiguous()
        y, mean, invstd = ft.batch_norm_forward(
            x_in.detach(), _detached(weight), _detached(bias), running_mean, running_var,
            training=training, momentum=momentum, eps=eps, channels_last=channels_last)
        ctx.save_for_backward(x_in, weight, mean, invstd)
        ctx.training, ctx.channels_last = training, channels_last
        return _to_channels_first(y) if channels_last else y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x_in, weight, mean, invstd = ctx.saved_tensors
        cl = ctx.channels_last
        dy = _grad_layout(dy, x_in, cl)
        if ctx.training:
            dx, dweight, dbias = ft.batch_norm_backward(
                dy, x_in.detach(), _detached(weight), mean, invstd, channels_last=cl)
        else:
            dx, dweight, dbias = _eval_backward(dy, x_in.detach(), weight, mean, invstd, cl)
        if cl:
            dx = _to_channels_first(dx)
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, dweight if needs[1] else None,
                dbias if needs[2] else None, None, None, None, None, None)


def _eval_backward(dy, x, weight, mean, invstd, channels_last):
    """y = (x - mean) * invstd * w + b with constant mean/invstd: dx = dy * w * invstd,
    dweight = sum(dy * xhat), dbias = sum(dy), per channel."""
    c_axis = x.dim() - 1 if channels_last else 1
    shape = [1] * x.dim()
    shape[c_axis] = x.shape[c_axis]
    others = [d for d in range(x.dim()) if d != c_axis]
    scale = invstd if weight is None else invstd * weight.detach().to(invstd.dtype)
    dyf = dy.to(invstd.dtype)
    dx = (dyf * scale.view(shape)).to(x.dtype)
    if weight is None:
        return dx, None, None
    xhat = (x.to(invstd.dtype) - mean.view(shape)) * invstd.view(shape)
    dweight = (dyf * xhat).sum(dim=others).to(weight.dtype)
    dbias = dyf.sum(dim=others).to(weight.dtype)
    return dx, dweight, dbias


def batch_norm_step(module):
    """torch's _BatchNorm.forward bookkeeping: counts the batch (num_batches_tracked) and
    returns ``(running_mean, running_var, use_batch_stats, factor)`` for this forward, the
    running statistics None where they are neither used nor updated."""
    factor = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:
            # Cumulative moving average: the k-th batch gets weight 1/k.
            factor = 1.0 / float(module.num_batches_tracked)
    # Batch statistics in training, and in eval mode when no running statistics are kept.
    use_batch_stats = module.training or (module.running_mean is None and
                                          module.running_var is None)
    keep = not module.training or module.track_running_stats
    return (module.running_mean if keep else None, module.running_var if keep else None,
            use_batch_stats, factor)


def local_batch_norm(module, input, running_mean, running_var, use_batch_stats, factor):
    """BN of this process's input alone, on our kernels."""
    return _BatchNormFunction.apply(input, module.weight, module.bias, running_mean,
                                    running_var, use_batch_stats, factor, module.eps)


class _FusedForward:
    """torch's _BatchNorm.forward bookkeeping (num_batches_tracked, momentum=None as a
    cumulative average, when batch statistics are used) with our kernels underneath."""

    def forward(self, input):
        self._check_input_dim(input)
        return local_batch_norm(self, input, *batch_norm_step(self))


class BatchNorm1d(_FusedForward, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on fusedtrain kernels: input (N, C) or (N, C, L)."""


class BatchNorm2d(_FusedForward, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on fusedtrain kernels: input (N, C, H, W), either memory format."""


class BatchNorm3d(_FusedForward, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on fusedtrain kernels: input (N, C, D, H, W), either memory format."""
