"""Layout and gradient plumbing shared by the autograd Functions of the normalization modules."""
import functools

import torch

from ._traced import is_compiling, kernels


class _Unrecorded:
    """The ctx of a forward that autograd does not record: what it saves is dropped."""
    __slots__ = ()

    def save_for_backward(self, *tensors):
        pass

    def __setattr__(self, name, value):
        pass


_UNRECORDED = _Unrecorded()


# torch.func's transforms (vmap, grad, jacrev, jvp, functionalize) are active: the arguments may
# be their wrapper tensors.  Where torch lacks the check, never.
_func_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)
_FORWARD_AD = torch.autograd.forward_ad   # a dual level is entered: _current_level >= 0
_jit_tracing = getattr(torch._C, "_is_tracing", torch.jit.is_tracing)
_PLAIN_DISPATCH = torch.Tensor.__torch_dispatch__
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _kernels_take(x):
    """Whether x is memory our kernels can read (Note [torch's op where the kernels cannot
    go]): a tensor (not torch.fx's Proxy of symbolic tracing), not a subclass that overrides
    __torch_dispatch__ (a DTensor, a FakeTensor), not meta, not nested."""
    t = type(x)
    if t not in _PLAIN_TYPES and (
            not isinstance(x, torch.Tensor) or
            getattr(t, "__torch_dispatch__", _PLAIN_DISPATCH) is not _PLAIN_DISPATCH):
        return False
    return not (x.is_meta or x.is_nested)


def apply(function, *args):
    """``function.apply(*args)`` where autograd has a graph to record, else ``function``'s
    forward alone.  Note [eager apply]: with grad mode off (``no_grad``, ``inference_mode``) or
    no tensor argument requiring grad, autograd.Function's own host work (about 5 us a call on
    the 2-core VM, as much as torch's whole LayerNorm forward) buys nothing.  While
    torch.compile traces, always the Function, which its tracer follows (Note [traced kernels]).

    Note [torch's op where the kernels cannot go]: some inputs are not memory our kernels can
    read, and torch.nn's modules take them all the same: under torch.func's vmap, grad, jacrev
    or jvp the tensors are the transforms' wrappers (a vmapped x is a batched tensor whose batch
    dimension our kernels would never see), and a transform asks an autograd.Function for rules
    of its own (vmap, jvp) that opaque kernels cannot give, as does forward-mode AD
    (``torch.autograd.forward_ad``'s dual tensors); a DTensor (tensor parallelism) or a
    FakeTensor (shape propagation outside torch.compile) dispatches its ops itself; a meta
    tensor (deferred initialization) has no data, a nested tensor no one shape; and
    ``torch.jit.trace`` (TorchScript, the ONNX exporter's tracing path) records torch ops only,
    so a call of our kernels would enter its graph as the empty output tensors, and
    ``torch.fx.symbolic_trace`` passes Proxy objects, which are no memory at all.  For those the
    modules compute with torch's functional op of the same arguments (``function.torch_forward``),
    so a model built from them runs as one built from torch.nn does, with torch's results, at
    torch's speed.  Plain tensors of any device go to our kernels."""
    if _func_transforms_active() or getattr(_FORWARD_AD, "_current_level", -1) >= 0:
        return function.torch_forward(*args)
    if is_compiling():
        return function.apply(*args)
    if _jit_tracing() or not _kernels_take(args[0]):   # (Dynamo cannot trace the first)
        return function.torch_forward(*args)
    if torch.is_grad_enabled():
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                return function.apply(*args)
    return function.forward(_UNRECORDED, *args)


def once_differentiable(backward):
    """``torch.autograd.function.once_differentiable`` for a Function's backward.  Note
    [backward grad mode]: autograd runs a backward with grad mode off unless the caller asked
    for a graph of the gradient (``create_graph=True``); torch's decorator enters
    ``torch.no_grad()`` all the same, about 1.2 us on the 2-core VM, a tenth of a small layer's
    backward.  With grad mode off the backward runs as it is; with it on, through torch's
    decorator (its no_grad and its error on a second differentiation)."""
    guarded = torch.autograd.function.once_differentiable(backward)

    @functools.wraps(backward)
    def run(ctx, *grads):
        if torch.is_grad_enabled():
            return guarded(ctx, *grads)
        return backward(ctx, *grads)
    return run


def kernel_backward(backward):
    """The backward of a normalization Function: our kernels, or, where the gradient itself is
    to be differentiated, torch's ops.

    Note [double backward]: a gradient penalty (WGAN-GP, R1), a Hessian-vector product or a
    second-order meta-learning step differentiates the gradient: autograd then runs the backward
    with grad mode on (``create_graph=True``) and needs a graph from its results back to x,
    weight and the output grad.  Our kernels leave none: dx would be a constant, and a penalty on
    it would train on a gradient that silently misses every path through this layer.  torch.nn's
    norm layers are twice differentiable, so there the backward recomputes the forward with the
    Function's ``torch_recompute`` (torch's functional op of the same inputs, running statistics
    left alone) and differentiates that with ``create_graph=True``: torch's gradients, and
    their graph.  The inputs are kept on ctx (``ctx.inputs``) by the forward for this (the
    caller's x: where the kernels read a contiguous copy of it, both stay alive until the
    backward); a plain backward (grad mode off, every ordinary training step) runs our kernels
    as before."""

    @functools.wraps(backward)
    def run(ctx, *grads):
        if torch.is_grad_enabled():
            return _differentiable_backward(ctx, grads)
        return backward(ctx, *grads)
    return run


def _differentiable_backward(ctx, grads):
    """The input grads of ctx's Function through torch's ops, with their graph (Note [double
    backward])."""
    ctx.saved_tensors   # autograd's check that none was modified in place since the forward
    args = ctx.inputs
    wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
    with torch.enable_grad():
        y = type(ctx)._forward_cls.torch_recompute(*args)
        got = torch.autograd.grad(y, [args[i] for i in wanted], grads, create_graph=True,
                                  allow_unused=True)
    out = [None] * len(args)
    for i, g in zip(wanted, got):
        out[i] = g
    return tuple(out)


def _channels_last_view(x):
    """x as the C-contiguous (N, *spatial, C) view of its own memory, or None if it is not laid
    out that way. A tensor contiguous both ways (C == 1, or all spatial sizes 1) takes the
    plain path."""
    if x.dim() < 3 or x.is_contiguous():
        return None
    view = x.permute(0, *range(2, x.dim()), 1)
    return view if view.is_contiguous() else None


def _kernel_input(x):
    """``(x_in, channels_last)``: x as the per-channel kernels read it: the (N, *spatial, C)
    view of a channels_last tensor (no copy), else contiguous (N, C, *spatial)."""
    view = _channels_last_view(x)
    channels_last = view is not None
    return view if channels_last else x.contiguous(), channels_last


def _caller_layout(t, channels_last):
    """A kernel result (y or dx) in the layout of the caller's x: for channels_last, the
    (N, C, *spatial) view of the (N, *spatial, C) tensor, which has channels_last strides."""
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)) if channels_last else t


def _grad_layout(dy, x_in, channels_last):
    """The output grad in the layout and dtype of the kernel's input ``x_in``."""
    # For a channels_last grad this permute-then-contiguous is a view; otherwise one copy.
    dy = (dy.permute(0, *range(2, dy.dim()), 1) if channels_last else dy).contiguous()
    return dy if dy.dtype == x_in.dtype else dy.to(x_in.dtype)


def _needed(ctx, *grads):
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


def _weight_grads(ctx):
    """Whether the backward must compute dweight / dbias: the weight or the bias (inputs 1 and 2
    of every normalization Function) requires grad.  A frozen affine (fine-tuning) skips them."""
    return ctx.needs_input_grad[1] or ctx.needs_input_grad[2]


def _per_channel_backward(ctx, dy, kernel_backward):
    """``(dx, dweight, dbias)``, None where not needed, of a per-channel normalization (batch,
    group, instance norm) whose forward took x through _kernel_input, saved
    ``(x_in, weight, mean, rstd)`` and set ``ctx.channels_last`` and ``ctx.input_stats``.

    With input statistics the gradient is ``kernel_backward(dy, x_in, weight, mean, rstd,
    channels_last=..., weight_grads=...)``; otherwise the statistics are constants, mean and rstd
    of shape (C,), and the gradient a per-channel scale."""
    x_in, weight, mean, rstd = ctx.saved_tensors
    cl = ctx.channels_last
    dy = _grad_layout(dy, x_in, cl)
    wg = _weight_grads(ctx)
    if ctx.input_stats:
        dx, dweight, dbias = kernel_backward(dy, x_in, weight, mean, rstd, channels_last=cl,
                                             weight_grads=wg)
    else:
        dx, dweight, dbias = _eval_backward(dy, x_in, weight, mean, rstd, cl, wg)
    return _needed(ctx, _caller_layout(dx, cl), dweight, dbias)


def _eval_backward(dy, x, weight, mean, invstd, channels_last, weight_grads):
    """y = (x - mean) * invstd * w + b with constant mean/invstd: dx = dy * w * invstd, and
    per channel dweight = sum(dy * xhat), dbias = sum(dy): batch norm's channel sums with the
    constant statistics, one fused pass of our kernels (``input_grad=False``) where torch ops
    took four; none without weight_grads (the frozen batch norm of fine-tuning)."""
    c_axis = x.dim() - 1 if channels_last else 1
    shape = [1] * x.dim()
    shape[c_axis] = x.shape[c_axis]
    scale = invstd if weight is None else invstd * weight.detach().to(invstd.dtype)
    dx = (dy.to(invstd.dtype) * scale.view(shape)).to(x.dtype)
    if weight is None or not weight_grads:
        return dx, None, None
    _, dweight, dbias = kernels().batch_norm_backward(dy, x, weight.detach(), mean, invstd,
                                                      channels_last=channels_last, input_grad=False)
    return dx, dweight, dbias
