"""Type stubs of the extension module fusedtrain._C (use the fusedtrain package, not this)."""
from typing import Any, Optional, Sequence

Array = Any          # a NumPy array or an object with __dlpack__ / __cuda_array_interface__
Arrays = Sequence[Array]
Stream = Optional[int]

class SgdOptions:
    lr: float
    weight_decay: float
    maximize: bool
    def __init__(self) -> None: ...

class MomentumOptions:
    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool
    first_step: bool
    def __init__(self) -> None: ...

class AdagradOptions:
    lr: float
    lr_decay: float
    weight_decay: float
    eps: float
    step: int
    maximize: bool
    def __init__(self) -> None: ...

class RmspropOptions:
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    nesterov: bool
    maximize: bool
    def __init__(self) -> None: ...

class AdadeltaOptions:
    lr: float
    rho: float
    eps: float
    weight_decay: float
    maximize: bool
    def __init__(self) -> None: ...

class AdamOptions:
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    step: int
    decoupled: bool
    amsgrad: bool
    maximize: bool
    def __init__(self) -> None: ...

class EmaOptions:
    decay: float
    def __init__(self) -> None: ...

def sgd_(params: Arrays, grads: Arrays, state0: None, state1: None, state2: None,
         master_params: Optional[Arrays], grad_scale: Any, found_inf: Any, options: SgdOptions,
         lr: Any = None, step: Any = None, clip_max_norm: float = -1.0, stream: Stream = None) -> None: ...
def momentum_(params: Arrays, grads: Arrays, state0: Arrays, state1: None, state2: None,
              master_params: Optional[Arrays], grad_scale: Any, found_inf: Any,
              options: MomentumOptions, lr: Any = None, step: Any = None,
              clip_max_norm: float = -1.0, stream: Stream = None) -> None: ...
def adagrad_(params: Arrays, grads: Arrays, state0: Arrays, state1: None, state2: None,
             master_params: Optional[Arrays], grad_scale: Any, found_inf: Any,
             options: AdagradOptions, lr: Any = None, step: Any = None,
             clip_max_norm: float = -1.0, stream: Stream = None) -> None: ...
def rmsprop_(params: Arrays, grads: Arrays, state0: Arrays, state1: Optional[Arrays],
             state2: Optional[Arrays], master_params: Optional[Arrays], grad_scale: Any,
             found_inf: Any, options: RmspropOptions, lr: Any = None, step: Any = None,
             clip_max_norm: float = -1.0, stream: Stream = None) -> None: ...
def adadelta_(params: Arrays, grads: Arrays, state0: Arrays, state1: Arrays, state2: None,
              master_params: Optional[Arrays], grad_scale: Any, found_inf: Any,
              options: AdadeltaOptions, lr: Any = None, step: Any = None,
              clip_max_norm: float = -1.0, stream: Stream = None) -> None: ...
def adam_(params: Arrays, grads: Arrays, state0: Arrays, state1: Arrays, state2: Optional[Arrays],
          master_params: Optional[Arrays], grad_scale: Any, found_inf: Any, options: AdamOptions,
          lr: Any = None, step: Any = None, clip_max_norm: float = -1.0,
          stream: Stream = None) -> None: ...

def global_norm(arrays: Arrays, norm_type: float, stream: Stream = None) -> float: ...
def clip_grad_norm_(grads: Arrays, max_norm: float, norm_type: float, stream: Stream = None) -> float: ...
def ema_(averages: Arrays, params: Arrays, options: EmaOptions, stream: Stream = None) -> None: ...

def bn_forward(x: Array, weight: Optional[Array], bias: Optional[Array],
               running_mean: Optional[Array], running_var: Optional[Array], y: Array,
               save_mean: Array, save_invstd: Array, training: bool, momentum: float, eps: float,
               channels_last: bool, stream: Stream = None) -> None: ...
def bn_backward(dy: Array, x: Array, weight: Optional[Array], save_mean: Array, save_invstd: Array,
                dx: Array, dweight: Optional[Array], dbias: Optional[Array], channels_last: bool,
                stream: Stream = None) -> None: ...
def bn_stats(x: Array, mean: Array, var: Array, channels_last: bool, fn: str = ...,
             stream: Stream = None) -> int: ...
def bn_merge_stats(means: Array, vars: Array, counts: Sequence[float], mean: Array, var: Array) -> None: ...
def bn_update_running_stats(running_mean: Array, running_var: Array, mean: Array, var: Array,
                            count: float, momentum: float, stream: Stream = None) -> None: ...
def ln_forward(x: Array, dims: int, weight: Optional[Array], bias: Optional[Array], y: Array,
               mean: Optional[Array], rstd: Array, eps: float, rms: bool, fn: str,
               stream: Stream = None) -> None: ...
def ln_backward(dy: Array, x: Array, dims: int, mean: Optional[Array], rstd: Array,
                weight: Optional[Array], dx: Array, dweight: Optional[Array], dbias: Optional[Array],
                rms: bool, fn: str, stream: Stream = None) -> None: ...
def gn_forward(x: Array, num_groups: int, weight: Optional[Array], bias: Optional[Array],
               running_mean: Optional[Array], running_var: Optional[Array], y: Array, mean: Array,
               rstd: Array, use_input_stats: bool, momentum: float, eps: float, channels_last: bool,
               instance: bool, stream: Stream = None) -> None: ...
def gn_backward(dy: Array, x: Array, num_groups: int, mean: Array, rstd: Array,
                weight: Optional[Array], dx: Array, dweight: Optional[Array], dbias: Optional[Array],
                channels_last: bool, stream: Stream = None) -> None: ...

def cpu_isa() -> str: ...
def available_cpu_isas() -> list[str]: ...
def set_cpu_isa(name: str) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def threads_backend() -> str: ...
def cuda_compiled() -> bool: ...
def cuda_devices() -> list[str]: ...
def cuda_runtime_version() -> int: ...
def cuda_launch_count() -> int: ...

# Import introspection (tests, bench/bench_torch_user_path.py): each array as a kernel sees it.
def _import_views(arrays: Arrays, write: bool = True, describe: bool = True) -> Any: ...
def _set_exchange_route(enabled: bool) -> None: ...
def _framework_stream(array: Array) -> Optional[int]: ...

# Full-batch passes (csrc/bindings/fullbatch.cpp), the building blocks of fusedtrain.fullbatch.
# `history` is one (rows, total numel) array (Note [history arena]); mode: 0 add, 1 save base,
# 2 from base, 3 restore.
def fullbatch_history_(grads: Arrays, prev_grads: Arrays, directions: Arrays, history: Array,
                       slot: int, t: float, stream: Stream = None) -> tuple[float, float]: ...
def fullbatch_direction_(grads: Arrays, directions: Arrays, history: Array, slots: Sequence[int],
                         ro: Sequence[float], h_diag: float,
                         stream: Stream = None) -> tuple[float, float, list[float]]: ...
def fullbatch_combine_(out: Arrays, x: Arrays, w: Arrays, copy_to: Optional[Arrays], keep: bool,
                       a: float, c: float, h: float, stream: Stream = None) -> tuple[float, float]: ...
def fullbatch_dots(x: Arrays, others: Sequence[Arrays], stream: Stream = None) -> tuple[float, ...]: ...
def fullbatch_grad_copy_(grads: Arrays, out: Arrays, directions: Optional[Arrays],
                         stream: Stream = None) -> float: ...
def fullbatch_param_step_(params: Arrays, directions: Optional[Arrays], base: Optional[Arrays],
                          mode: int, t: float, stream: Stream = None) -> None: ...
