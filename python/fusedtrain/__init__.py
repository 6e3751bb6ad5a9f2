"""fusedtrain: fused optimizer update rules and training utilities, SIMD on CPU, CUDA on GPU.

Functional API (in place, multi-tensor, torch.optim semantics): sgd_, momentum_, adagrad_,
rmsprop_, adadelta_, adam_, adamw_; utilities global_norm, clip_grad_norm_, ema_.
Batch norm (torch.nn.functional.batch_norm semantics): batch_norm_forward, batch_norm_backward,
batch_norm_stats, merge_stats, update_running_stats_, RunningStats.
Classes: ft.optim (optimizers owning their state, NumPy/CuPy), ft.schedules (learning rates),
ft.torch (torch.optim drop-ins; imported on first access, so torch stays optional).
"""
from .functional import (adadelta_, adagrad_, adam_, adamw_, momentum_, rmsprop_, sgd_)
from .utils import clip_grad_norm_, ema_, global_norm
from .batch_norm import (RunningStats, batch_norm_backward, batch_norm_forward, batch_norm_stats,
                         merge_stats, update_running_stats_)
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
    "info", "set_num_threads", "get_num_threads", "set_cpu_isa", "get_cpu_isa", "__version__",
    "optim", "schedules",
]
