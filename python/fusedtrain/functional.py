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


def sgd_(params, grads, *, lr, weight_decay=0.0, maximize=False, **common):
    """Plain stochastic gradient descent, ``torch.optim.SGD`` without momentum.

    ``g = grad (+ weight_decay * p); p -= lr * g`` (``g = -grad`` when maximizing).

    Textbook form: Goodfellow et al. Algorithm 8.1, ``theta <- theta - eps * g``; the lecture's
    ``x += -learning_rate * dx``.
    """
    fn = "sgd_"
    common = _common(fn, common)
    lr, lr_array = _lr(fn, lr)
    o = chk.options(_C.SgdOptions, lr=lr,
                    weight_decay=chk.at_least(fn, "weight_decay", weight_decay),
                    maximize=chk.flag(fn, "maximize", maximize))
    _run(_C.sgd_, fn, params, grads, [], o, lr_array, None, common)


def momentum_(params, grads, momentum_buffers, *, step, lr, momentum=0.9, dampening=0.0,
              nesterov=False, weight_decay=0.0, maximize=False, **common):
    """SGD with momentum or Nesterov momentum, ``torch.optim.SGD(momentum=...)``.

    ``g = grad (+ weight_decay * p)``; ``b = g`` at ``step == 1``, else
    ``b = momentum * b + (1 - dampening) * g``; ``p -= lr * (g + momentum * b)`` with nesterov,
    else ``p -= lr * b``.

    Textbook form: with dampening 0, the lecture's ``v = rho * v + dx; x -= learning_rate * v``,
    which is Goodfellow et al. Algorithm 8.2 (``v <- alpha v - eps g; theta <- theta + v``) with
    ``v = -lr * b``.  Nesterov is Algorithm 8.3 written at the look-ahead point (the lecture's
    ``v = rho*v + dx(x + rho*v)`` after the change of variables ``x~ = x + rho * v``).
    """
    fn = "momentum_"
    common = _common(fn, common)
    step, step_array = _step(fn, step)
    lr, lr_array = _lr(fn, lr)
    momentum = chk.at_least(fn, "momentum", momentum)
    dampening = chk._number(fn, "dampening", dampening)
    nesterov = chk.flag(fn, "nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"{fn}: nesterov requires momentum > 0 and dampening == 0")
    o = chk.options(_C.MomentumOptions, lr=lr, momentum=momentum, dampening=dampening,
                    nesterov=nesterov, weight_decay=chk.at_least(fn, "weight_decay", weight_decay),
                    maximize=chk.flag(fn, "maximize", maximize), first_step=step == 1)
    _run(_C.momentum_, fn, params, grads, [momentum_buffers], o, lr_array, step_array, common)


def adagrad_(params, grads, state_sums, *, step, lr=0.01, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False, **common):
    """AdaGrad, ``torch.optim.Adagrad``.

    ``g = grad (+ weight_decay * p); s += g * g;
    p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(s) + eps)``.
    ``state_sums`` start at torch's ``initial_accumulator_value`` (0 by default).

    Textbook form: Goodfellow et al. Algorithm 8.4 (``r <- r + g*g;
    theta <- theta - eps / (delta + sqrt(r)) * g``); the lecture's
    ``cache += dx**2; x -= learning_rate * dx / (np.sqrt(cache) + 1e-7)``.
    """
    fn = "adagrad_"
    common = _common(fn, common)
    step, step_array = _step(fn, step)
    lr, lr_array = _lr(fn, lr)
    o = chk.options(_C.AdagradOptions, lr=lr, lr_decay=chk.at_least(fn, "lr_decay", lr_decay),
                    weight_decay=chk.at_least(fn, "weight_decay", weight_decay),
                    eps=chk.at_least(fn, "eps", eps), step=step,
                    maximize=chk.flag(fn, "maximize", maximize))
    _run(_C.adagrad_, fn, params, grads, [state_sums], o, lr_array, step_array, common)


def rmsprop_(params, grads, square_avgs, *, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0,
             momentum=0.0, momentum_buffers=None, centered=False, grad_avgs=None,
             nesterov=False, maximize=False, **common):
    """RMSProp, ``torch.optim.RMSprop``, plus the Nesterov variant of Goodfellow et al.

    ``g = grad (+ weight_decay * p); r = alpha * r + (1 - alpha) * g * g``;
    centered: ``gbar = alpha * gbar + (1 - alpha) * g; avg = sqrt(r - gbar**2) + eps``, else
    ``avg = sqrt(r) + eps``.  Without momentum ``p -= lr * g / avg``; with momentum
    ``b = momentum * b + g / avg`` and ``p -= lr * b``, or with nesterov
    ``p -= lr * (g / avg + momentum * b)``.

    Textbook form: Goodfellow et al. Algorithm 8.5 (``r <- rho r + (1 - rho) g*g;
    theta <- theta - eps / sqrt(delta + r) * g``); the lecture's
    ``cache = decay_rate * cache + (1 - decay_rate) * dx**2``.  ``nesterov=True`` is
    Algorithm 8.6 (RMSProp with Nesterov momentum) in its look-ahead form.
    ``momentum > 0`` needs ``momentum_buffers``; ``centered`` needs ``grad_avgs``.
    """
    fn = "rmsprop_"
    common = _common(fn, common)
    lr, lr_array = _lr(fn, lr)
    momentum = chk.at_least(fn, "momentum", momentum)
    centered = chk.flag(fn, "centered", centered)
    nesterov = chk.flag(fn, "nesterov", nesterov)
    if nesterov and momentum <= 0:
        raise ValueError(f"{fn}: nesterov requires momentum > 0")
    if momentum > 0 and momentum_buffers is None:
        raise ValueError(f"{fn}: momentum_buffers is required when momentum > 0")
    if centered and grad_avgs is None:
        raise ValueError(f"{fn}: grad_avgs is required when centered=True")
    o = chk.options(_C.RmspropOptions, lr=lr,
                    alpha=chk.in_range(fn, "alpha", alpha, 0.0, 1.0, True),
                    eps=chk.at_least(fn, "eps", eps),
                    weight_decay=chk.at_least(fn, "weight_decay", weight_decay),
                    momentum=momentum, centered=centered, nesterov=nesterov,
                    maximize=chk.flag(fn, "maximize", maximize))
    _run(_C.rmsprop_, fn, params, grads, [square_avgs, momentum_buffers, grad_avgs], o,
         lr_array, None, common)


def adadelta_(params, grads, square_avgs, acc_deltas, *, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False, **common):
    """AdaDelta, ``torch.optim.Adadelta``.

    ``g = grad (+ weight_decay * p); r = rho * r + (1 - rho) * g * g;
    d = sqrt(u + eps) / sqrt(r + eps) * g; u = rho * u + (1 - rho) * d * d; p -= lr * d``.

    Textbook form: Zeiler's AdaDelta (cited in Goodfellow et al. section 8.5): RMSProp whose
    learning rate is the running RMS of past updates, so units match (``lr = 1``).
    """
    fn = "adadelta_"
    common = _common(fn, common)
    lr, lr_array = _lr(fn, lr)
    o = chk.options(_C.AdadeltaOptions, lr=lr,
                    rho=chk.in_range(fn, "rho", rho, 0.0, 1.0, True),
                    eps=chk.at_least(fn, "eps", eps),
                    weight_decay=chk.at_least(fn, "weight_decay", weight_decay),
                    maximize=chk.flag(fn, "maximize", maximize))
    _run(_C.adadelta_, fn, params, grads, [square_avgs, acc_deltas], o, lr_array, None, common)


def adam_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
          max_exp_avg_sqs=None, maximize=False, **common):
    """Adam, ``torch.optim.Adam`` (and ``torch.optim.AdamW`` with decoupled_weight_decay).

    L2 decay ``g = grad + weight_decay * p``, or decoupled ``p *= 1 - lr * weight_decay``;
    ``m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g``;
    amsgrad: ``vmax = max(vmax, v)`` replaces v below;
    ``p -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)``.

    Textbook form: Goodfellow et al. Algorithm 8.7 (``s <- rho1 s + (1 - rho1) g;
    r <- rho2 r + (1 - rho2) g*g; s^ = s / (1 - rho1^t); r^ = r / (1 - rho2^t);
    theta <- theta - eps s^ / (sqrt(r^) + delta)``); the lecture's Adam with bias correction
    (``mt = m / (1 - beta1**t); vt = v / (1 - beta2**t); x -= lr * mt / (sqrt(vt) + 1e-7)``),
    with eps placed as torch places it.
    """
    _adam("adam_", params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
          weight_decay, decoupled_weight_decay, amsgrad, max_exp_avg_sqs, maximize, common)


def adamw_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.01, amsgrad=False, max_exp_avg_sqs=None, maximize=False,
           **common):
    """AdamW, ``torch.optim.AdamW``: :func:`adam_` with decoupled weight decay.

    ``p *= 1 - lr * weight_decay``, then the Adam step on the raw gradient (Loshchilov & Hutter).
    """
    _adam("adamw_", params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
          weight_decay, True, amsgrad, max_exp_avg_sqs, maximize, common)


def _adam(fn, params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
          decoupled, amsgrad, max_exp_avg_sqs, maximize, common):
    common = _common(fn, common)
    step, step_array = _step(fn, step)
    lr, lr_array = _lr(fn, lr)
    amsgrad = chk.flag(fn, "amsgrad", amsgrad)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError(f"{fn}: max_exp_avg_sqs is required when amsgrad=True")
    o = chk.options(_C.AdamOptions, lr=lr,
                    beta1=chk.in_range(fn, "beta1", beta1, 0.0, 1.0, False),
                    beta2=chk.in_range(fn, "beta2", beta2, 0.0, 1.0, False),
                    eps=chk.at_least(fn, "eps", eps),
                    weight_decay=chk.at_least(fn, "weight_decay", weight_decay), step=step,
                    decoupled=chk.flag(fn, "decoupled_weight_decay", decoupled),
                    amsgrad=amsgrad, maximize=chk.flag(fn, "maximize", maximize))
    _run(_C.adam_, fn, params, grads,
         [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None], o, lr_array,
         step_array, common)


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
    """The functional wrapper of a Spec: its signature, docstring, checks and kernel call."""
    P = inspect.Parameter
    params = [P("params", P.POSITIONAL_OR_KEYWORD), P("grads", P.POSITIONAL_OR_KEYWORD)]
    params += [P(name, P.POSITIONAL_OR_KEYWORD) for name, _ in spec.states]
    if spec.takes_step:
        params.append(P("step", P.KEYWORD_ONLY))
    params += [P(h.name, P.KEYWORD_ONLY, default=h.default) for h in spec.hypers]
    params.append(P("common", P.VAR_KEYWORD))
    sig = inspect.Signature(params)
    fn = spec.fn

    def rule_function(*args, **kwargs):
        values = sig.bind(*args, **kwargs)
        values.apply_defaults()
        values = dict(values.arguments)
        common = _common(fn, values.pop("common"))
        values["lr"], lr_array = _lr(fn, values["lr"])
        step_array = None
        if spec.takes_step:
            if spec.prepare is not None:
                values["step"] = _host_step(fn, values["step"])
            else:
                values["step"], step_array = _step(fn, values["step"])
        spec.check(fn, values)
        fields = {(h.field or h.name): values[h.name] for h in spec.hypers if h.field is not None}
        if spec.takes_step:
            fields["step"] = values["step"]
        if spec.prepare is not None:
            fields.update(spec.prepare(fn, values))
        o = chk.options(getattr(_C, spec.options), **fields)
        _run(getattr(_C, fn), fn, values["params"], values["grads"],
             [values[name] for name, _ in spec.states], o, lr_array, step_array, common)

    rule_function.__name__ = rule_function.__qualname__ = fn
    rule_function.__doc__ = spec.doc
    rule_function.__signature__ = sig
    rule_function.__module__ = __name__
    return rule_function


from ._optim_rules import SPECS as _SPECS  # noqa: E402  (the table reads this module's helpers)

GENERATED = [s.fn for s in _SPECS.values()]
for _spec in _SPECS.values():
    globals()[_spec.fn] = _make_rule_function(_spec)
del _spec
