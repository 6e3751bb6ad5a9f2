"""fusedtrain: fused optimizer update rules and training utilities, SIMD on CPU, CUDA on GPU.

Functional API (in place, multi-tensor, torch.optim semantics): sgd_, momentum_, adagrad_,
rmsprop_, adadelta_, adam_, adamw_, lion_, nadam_; utilities global_norm, clip_grad_norm_, ema_.
Batch norm (torch.nn.functional.batch_norm semantics): batch_norm_forward, batch_norm_backward,
batch_norm_stats, merge_stats, update_running_stats_, RunningStats.
Layer, RMS, group and instance norm (torch.nn.functional semantics): layer_norm_forward/backward,
rms_norm_forward/backward, group_norm_forward/backward, instance_norm.
Classes: ft.optim (optimizers owning their state, NumPy/CuPy), ft.schedules (learning rates),
ft.torch (torch.optim drop-ins; imported on first access, so torch stays optional).
"""
from .functional import (adadelta_, adagrad_, adam_, adamw_, momentum_, rmsprop_, sgd_)
from . import functional as _functional
from .utils import clip_grad_norm_, ema_, global_norm
from .batch_norm import (RunningStats, batch_norm_backward, batch_norm_forward, batch_norm_stats,
                         merge_stats, update_running_stats_)
from .layer_norm import (group_norm_backward, group_norm_forward, instance_norm,
                         layer_norm_backward, layer_norm_forward, rms_norm_backward,
                         rms_norm_forward)
from .runtime import (__version__, get_cpu_isa, get_num_threads, info, set_cpu_isa,
                      set_num_threads)
from . import optim, schedules


def __getattr__(name):
    # ft.torch imports torch, so it loads on first access only.
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "sgd_", "momentum_", "adagrad_", "rmsprop_", "adadelta_", "adam_", "adamw_",
    "global_norm", "clip_grad_norm_", "ema_",
    "batch_norm_forward", "batch_norm_backward", "batch_norm_stats", "merge_stats",
    "update_running_stats_", "RunningStats",
    "layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward",
    "group_norm_forward", "group_norm_backward", "instance_norm",
    "info", "set_num_threads", "get_num_threads", "set_cpu_isa", "get_cpu_isa", "__version__",
    "optim", "schedules",
]
# The rules generated from the rule table (Note [rule table] in _optim_rules.py).
for _fn in _functional.GENERATED:
    globals()[_fn] = getattr(_functional, _fn)
    if _fn not in __all__:
        __all__.insert(__all__.index("global_norm"), _fn)
del _fn
