"""DTensor arrays (torch.distributed.tensor; FSDP2's sharded parameters and their grads and
optimizer state): our kernels run on each rank's local shard.

Note [DTensor shards]:
- A DTensor is a wrapper without storage of its own: its data is the local shard, a plain
  tensor. The update rules are elementwise, so stepping every rank's shards steps the whole
  tensor: the rule calls take the lists' local shards and make one fused call, as for plain
  tensors. A list is all DTensors or none (an index that breaks this raises TypeError).
- A norm is not elementwise: the local shards' norm is our kernel's, and the ranks' parts are
  combined by ONE all_reduce (SUM of ``norm**p``, MAX for ``inf``) over the process group of
  the mesh dimension the tensors are sharded on, as ``torch.nn.utils.clip_grad_norm_`` does
  for DTensors. Replicated tensors need none. The tensors must share their mesh and be sharded
  on the same single mesh dimension (FSDP2: ``Shard(0)`` on a 1-d mesh; HSDP:
  ``(Replicate(), Shard(0))``); ``Partial`` placements (unreduced sums) are refused.
- ``max_grad_norm`` of a rule call on DTensors is that global norm (of the grads divided by
  ``grad_scale``, read on the host), folded into ``grad_scale``: every rank clips by the same
  coefficient.
- Detecting a DTensor looks at the type's name and module only, so that plain NumPy/CuPy calls
  never import torch; a rule call looks at the first param and grad only.
"""
import math


def is_dtensor(x):
    t = type(x)
    return t.__name__ == "DTensor" and t.__module__.startswith("torch.distributed")


def leads_with_dtensor(*lists):
    """Whether the first element of any of the lists is a DTensor (the rest is checked by
    :func:`local_shards`)."""
    return any(isinstance(a, (list, tuple)) and a and is_dtensor(a[0]) for a in lists)


def local_shards(fn, name, arrays):
    """The local shards of a list of DTensors (None stays None)."""
    if arrays is None:
        return None
    out = []
    for i, a in enumerate(arrays):
        if not is_dtensor(a):
            raise TypeError(f"{fn}: {name}[{i}] is a {type(a).__name__}, but {name} holds "
                            f"DTensors: pass DTensors everywhere or plain tensors everywhere")
        # _local_tensor is the shard itself; to_local() returns the same storage through an
        # autograd function, which costs microseconds per tensor.
        local = getattr(a, "_local_tensor", None)
        out.append(local if local is not None else a.to_local())
    return out


def _shard_group(fn, name, arrays):
    """The process group the DTensors are sharded over, or None when replicated."""
    mesh, dims = arrays[0].device_mesh, None
    for i, a in enumerate(arrays):
        if a.device_mesh != mesh:
            raise ValueError(f"{fn}: {name}[{i}] lives on another device mesh than {name}[0]")
        if any(p.is_partial() for p in a.placements):
            raise ValueError(f"{fn}: {name}[{i}] has a Partial placement (unreduced values); "
                             f"redistribute it first")
        sharded = tuple(d for d, p in enumerate(a.placements) if p.is_shard())
        if dims is None:
            dims = sharded
        elif sharded != dims:
            raise ValueError(f"{fn}: {name}[{i}] is sharded over mesh dimensions {sharded} but "
                             f"{name}[0] over {dims}")
    if len(dims) > 1:
        raise ValueError(f"{fn}: {name} are sharded over mesh dimensions {dims}; one all-reduce "
                         f"covers one dimension")
    return mesh.get_group(dims[0]) if dims else None


def global_norm(fn, name, arrays, norm_type, stream=None):
    """The norm of all DTensors together, across ranks; returns (norm, local shards)."""
    shards = local_shards(fn, name, arrays)
    return _norm(fn, name, arrays, shards, norm_type, stream), shards


def _norm(fn, name, arrays, shards, norm_type, stream):
    from . import _C, _distributed
    from ._streams import launch_stream
    group = _shard_group(fn, name, arrays) if arrays else None
    local = _C.global_norm(shards, norm_type, launch_stream(shards, stream))
    return local if group is None else _distributed.all_reduce_norm(local, norm_type, group)


def clip_grad_norm_(fn, grads, max_norm, norm_type, stream=None):
    from .utils import _clip_coefficient
    total, shards = global_norm(fn, "grads", grads, norm_type, stream)
    coef = _clip_coefficient(max_norm, total)
    if coef < 1.0 and shards:
        import torch
        torch._foreach_mul_(shards, coef)
    return total


def rule_lists(fn, params, grads, states, common):
    """A rule call's lists on the local shards, ``max_grad_norm`` turned into ``grad_scale``.
    Every list is checked before the norm's collective."""
    local_params = local_shards(fn, "params", params)
    local_grads = local_shards(fn, "grads", grads)
    states = [local_shards(fn, f"states[{k}]", s) for k, s in enumerate(states)]
    common = dict(common, master_params=local_shards(fn, "master_params",
                                                     common["master_params"]))
    max_norm, common["max_grad_norm"] = common["max_grad_norm"], None
    if max_norm is not None:
        from . import _checks as chk
        from .utils import _clip_coefficient
        max_norm = chk.at_least(fn, "max_grad_norm", max_norm)
        norm = _norm(fn, "grads", grads, local_grads, 2.0, common["stream"])
        scale = common["grad_scale"]
        scale = 1.0 if scale is None else float(scale)  # a 1-element array is read here
        coef = _clip_coefficient(max_norm, norm / scale if scale else math.inf)
        if coef < 1.0:
            common["grad_scale"] = scale / coef if coef > 0 else math.inf
    return local_params, local_grads, states, common
