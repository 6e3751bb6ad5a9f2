"""The optimizer class machinery behind ``ft.optim``: param groups, owned state, state_dict.

Note [optim classes]: a class owns, per param group, its state lists (torch.optim's names, zeros
like the params, float32 for float16/bfloat16 params), float32 master copies of half params and
an optional EMA copy. ``step(grads)`` makes one fused kernel call per param group (per
(dtype, array library) bucket when a group mixes them) with the group's lr at
t = steps already taken; ``max_grad_norm`` is passed to that call, so clipping is by the global
norm of the group's grads. Every step count, state array, master and EMA copy is in
``state_dict()``, so a resumed run repeats the original bit for bit.
"""
import math
import numbers

import numpy as np

from . import _checks as chk
from .utils import ema_

_HALF = ("float16", "bfloat16")
_EXTRA = {"max_grad_norm": None, "ema_decay": None}


def _is_array(x):
    return hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__")


def param_list(name, params):
    """An optimizer's params argument as a list: one array, one param group (a dict), or an
    iterable of either."""
    if _is_array(params) or isinstance(params, dict):
        return [params]
    try:
        return list(params)
    except TypeError:
        raise TypeError(f"{name}: params must be an array, an iterable of arrays or of param "
                        f"groups (dicts), got {type(params).__name__}") from None


def _xp(a):
    if (type(a).__module__ or "").startswith("cupy"):
        import cupy
        return cupy
    return np


def _is_half(a):
    return np.dtype(a.dtype).name in _HALF


def _host(a):
    """A state array as NumPy (CuPy arrays are copied to the host)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _copy_into(dst, src):
    src = src if _xp(dst) is not np else _host(src)
    dst[...] = _xp(dst).asarray(src)


def _scalar(x):
    return float(x.item()) if hasattr(x, "item") else float(x)


class Optimizer:
    """Base of the ``ft.optim`` classes; subclasses set ``_rule`` (see _optim_rules)."""

    _rule = None

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self._slots = []
        self.steps = 0          # steps taken; the next step is step number steps + 1
        params = param_list(self._name, params)
        if not params:
            raise ValueError(f"{self._name}: params is an empty list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    @property
    def _name(self):
        return type(self).__name__

    # -- groups -------------------------------------------------------------------------------
    def add_param_group(self, group):
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{self._name}: a param group is a dict with a 'params' list")
        group = dict(group)
        params = group["params"]
        params = [params] if _is_array(params) else list(params)
        for i, p in enumerate(params):
            if not _is_array(p):
                raise TypeError(f"{self._name}: params[{i}] is {type(p).__name__}, not an array")
        if not params:
            raise ValueError(f"{self._name}: a param group has no params")
        chk.listed_once(self._name, params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen & {id(p) for p in params}:
            raise ValueError(f"{self._name}: a param appears more than once")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{self._name}: unknown hyperparameter(s) {sorted(unknown)}")
        group = {**self.defaults, **group, "params": params}
        self._validate(group)
        self.param_groups.append(group)
        self._slots.append(self._allocate(group))

    def _validate(self, group):
        name = self._name
        lr = group["lr"]
        if not callable(lr):
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr >= 0 \
                    or math.isinf(chk.to_float(name, "lr", lr)):
                raise ValueError(f"{name}: lr must be a number >= 0 or a schedule, got {lr!r}")
        for key, low, high in (("max_grad_norm", 0.0, None), ("ema_decay", 0.0, 1.0)):
            value = group[key]
            if value is None:
                continue
            try:
                if high is None:
                    chk.at_least(name, key, value, low)
                else:
                    chk.in_range(name, key, value, low, high, True)
            except TypeError as e:
                raise ValueError(str(e)) from None
        self._rule.validate(group)

    def _allocate(self, group, old=None):
        """State, master and EMA arrays for a group; arrays of ``old`` that fit are kept."""
        params = group["params"]
        old = old or {"state": {}, "master": None, "ema": None}
        state = {}
        for key, value in self._rule.state(group).items():
            state[key] = old["state"].get(key) or [
                _xp(p).full(p.shape, value, dtype=np.float32 if _is_half(p) else p.dtype)
                for p in params]
        halves = any(_is_half(p) for p in params)
        master = old["master"] or ([p.astype(np.float32) if _is_half(p) else None for p in params]
                                   if halves else None)
        ema = None
        if group["ema_decay"] is not None:
            ema = old["ema"] or [(p.astype(np.float32) if _is_half(p) else p.copy())
                                 for p in params]
        buckets = {}
        for i, p in enumerate(params):
            buckets.setdefault((np.dtype(p.dtype).name, _xp(p).__name__), []).append(i)
        return {"state": state, "master": master, "ema": ema, "buckets": list(buckets.values())}

    # -- views --------------------------------------------------------------------------------
    @property
    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def ema_params(self):
        """EMA copies aligned with ``params`` (None for groups without ema_decay); float32 for
        float16/bfloat16 params."""
        return [(s["ema"][i] if s["ema"] is not None else None)
                for g, s in zip(self.param_groups, self._slots) for i in range(len(g["params"]))]

    @property
    def master_params(self):
        """float32 master copies aligned with ``params`` (None for float32/float64 params)."""
        return [(s["master"][i] if s["master"] is not None else None)
                for g, s in zip(self.param_groups, self._slots) for i in range(len(g["params"]))]

    @property
    def state(self):
        """Per param (flat index), its state arrays by torch.optim's names."""
        out, k = {}, 0
        for g, s in zip(self.param_groups, self._slots):
            for i in range(len(g["params"])):
                out[k] = {key: arrays[i] for key, arrays in s["state"].items()}
                k += 1
        return out

    def lrs(self, t=None):
        """Each group's lr at t steps taken (default: for the next step)."""
        t = self.steps if t is None else t
        return [g["lr"](t) if callable(g["lr"]) else g["lr"] for g in self.param_groups]

    # -- stepping -----------------------------------------------------------------------------
    def _split(self, grads):
        grads = list(grads)
        groups = self.param_groups
        if len(grads) == len(groups) and all(isinstance(g, (list, tuple)) for g in grads):
            per_group = [list(g) for g in grads]
        else:
            per_group, k = [], 0
            for g in groups:
                per_group.append(grads[k:k + len(g["params"])])
                k += len(g["params"])
            if k != len(grads):
                raise ValueError(f"{self._name}.step: {len(grads)} grads for {k} params")
        k = 0
        for g, gs in zip(groups, per_group):
            if len(gs) != len(g["params"]):
                raise ValueError(f"{self._name}.step: a group of {len(g['params'])} params got "
                                 f"{len(gs)} grads")
            for p, grad in zip(g["params"], gs):
                if not _is_array(grad):
                    raise TypeError(f"{self._name}.step: grads[{k}] is {type(grad).__name__}, "
                                    f"not an array")
                if tuple(grad.shape) != tuple(p.shape):
                    raise ValueError(f"{self._name}.step: grads[{k}] has shape "
                                     f"{tuple(grad.shape)} but params[{k}] has {tuple(p.shape)}")
                k += 1
        return per_group

    def step(self, grads, *, grad_scale=None, found_inf=None, stream=None):
        """One step over all groups: ``grads`` aligned with ``params`` (or one list per group).

        ``grad_scale`` divides the grads (a number or 1-element array, read by the kernel).
        ``found_inf`` nonzero skips the step entirely (no update, no step count, no EMA); it is
        read on the host, which waits for a device array. Returns whether the step was taken.
        """
        per_group = self._split(grads)
        if found_inf is not None and _scalar(found_inf) != 0:
            return False
        t = self.steps
        for group, slot, gs in zip(self.param_groups, self._slots, per_group):
            lr = group["lr"](t) if callable(group["lr"]) else group["lr"]
            for idx in slot["buckets"]:
                common = {"grad_scale": grad_scale, "stream": stream,
                          "max_grad_norm": group["max_grad_norm"]}
                master = None
                if slot["master"] is not None and slot["master"][idx[0]] is not None:
                    master = [slot["master"][i] for i in idx]
                    common["master_params"] = master
                self._rule.call(group, [group["params"][i] for i in idx], [gs[i] for i in idx],
                                {k: [v[i] for i in idx] for k, v in slot["state"].items()},
                                t + 1, lr, **common)
                if slot["ema"] is not None:
                    src = master if master is not None else [group["params"][i] for i in idx]
                    ema_([slot["ema"][i] for i in idx], src, decay=group["ema_decay"],
                         stream=stream)
        self.steps = t + 1
        return True

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self):
        """A copy of everything a resumed run needs: step count, hyperparameters, state."""
        groups, state, k = [], {}, 0
        for g, s in zip(self.param_groups, self._slots):
            n = len(g["params"])
            groups.append({**{key: v for key, v in g.items() if key != "params"},
                           "params": list(range(k, k + n))})
            for i in range(n):
                entry = {key: arrays[i].copy() for key, arrays in s["state"].items()}
                if s["master"] is not None and s["master"][i] is not None:
                    entry["master_param"] = s["master"][i].copy()
                if s["ema"] is not None:
                    entry["ema_param"] = s["ema"][i].copy()
                state[k + i] = entry
            k += n
        return {"steps": self.steps, "param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        """Restore from ``state_dict()`` (values copied into this optimizer's own arrays).

        Checks everything before changing anything: ValueError on a mismatch."""
        name = f"{self._name}.load_state_dict"
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: {len(saved_groups)} param groups, expected "
                             f"{len(self.param_groups)}")
        new_groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"{name}: a saved group has {len(sg['params'])} params, "
                                 f"expected {len(g['params'])}")
            ng = {**g, **{k: v for k, v in sg.items() if k != "params"}, "params": g["params"]}
            self._validate(ng)
            new_groups.append(ng)
        saved_state = state_dict["state"]
        plan = []
        for ng, sg in zip(new_groups, saved_groups):
            keys = list(self._rule.state(ng))
            for i, (p, k) in enumerate(zip(ng["params"], sg["params"])):
                entry = saved_state.get(k, {})
                for key in keys:
                    if key not in entry:
                        raise ValueError(f"{name}: state of param {k} has no {key!r}")
                for key, value in entry.items():
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"{name}: state[{k}][{key!r}] has shape "
                                         f"{tuple(value.shape)}, expected {tuple(p.shape)}")
                plan.append(entry)
        # Checked: now mutate.
        slots, j = [], 0
        for ng, old in zip(new_groups, self._slots):
            slot = self._allocate(ng, old)
            for i in range(len(ng["params"])):
                entry = plan[j]
                j += 1
                for key, arrays in slot["state"].items():
                    _copy_into(arrays[i], entry[key])
                if slot["master"] is not None and slot["master"][i] is not None \
                        and "master_param" in entry:
                    _copy_into(slot["master"][i], entry["master_param"])
                if slot["ema"] is not None and "ema_param" in entry:
                    _copy_into(slot["ema"][i], entry["ema_param"])
            slots.append(slot)
        self.param_groups[:] = new_groups
        self._slots = slots
        self.steps = int(state_dict["steps"])

    def __repr__(self):
        lines = [f"{self._name} (steps taken: {self.steps})"]
        for i, g in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v!r}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {hyper}")
        return "\n".join(lines)
