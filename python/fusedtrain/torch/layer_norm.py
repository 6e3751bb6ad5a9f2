"""torch.nn.LayerNorm, RMSNorm, GroupNorm and InstanceNorm1d/2d/3d drop-ins whose forward and
backward are fusedtrain's kernels.

The modules subclass their torch namesakes, so arguments, parameters, buffers, ``state_dict``
keys, ``repr`` and ``isinstance`` checks are torch's own; only the computation changes, through
an ``autograd.Function``. GroupNorm and InstanceNorm inputs in the ``torch.channels_last``
(``channels_last_3d``) memory format go to the kernels as the permuted view ``(N, *spatial, C)``
with ``channels_last=True``: no copy, and the output keeps the format.
"""
import torch

from ._norm_autograd import (_caller_layout, _grad_layout, _kernel_input, _needed,
                             _per_channel_backward, _weight_grads, apply, kernel_backward)
from ._traced import kernels


class _LayerNormFunction(torch.autograd.Function):
    """y = LayerNorm(x) or RMSNorm(x) (rms=True, bias None) on our kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape, eps, rms):
        x_in = x.contiguous()
        if rms:
            y, rstd = kernels().rms_norm_forward(x_in, normalized_shape, weight, eps=eps)
            mean = None
        else:
            y, mean, rstd = kernels().layer_norm_forward(x_in, normalized_shape, weight, bias,
                                                         eps=eps)
        ctx.save_for_backward(x_in, weight, mean, rstd)
        ctx.normalized_shape, ctx.rms = normalized_shape, rms
        ctx.inputs = (x, weight, bias, normalized_shape, eps, rms)
        return y

    @staticmethod
    @kernel_backward
    def backward(ctx, dy):
        x_in, weight, mean, rstd = ctx.saved_tensors
        dy = _grad_layout(dy, x_in, False)
        wg = _weight_grads(ctx)
        k = kernels()
        if ctx.rms:
            dx, dweight = k.rms_norm_backward(dy, x_in, ctx.normalized_shape, rstd, weight,
                                              weight_grads=wg)
            dbias = None
        else:
            dx, dweight, dbias = k.layer_norm_backward(dy, x_in, ctx.normalized_shape, mean, rstd,
                                                       weight, weight_grads=wg,
                                                       bias_grads=ctx.needs_input_grad[2])
        return _needed(ctx, dx, dweight, dbias) + (None, None, None)

    @staticmethod
    def torch_forward(x, weight, bias, normalized_shape, eps, rms):
        """torch's op of the same arguments (Note [torch's op where the kernels cannot go])."""
        if rms:
            return torch.nn.functional.rms_norm(x, normalized_shape, weight, eps)
        return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)

    torch_recompute = torch_forward   # Note [double backward]: no state to leave alone


class _GroupNormFunction(torch.autograd.Function):
    """y = GroupNorm(x), or InstanceNorm(x) (instance=True: num_groups = C, torch's running
    statistics options), on our kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, instance, running_mean, running_var,
                use_input_stats, momentum):
        x_in, cl = _kernel_input(x)
        if instance:
            y, mean, rstd = kernels().instance_norm(x_in, running_mean, running_var, weight, bias,
                                                    use_input_stats=use_input_stats,
                                                    momentum=momentum, eps=eps, channels_last=cl)
        else:
            y, mean, rstd = kernels().group_norm_forward(x_in, num_groups, weight, bias, eps=eps,
                                                         channels_last=cl)
        ctx.num_groups, ctx.channels_last, ctx.input_stats = mean.shape[1], cl, use_input_stats
        ctx.inputs = (x, weight, bias, num_groups, eps, instance, running_mean, running_var,
                      use_input_stats, momentum)
        if not use_input_stats:
            # Every sample's row holds the same running statistics; the backward's per-channel
            # scale takes them as (C,) vectors.
            mean, rstd = mean[0], rstd[0]
        ctx.save_for_backward(x_in, weight, mean, rstd)
        return _caller_layout(y, cl)

    @staticmethod
    @kernel_backward
    def backward(ctx, dy):
        def group_norm_backward(dy, x_in, weight, mean, rstd, channels_last, weight_grads):
            return kernels().group_norm_backward(dy, x_in, ctx.num_groups, mean, rstd, weight,
                                                 channels_last=channels_last, weight_grads=weight_grads)
        return _per_channel_backward(ctx, dy, group_norm_backward) + (None,) * 7

    @staticmethod
    def torch_forward(x, weight, bias, num_groups, eps, instance, running_mean, running_var,
                      use_input_stats, momentum):
        """torch's op of the same arguments (Note [torch's op where the kernels cannot go])."""
        if instance:
            return torch.nn.functional.instance_norm(x, running_mean, running_var, weight, bias,
                                                     use_input_stats, momentum, eps)
        return torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)

    @staticmethod
    def torch_recompute(x, weight, bias, num_groups, eps, instance, running_mean, running_var,
                        use_input_stats, momentum):
        """torch_forward without updating the running statistics (Note [double backward])."""
        if use_input_stats:
            running_mean = running_var = None
        return _GroupNormFunction.torch_forward(x, weight, bias, num_groups, eps, instance,
                                                running_mean, running_var, use_input_stats,
                                                momentum)


def _group_norm(x, *args):
    """apply(_GroupNormFunction, x, *args), or torch's op where x has no values per group (a
    spatial size of 0 with samples and channels): the kernels refuse such input, torch.nn's
    GroupNorm and InstanceNorm return an empty output (and gradients torch's way)."""
    if isinstance(x, torch.Tensor) and x.numel() == 0 and x.dim() > 2 and x.shape[0] * x.shape[1]:
        return _GroupNormFunction.torch_forward(x, *args)
    return apply(_GroupNormFunction, x, *args)


class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm on fusedtrain kernels."""

    def forward(self, input):
        return apply(_LayerNormFunction, input, self.weight, self.bias, self.normalized_shape,
                                        self.eps, False)


class RMSNorm(torch.nn.RMSNorm):
    """torch.nn.RMSNorm on fusedtrain kernels (eps=None: the machine epsilon of the input's
    dtype, as torch)."""

    def forward(self, x):
        w = self.weight
        if isinstance(w, torch.Tensor) and w.dtype != x.dtype and w.dtype != torch.float32:
            # torch's rms_norm takes a weight of any float dtype, computing in the promoted
            # type and returning x's; the kernels take x's dtype or float32, which holds every
            # float16 / bfloat16 value exactly (a float64 weight rounds, as float32 math would).
            w = w.float()
        return apply(_LayerNormFunction, x, w, None, self.normalized_shape, self.eps, True)


class GroupNorm(torch.nn.GroupNorm):
    """torch.nn.GroupNorm on fusedtrain kernels: input (N, C, *), either memory format."""

    def forward(self, input):
        return _group_norm(input, self.weight, self.bias, self.num_groups, self.eps, False, None,
                           None, True, 0.0)


class _FusedInstanceNorm:
    """torch's _InstanceNorm.forward (input checks, unbatched input) with our kernels under
    F.instance_norm's options: input statistics in training or without tracked statistics,
    momentum None as 0."""

    def _apply_instance_norm(self, input):
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        return _group_norm(input, self.weight, self.bias, input.shape[1], self.eps, True,
                           self.running_mean, self.running_var, use_input_stats, momentum)


class InstanceNorm1d(_FusedInstanceNorm, torch.nn.InstanceNorm1d):
    """torch.nn.InstanceNorm1d on fusedtrain kernels: input (N, C, L) or (C, L)."""


class InstanceNorm2d(_FusedInstanceNorm, torch.nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d on fusedtrain kernels: input (N, C, H, W) in either memory
    format, or (C, H, W)."""


class InstanceNorm3d(_FusedInstanceNorm, torch.nn.InstanceNorm3d):
    """torch.nn.InstanceNorm3d on fusedtrain kernels: input (N, C, D, H, W) or (C, D, H, W)."""
