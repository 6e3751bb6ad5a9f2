"""Float64 NumPy reference of every fusedtrain rule and utility: the readable spec and the test oracle.

Same names and signatures as the public API. Arrays are updated in place; state and master
copies are float64, params float64 or half (rounded to their dtype when stored), and every
rule follows torch.optim's single-tensor (foreach=False) code order, so trajectories can be
compared step by step with both the kernels and torch.
"""

from .adadelta import adadelta_
from .adagrad import adagrad_
from .adam import adam_, adamw_
from .batch_norm import (batch_norm_backward, batch_norm_forward, batch_norm_stats,
                         merge_stats, update_running_stats_)
from .ema import ema_
from .fullbatch import LBFGS, ConjugateGradient
from .lion import lion_
from .nadam import nadam_
from .layer_norm import (group_norm_backward, group_norm_forward, instance_norm,
                         layer_norm_backward, layer_norm_forward, rms_norm_backward,
                         rms_norm_forward)
from .norms import clip_grad_norm_, global_norm
from .rmsprop import rmsprop_
from .sgd import momentum_, sgd_

__all__ = ["sgd_", "momentum_", "adagrad_", "rmsprop_", "adadelta_", "adam_", "adamw_", "lion_", "nadam_",
           "global_norm", "clip_grad_norm_", "ema_",
           "batch_norm_forward", "batch_norm_backward", "batch_norm_stats", "merge_stats",
           "update_running_stats_", "LBFGS", "ConjugateGradient",
           "layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward",
           "group_norm_forward", "group_norm_backward", "instance_norm"]
