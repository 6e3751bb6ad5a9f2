"""The optimizer update rules: one fused, in-place, multi-tensor call per step.

Every function updates the caller's arrays in place (NumPy arrays, or any array exposing
``__dlpack__`` such as PyTorch tensors) with the semantics of the matching ``torch.optim``
optimizer.  Lists align: ``params[i]``, ``grads[i]`` and every state list's ``[i]`` have one shape.

Dtypes: float32 or float64 params with state of the same dtype; float16/bfloat16 params with
float32 state and optional float32 ``master_params`` (then the rule updates the master copy and
writes the param as its rounding).  Grads match the params, or are float32 for half params, or
float16/bfloat16 for float32 params.

Common keyword arguments:
    grad_scale: None, a number or a 1-element array; grads are divided by it (AMP unscaling)
        without being modified.
    found_inf: None, a number or a 1-element array; when nonzero the step is skipped and nothing
        is written.
    master_params: float32 master weights for float16/bfloat16 params.
    max_grad_norm: clip the grads' global 2-norm to this value inside the step (the clip
        coefficient joins grad_scale; grads are not modified).  None: no clipping.  For
        DTensors (FSDP2) the norm is taken across ranks, with one all-reduce.
    stream: CUDA arrays only: the stream to launch on (int handle or an object with ``.ptr`` /
        ``.cuda_stream``); default the current PyTorch stream for torch tensors, CuPy's current
        stream for CuPy arrays.  A step never synchronizes the host.

DTensors (torch.distributed.tensor, FSDP2's parameters): each rank steps its local shards, in
one call as for plain tensors (Note [DTensor shards] in ``_dtensor.py``).

Capturable steps: ``lr`` and ``step`` may be 1-element device arrays, read by the kernel, so a
step can be recorded in a CUDA graph and replayed (run one step before capturing: the first
step with a new list of tensors uploads its chunk table).

Scalars read on the host (numbers, and 1-element CPU arrays for ``lr``, ``step``,
``grad_scale``, ``found_inf``) are checked like the hyperparameters: ``lr >= 0``, ``step`` a
whole number in [1, 2**53], ``grad_scale`` finite and > 0. Device arrays are read by the kernel
without a host sync and are not checked: keeping them valid is the caller's part (a step outside
the range is clamped into it, a NaN lr or grad_scale gives NaN params).

Every argument is checked before any array is written: a call that raises changes nothing.
Arrays may not share memory with an array the call writes (the same param twice, a state that is
another state, overlapping views), with one exception: a grad may be the very array it updates
(``sgd_([p], [p])`` steps along p's own values; grads are read before anything is written).
A missing or mistyped array (None, not an array, wrong dtype) raises TypeError; a wrong length,
shape, layout, read-only array or hyperparameter, or a state list these options need but that is
None (amsgrad without max_exp_avg_sqs, ...) raises ValueError.
"""
import inspect

from . import _C
from . import _checks as chk
from . import _dtensor
from ._streams import is_array, launch_stream


def _lr(fn, lr):
    """(value, array): a number is validated here, an array is read by the kernel."""
    if is_array(lr):
        return 0.0, lr
    return chk.at_least(fn, "lr", lr), None


def _step(fn, step):
    if is_array(step):
        return 1, step
    return chk.step_count(fn, step), None


def _clip(fn, max_grad_norm):
    return -1.0 if max_grad_norm is None else chk.at_least(fn, "max_grad_norm", max_grad_norm)


_COMMON = dict(grad_scale=None, found_inf=None, master_params=None, max_grad_norm=None,
               stream=None)


def _run(kernel, fn, params, grads, states, options, lr_array, step_array, common):
    if _dtensor.leads_with_dtensor(params, grads):   # FSDP2: Note [DTensor shards]
        params, grads, states, common = _dtensor.rule_lists(fn, params, grads, states, common)
    s0, s1, s2 = (list(states) + [None, None, None])[:3]
    try:
        kernel(params, grads, s0, s1, s2, common["master_params"], common["grad_scale"],
               common["found_inf"], options, lr_array, step_array,
               _clip(fn, common["max_grad_norm"]), launch_stream(params, common["stream"]))
    except (TypeError, ValueError) as e:
        # adamw_ shares adam_'s kernel: errors name the function the caller called.
        prefix = kernel.__name__ + ":"
        if fn == kernel.__name__ or not str(e).startswith(prefix):
            raise
        raise type(e)(fn + ":" + str(e)[len(prefix):]) from None


def _common(fn, kwargs):
    unknown = set(kwargs) - set(_COMMON)
    if unknown:
        raise TypeError(f"{fn}: unexpected keyword argument(s) {sorted(unknown)}")
    common = {**_COMMON, **kwargs}
    # Numbers are checked here, host arrays where they are read (Note [host scalars]).
    for name, check in (("grad_scale", chk.grad_scale), ("found_inf", chk.found_inf)):
        value = common[name]
        if value is not None and not is_array(value):
            common[name] = check(fn, value)
    return common


# ---- Rules generated from the rule table (Note [rule table] in _optim_rules.py) ---------------

def _host_step(fn, step):
    """A step read on the host: a number, or a 1-element array copied back (NAdam's mu scalars
    are computed there).  Array values are checked as the kernels' host path checks them."""
    if is_array(step):
        try:
            value = float(step.item())
        except (ValueError, RuntimeError):
            raise ValueError(f"{fn}: step must be a number or a 1-element array") from None
        if not (value == value and value.is_integer() and 1 <= value <= chk.MAX_STEP):
            raise ValueError(f"{fn}: step must be a whole number in [1, 2**53] (the 1-based "
                             f"count of this step), got {value}")
        return int(value)
    return chk.step_count(fn, step)


def _make_rule_function(spec):
    """The functional wrapper of a Spec: its signature, docstring, checks and kernel call.

    Note [generated signature]: the wrapper is compiled from its parameter list (as dataclasses
    does), so the interpreter binds the arguments; binding through inspect.Signature.bind costs
    ~10 us a call, more than the kernel on a small model.  What a call needs from the Spec (the
    checks, the Options fields, the state lists) is computed once, here."""
    fn = spec.fn
    kernel_name = spec.kernel or fn
    state_names = [name for name, _ in spec.states]
    visible = [h for h in spec.hypers if h.visible]
    fixed = {h.name: h.default for h in spec.hypers if not h.visible}
    keyword_states = sorted((h for h in spec.hypers if h.slot >= 0), key=lambda h: h.slot)
    fields = [((h.field or h.name), h.name) for h in spec.hypers if h.field is not None]
    options_class = getattr(_C, spec.options)
    has_step = hasattr(options_class, "step")    # momentum_ has first_step (from prepare)
    if spec.host_step:
        read_step = lambda value: (_host_step(fn, value), None)
    else:
        read_step = lambda value: _step(fn, value)

    def body(params, grads, states, values, common):
        values.update(fixed)
        common = _common(fn, common)
        step_array = None
        if spec.takes_step:
            values["step"], step_array = read_step(values["step"])
        values["lr"], lr_array = _lr(fn, values["lr"])
        spec.check(fn, values)
        for needed, name, reason in spec.requires:
            if needed(values) and values[name] is None:
                raise ValueError(f"{fn}: {name} is required when {reason}")
        o = options_class()
        for field_name, name in fields:
            setattr(o, field_name, values[name])
        if spec.takes_step and has_step:
            o.step = values["step"]
        if spec.prepare is not None:
            for field_name, value in spec.prepare(fn, values).items():
                setattr(o, field_name, value)
        states = list(states)
        states += [values[h.name] if h.used is None or h.used(values) else None
                   for h in keyword_states]
        _run(getattr(_C, kernel_name), fn, params, grads, states, o, lr_array, step_array,
             common)

    # Note [generated signature]
    defaults = {}
    sig = ["params", "grads", *state_names, "*"]
    if spec.takes_step:
        sig.append("step")
    for i, h in enumerate(visible):
        if h.default is inspect.Parameter.empty:
            sig.append(h.name)
        else:
            defaults[f"_d{i}"] = h.default
            sig.append(f"{h.name}=_d{i}")
    sig.append("**common")
    keys = (["step"] if spec.takes_step else []) + [h.name for h in visible]
    source = (f"def {fn}({', '.join(sig)}):\n"
              f"    return _body(params, grads, ({''.join(n + ', ' for n in state_names)}), "
              f"{{{', '.join(f'{k!r}: {k}' for k in keys)}}}, common)\n")
    namespace = {"_body": body, **defaults}
    exec(compile(source, f"<fusedtrain.{fn}>", "exec"), namespace)
    rule_function = namespace[fn]
    rule_function.__qualname__ = fn
    rule_function.__doc__ = spec.doc
    rule_function.__module__ = __name__
    return rule_function


from ._optim_rules import FUNCTIONS as _FUNCTIONS  # noqa: E402  (it reads this module's helpers)

GENERATED = list(_FUNCTIONS)
for _spec in _FUNCTIONS.values():
    globals()[_spec.fn] = _make_rule_function(_spec)
del _spec
