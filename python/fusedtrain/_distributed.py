"""Per-channel statistics of all ranks of a torch.distributed process group, in one collective.

Shared by ``ft.torch.SyncBatchNorm`` (the batch statistics of every rank's slice of the batch)
and ``RunningStats.all_reduce`` (dataset statistics computed shard by shard). torch.distributed
moves the bytes; the merge is ours.

Note [one gather, Chan's merge]:
- Every rank sends one float64 row ``[mean (C), biased var (C), count]`` and receives all of
  them (one ``all_gather``), then merges the rows with Chan's rule (``merge_stats``) in rank
  order on the host. Every rank merges the same rows in the same order, so all ranks hold
  bitwise the same result.
- Why a gather and not an all-reduce: an all-reduce can only add, and the sums it could add
  (``count * mean``, ``count * (var + mean**2)``) lose the variance when |mean| >> std (at mean
  1e4 in float32 the square has no digits left for a unit variance); the stable sum needs the
  global mean first, a second round. The gathered rows are ``world * (2C + 1)`` numbers, small
  beside the activations.
- float64 rows whatever the input dtype: the local statistics are written there by the kernel
  in float64, counts stay exact far beyond float32's 2**24, and the merge sees no rounding of
  the means.
- A rank with no values sends count 0; merge_stats ignores its row, but it takes part in the
  collective, so the other ranks never wait for it.

Note [merge on the device]: a training step must not wait for the GPU, so synchronized batch
norm merges the gathered rows where the collective left them, in a few elementwise ops: with
``n_r`` the ranks' counts, ``M = sum n_r``, ``mean = sum (n_r / M) mean_r`` and
``var = sum (n_r / M) (var_r + (mean_r - mean)**2)``, Chan's merge of all rows at once (Chan,
Golub & LeVeque 1979, the k-way form). The deviations are taken from the merged mean itself,
so at |mean| >> std no digits cancel, as in the pairwise merge; every rank runs the same ops on
the same rows, so all hold the same result. The count stays on the device too: the running
statistics read it there (Note [device count]) and the backward divides its sums by it there.
"""
import math

import torch
import torch.distributed as dist

from .batch_norm import merge_stats


def default_group(fn, group):
    """``group`` (WORLD when None), checking that torch.distributed is up."""
    if not dist.is_available():
        raise RuntimeError(f"{fn}: torch.distributed is not available in this build of torch")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"{fn}: group must be a torch.distributed process group or None, got "
                        f"{type(group).__name__}")
    if not dist.is_initialized():
        raise RuntimeError(f"{fn}: torch.distributed has no default process group; call "
                           f"torch.distributed.init_process_group first")
    return dist.group.WORLD if group is None else group


def collective_device(group):
    """Where a collective of ``group`` takes its tensors: the current CUDA device for an
    NCCL-only group, the host for gloo/MPI (or a group with both, which routes CPU to gloo)."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def stats_row(channels, device):
    """A zeroed float64 send row ``[mean (C), var (C), count]`` and its three parts (views)."""
    row = torch.zeros(2 * channels + 1, dtype=torch.float64, device=device)
    return row, row[:channels], row[channels:2 * channels], row[2 * channels:]


def gather_rows(row, group):
    """Every rank's row of ``group``, stacked ``(world, 2C + 1)`` in rank order: ONE
    collective, on the row's device."""
    world = dist.get_world_size(group)
    rows = row.new_empty(world, row.numel())
    # The list form works on every backend (gloo has no single-tensor gather in older torch)
    # and is still one collective: the outputs are views of one buffer.
    dist.all_gather(list(rows.unbind(0)), row, group=group)
    return rows


def merge_rows(row, channels, group):
    """All ranks' rows of ``group`` gathered (ONE collective) and merged on the host: float64
    host tensors ``(mean, var)`` of the union of the ranks' values and its count (Note [one
    gather, Chan's merge])."""
    rows = gather_rows(row, group).cpu()   # a sync on CUDA: for dataset statistics, not a step
    return merge_stats(rows[:, :channels].contiguous(), rows[:, channels:2 * channels].contiguous(),
                       rows[:, 2 * channels].tolist())


def merge_rows_in_place(row, channels, group):
    """All ranks' rows of ``group`` gathered (ONE collective) and merged where they are, with
    no wait for the device: float64 tensors ``(mean, var, count)`` on the row's device, count
    of shape (1,) (Note [merge on the device])."""
    rows = gather_rows(row, group)
    C = channels
    counts = rows[:, 2 * C:]                                    # (world, 1)
    total = counts.sum(0)
    # An empty rank's row is all zeros (stats_row zeroes it; the statistics of no values are
    # 0, 0), so its share of 0 adds nothing.
    share = counts / total.clamp_min(1.0)
    means = rows[:, :C]
    mean = (share * means).sum(0)
    dev = means - mean
    var = (share * (rows[:, C:2 * C] + dev * dev)).sum(0)
    return mean, var, total


def all_reduce_arrays(mean, var, count, group):
    """NumPy float64 ``(mean, var)`` and a count merged over ``group``: NumPy float64
    ``(mean, var)`` and the total count, the same on every rank."""
    row, m, v, c = stats_row(mean.shape[0], collective_device(group))
    m.copy_(torch.from_numpy(mean))
    v.copy_(torch.from_numpy(var))
    c.fill_(float(count))
    g_mean, g_var, g_count = merge_rows(row, mean.shape[0], group)
    return g_mean.numpy(), g_var.numpy(), g_count


def all_reduce_norm(local, norm_type, group):
    """A p-norm from every rank's norm of its part: ONE all_reduce (SUM of ``norm**p``, MAX
    for ``inf``) on ``group``; the same float on every rank."""
    inf = math.isinf(norm_type)
    part = torch.tensor([local if inf else local ** norm_type], dtype=torch.float64,
                        device=collective_device(group))
    dist.all_reduce(part, op=dist.ReduceOp.MAX if inf else dist.ReduceOp.SUM, group=group)
    total = part.item()
    return total if inf else total ** (1.0 / norm_type)
