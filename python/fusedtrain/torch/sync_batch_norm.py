"""torch.nn.SyncBatchNorm on fusedtrain's kernels, on CPU (gloo) as well as CUDA (NCCL).

Batch norm over the batch of all ranks of a process group: each rank holds a slice of the
batch, and every rank normalizes with the mean and variance of the whole batch, as one process
with the concatenated batch would. torch.distributed moves the statistics; the statistics, the
merge and the normalization are ours.

Note [synchronized batch norm]:
- Forward (training, more than one rank): the local per-channel (mean, biased var, count) by
  our statistics kernel, written in float64 straight into the send row; ONE all_gather of the
  rows; Chan's merge of the rows where they are (stable when |mean| >> std, and no wait for
  the GPU: Note [merge on the device] in fusedtrain/_distributed.py); the running statistics
  updated with the global unbiased variance ``var * M / (M - 1)``, M the global count (read on
  the device: Note [device count]); then the normalization with the global statistics, which
  is our evaluation-mode forward kernel.
- Backward: ONE all_reduce (SUM) of the packed per-channel ``[sum dy, sum dy * xhat]``
  (float64), taken where x needs a gradient (as torch does: all ranks share the model, so all
  agree). The backward runs in two halves (Note [given sums] in csrc/core/norm_args.h): our
  kernel takes this rank's sums (one pass over dy and x), and after the all_reduce computes
  ``dx = w * invstd * (dy - s / M - xhat * t / M)`` from the group's sums ``s, t`` and count
  ``M`` (one pass more), as one process with the whole batch would.
- ``weight.grad`` / ``bias.grad`` are this rank's sums, like torch's SyncBatchNorm: data
  parallelism (DDP) adds them across ranks with the other parameters' gradients.
- A rank with an empty slice takes part in both collectives (count 0: its row is ignored by
  the merge, its sums are zero) and gets an empty ``dx`` and zero weight/bias gradients (zeros,
  not None, so DDP's gradient hooks fire on every rank).
- Evaluation mode, one rank, or no process group: no collective, the local batch norm of
  ``ft.torch.BatchNorm*d``.

Note [float32 mean residual]: for float32 (and half) input the kernels take the mean as
float32, whose rounding is 0.5 ulp(mean): 5e-4 at mean 1e4, a 5e-4 error on every normalized
value of unit variance. The merged mean is float64, so its residual ``r = mean64 - mean32`` is
known and folded back in per channel: the forward adds ``-r * invstd * w`` to the bias; the
backward's kernel xhat exceeds the float64 one by ``delta = r * invstd``, so this rank's
``sum dy * xhat`` loses ``delta * sum dy``, and the sum dy given for dx gains
``-delta * sum dy * xhat`` (``dy - s / M - (xhat + delta) * t / M`` is the kernel's form). The
results are those of the float64 mean (1e-7 relative at mean 1e4), where a float32 batch norm
on one process is off by 1e-4 there.
"""
import torch
import torch.distributed as dist

import fusedtrain as ft
from .. import _distributed
from ..batch_norm import _grad_sums_into, _stats_into
from ._norm_autograd import (_caller_layout, _grad_layout, _kernel_input, _needed,
                             once_differentiable)
from .batch_norm import batch_norm_step, local_batch_norm

__all__ = ["SyncBatchNorm"]

_FN = "SyncBatchNorm"


def _channels(x, channels_last):
    return x.shape[-1] if channels_last else x.shape[1]


def _per_channel(v, channels_last, ndim):
    """A (C,) vector shaped to broadcast over the kernel's layout of x."""
    return v if channels_last else v.view(1, -1, *([1] * (ndim - 2)))


def _weight64(weight, channels, device):
    """The affine weight as float64 (ones without one)."""
    if weight is None:
        return torch.ones(channels, dtype=torch.float64, device=device)
    return weight.detach().to(torch.float64)


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = BN(x) with the statistics of the whole group's batch (Note [synchronized batch
    norm])."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        x_in, cl = _kernel_input(x)
        C = _channels(x_in, cl)
        row, row_mean, row_var, row_count = _distributed.stats_row(C, x_in.device)
        local = _stats_into(x_in, row_mean, row_var, channels_last=cl, fn=_FN)
        row_count.fill_(local)
        g_mean, g_var, total = _distributed.merge_rows_in_place(row, C, group)
        if not total.is_cuda and float(total) <= 1:
            # Every rank sees the same total, so every rank raises. (On a GPU the check would
            # make the host wait for the device; as torch's SyncBatchNorm, it is not made.)
            raise ValueError(f"{_FN}: expected more than 1 value per channel when training, "
                             f"got {int(total)} over all ranks (input shape {tuple(x.shape)} "
                             f"here)")
        sdtype = torch.float64 if x_in.dtype == torch.float64 else torch.float32
        mean, var = g_mean.to(sdtype), g_var.to(sdtype)
        # Note [float32 mean residual]
        residual = g_mean - mean.to(torch.float64)
        w = _weight64(weight, C, x_in.device)
        shift = -residual * w * torch.rsqrt(g_var + eps)
        if bias is not None:
            shift += bias.detach()
        y, save_mean, save_invstd = ft.batch_norm_forward(
            x_in, weight, shift.to(sdtype), mean, var, training=False, eps=eps,
            channels_last=cl)
        if running_mean is not None:
            ft.update_running_stats_(running_mean, running_var, g_mean, g_var, total,
                                     momentum=momentum)
        ctx.save_for_backward(x_in, weight, save_mean, save_invstd, residual)
        ctx.cl, ctx.group, ctx.local, ctx.total = cl, group, local, total
        return _caller_layout(y, cl)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x_in, weight, mean, invstd, residual = ctx.saved_tensors
        cl, M = ctx.cl, ctx.local
        dy = _grad_layout(dy, x_in, cl)
        C = _channels(x_in, cl)
        # sums = [sum dy, sum dy * xhat] of this rank, float64.
        sums = torch.zeros(2, C, dtype=torch.float64, device=x_in.device)
        # xhat of the float64 mean = kernel's xhat - delta (Note [float32 mean residual]).
        delta = residual * invstd.to(torch.float64)
        if M > 0:
            _grad_sums_into(dy, x_in, mean, invstd, sums[1], sums[0], channels_last=cl)
            sums[1] -= delta * sums[0]
        needs = ctx.needs_input_grad
        dx = None
        if needs[0]:
            total = sums.clone()
            dist.all_reduce(total, group=ctx.group)
            if M > 0:
                # The group's count stays on the device (Note [merge on the device]): its sums
                # are rescaled there to this rank's count M, which the call is given.
                scaled = total * (M / ctx.total)
                given_dy = scaled[0] - delta * scaled[1]
                dx, _, _ = ft.batch_norm_backward(
                    dy, x_in, weight, mean, invstd, channels_last=cl,
                    sums=(given_dy, scaled[1], M))
            else:
                dx = torch.empty_like(x_in)
            dx = _caller_layout(dx, cl)
        grad_w = None if weight is None else sums[1].to(weight.dtype)
        grad_b = None if weight is None else sums[0].to(weight.dtype)
        return _needed(ctx, dx, grad_w, grad_b) + (None,) * 5


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` on fusedtrain kernels, for CPU tensors over gloo as well as
    CUDA tensors over NCCL (Note [synchronized batch norm]).

    Same arguments (``process_group`` included: None synchronizes over the default group),
    parameters, buffers and ``state_dict()``; input ``(N, C, *spatial)``, either memory format.
    In training with more than one rank in the group, the statistics are those of the batch
    of all ranks together; ranks may hold different batch sizes, an empty one included.
    """

    def forward(self, input):
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{_FN}: input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() < 2:
            raise ValueError(f"{_FN}: expected at least 2D input (N, C, ...), got "
                             f"{input.dim()}D input")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{_FN}: input has {input.shape[1]} channels (dimension 1) but "
                             f"num_features is {self.num_features}")
        if not input.is_floating_point():
            raise TypeError(f"{_FN}: input must be a floating-point tensor, got {input.dtype}")
        running_mean, running_var, use_batch_stats, factor = batch_norm_step(self)
        group = self._ft_sync_group() if self.training else None
        if group is None:
            return local_batch_norm(self, input, running_mean, running_var, use_batch_stats,
                                    factor)
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean,
                                            running_var, factor, self.eps, group)

    def _ft_sync_group(self):
        """The group to synchronize over in training, or None for a local batch norm."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD if self.process_group is None else self.process_group
        # A rank outside the group (size -1) or a group of one has nobody to ask.
        return group if dist.get_world_size(group) > 1 else None

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replaces every BatchNorm*d of ``module`` (torch's, ours, SyncBatchNorm) by this
        class, sharing its parameters and buffers; returns ``module`` (or the new layer when
        ``module`` is itself a batch norm). ``process_group`` scopes the synchronization
        (None: the default group).

        On CPU, DDP refuses a model holding any ``torch.nn.SyncBatchNorm`` at construction:
        convert after wrapping, ``convert_sync_batchnorm(ddp_model)`` (the layers keep the
        very parameters DDP registered).
        """
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"convert_sync_batchnorm: module must be a torch.nn.Module, got "
                            f"{type(module).__name__}")
        return _convert(cls, module, process_group)


def _convert(cls, module, group):
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        if isinstance(module.running_mean, torch.nn.parameter.UninitializedBuffer) or \
                isinstance(module.weight, torch.nn.parameter.UninitializedParameter):
            raise ValueError(f"convert_sync_batchnorm: {type(module).__name__} is not "
                             f"initialized yet; run one forward before converting")
        extra = {} if not module.affine or module.bias is not None else {"bias": False}
        out = cls(module.num_features, module.eps, module.momentum, module.affine,
                  module.track_running_stats, group, **extra)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, _convert(cls, child, group))
    return out
