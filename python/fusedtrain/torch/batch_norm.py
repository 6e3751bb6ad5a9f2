"""torch.nn.BatchNorm1d/2d/3d drop-ins whose forward and backward are fusedtrain's batch-norm kernels.

The modules subclass their torch namesakes, so arguments, parameters, buffers
(``running_mean``, ``running_var``, ``num_batches_tracked``), ``state_dict`` keys, ``repr`` and
``isinstance`` checks are torch's own; only the computation changes. Inputs in the
``torch.channels_last`` (``channels_last_3d``) memory format go to the kernels as the permuted
view ``(N, *spatial, C)`` with ``channels_last=True``: no copy, and the output keeps the format.
"""
import torch

from ._norm_autograd import (_caller_layout, _kernel_input, _per_channel_backward, apply,
                             kernel_backward)
from ._traced import kernels


class _BatchNormFunction(torch.autograd.Function):
    """y = BN(x) on our kernels; the backward is ours in training mode, a per-channel scale in
    evaluation mode (the statistics are constants there)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        x_in, channels_last = _kernel_input(x)
        y, mean, invstd = kernels().batch_norm_forward(
            x_in, weight, bias, running_mean, running_var, training=training, momentum=momentum,
            eps=eps, channels_last=channels_last)
        ctx.save_for_backward(x_in, weight, mean, invstd)
        ctx.input_stats, ctx.channels_last = training, channels_last
        ctx.inputs = (x, weight, bias, running_mean, running_var, training, momentum, eps)
        return _caller_layout(y, channels_last)

    @staticmethod
    @kernel_backward
    def backward(ctx, dy):
        def batch_norm_backward(dy, x_in, weight, mean, invstd, channels_last, weight_grads):
            # The channel sums dx needs are dweight and dbias: weight_grads saves nothing here.
            return kernels().batch_norm_backward(dy, x_in, weight, mean, invstd,
                                                 channels_last=channels_last)
        return _per_channel_backward(ctx, dy, batch_norm_backward) + (None,) * 5

    @staticmethod
    def torch_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
        """torch's op of the same arguments (Note [torch's op where the kernels cannot go])."""
        return torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias,
                                              training, momentum, eps)

    @staticmethod
    def torch_recompute(x, weight, bias, running_mean, running_var, training, momentum, eps):
        """torch_forward without updating the running statistics (Note [double backward])."""
        if training:
            running_mean = running_var = None
        return torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias,
                                              training, momentum, eps)


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
    return apply(_BatchNormFunction, input, module.weight, module.bias, running_mean,
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
