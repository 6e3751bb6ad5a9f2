"""PyTorch integration: torch.optim drop-ins, BatchNorm, SyncBatchNorm, LayerNorm, RMSNorm,
GroupNorm and InstanceNorm modules over fusedtrain's kernels.

Imported only on first access to ``fusedtrain.torch``: ``import fusedtrain`` never imports torch.
"""
import importlib.util

from . import optimizers as _optimizers
from .fullbatch import LBFGS, ConjugateGradient

# The optimizer drop-ins, one per entry of the rule table (Note [rule table] in _optim_rules.py).
globals().update({name: getattr(_optimizers, name) for name in _optimizers.__all__})
__all__ = [*_optimizers.__all__, "LBFGS", "ConjugateGradient"]

# BatchNorm modules: batch_norm.py (the BatchNorm part of issue 5). Imported when the file
# exists, so a real error inside it is not hidden.
if importlib.util.find_spec(".batch_norm", __name__) is not None:
    from .batch_norm import BatchNorm1d, BatchNorm2d, BatchNorm3d  # noqa: F401
    __all__ += ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]

from .layer_norm import (GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,  # noqa: E402
                         LayerNorm, RMSNorm)
__all__ += ["LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
            "InstanceNorm3d"]

# SyncBatchNorm needs torch.distributed, which some torch builds leave out.
import torch.distributed as _dist  # noqa: E402
if _dist.is_available():
    from .sync_batch_norm import SyncBatchNorm  # noqa: F401
    __all__ += ["SyncBatchNorm"]
