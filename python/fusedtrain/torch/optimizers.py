"""torch.optim drop-ins whose step() runs fusedtrain's fused kernels, on CPU and CUDA.

Each class subclasses its torch.optim namesake, so the constructor, param groups, hooks,
``state_dict()`` and ``load_state_dict()`` are torch's own and checkpoints move freely between
the two. Only ``step()`` differs: one kernel call per param group (per device / dtype / step
count bucket when a group mixes them).

Note [torch drop-in state]:
- Keys and layout are torch.optim's: ``step`` is a 0-dim float32 tensor per param, kept on the
  param's device (as torch's capturable/fused modes do) so that CUDA steps read it on device.
- float16/bfloat16 params keep float32 state (torch keeps state in the param dtype); a loaded
  half state is upcast on the next step.
- GradScaler: ``_step_supports_amp_scaling`` makes ``GradScaler.step`` hand us ``grad_scale``
  and ``found_inf`` as tensors; the kernel divides by the one and skips on the other, and the
  step counts are advanced by ``1 - (found_inf != 0)``, all on device: no host sync.
- The kernels take one step count per call; params of a group that have stepped together share
  it. Which params share it is tracked on the host (a cohort per set of params stepped
  together), so a step never reads device memory; after ``load_state_dict()`` the first step
  reads the loaded counts once.
- Note [complex params]: torch.optim steps a complex param as the real tensor of its real and
  imaginary parts (``torch.view_as_real`` of the param, its grad and its state), every rule
  here being elementwise; so do we: the state is complex as torch's (``state_dict()`` loads
  both ways) and a bucket of complex params hands the kernels those real views.
"""
import itertools
from operator import is_

import torch

from .. import _checks as chk
from .._dtensor import is_dtensor
import inspect

from .._optim_rules import RULES, SPECS

__all__ = list(RULES)

_HALF = (torch.float16, torch.bfloat16)


class _FusedStep:
    """Mixin in front of a torch.optim class: replaces step() by fusedtrain kernel calls."""

    _step_supports_amp_scaling = True
    _ft_rule = None

    def add_param_group(self, param_group):
        extra = self._ft_rule.torch_extra
        if extra and isinstance(param_group, dict):
            # torch fills a group's missing keys from its own defaults only, which lack ours.
            given = self.__dict__.get("_ft_extra") or {k: self._ft_rule.defaults[k] for k in extra}
            param_group = {**given, **param_group}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if group.get("differentiable"):
                raise ValueError(f"{type(self).__name__}: differentiable=True is not supported "
                                 f"by the fused kernels")
            chk.listed_once(type(self).__name__, group["params"])
            self._ft_rule.validate(group)
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state):
        super().__setstate__(state)
        # Groups saved by the torch.optim namesake (or before a key was ours) lack our keys.
        for group in self.param_groups:
            for key in self._ft_rule.torch_extra:
                group.setdefault(key, self._ft_rule.defaults[key])

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # Loaded step counts are read once, at the next step; every plan is rebuilt.
        self.__dict__.setdefault("_ft_cohort", {}).clear()
        self.__dict__.setdefault("_ft_plans", {}).clear()

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every param with a grad; ``closure`` re-evaluates the loss (torch's
        contract). Under GradScaler, ``self.grad_scale`` / ``self.found_inf`` are set by it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        plans = self.__dict__.setdefault("_ft_plans", {})
        for group in self.param_groups:
            plan = plans.pop(id(group), None)
            done = 0
            if plan is not None and plan.fits(self, group):
                done = self._ft_replay(group, plan, grad_scale, found_inf)
                if done == len(plan.buckets):
                    plans[id(group)] = plan
                    continue
            # First step, or something changed: bucket from scratch (what is left of the group).
            rest = None if done == 0 else [i for b in plan.buckets[done:] for i in b.idx]
            plan = self._ft_step_group(group, rest, grad_scale, found_inf)
            if plan is not None:
                plans[id(group)] = plan
        return loss

    # -- internals ----------------------------------------------------------------------------
    # Note [step plans]: what a group's step needs besides the arrays themselves (its buckets,
    # the state dict of each param, one step-count buffer per bucket) is worked out once and
    # replayed while it still holds; the arrays (params, their current .grad, state tensors)
    # are read afresh each step, so a new .grad, a `p.data = ...` swap or a replaced state tensor
    # is used at once.  A replay checks, per param, only what it cannot leave to the kernel's
    # own validation: the same params in the group, the same params with and without grads, the
    # same step-count tensors.  Anything else that changed (a param's dtype or device, a state
    # of the wrong dtype) makes the kernel raise before writing, and the group is bucketed
    # again from scratch.  Step counts: each param keeps torch's 0-dim float32 "step" tensor,
    # but those of a bucket are views of one buffer, advanced by one op per step.

    def _ft_replay(self, group, plan, grad_scale, found_inf):
        """Steps the plan's buckets in order; returns how many were stepped (all, or up to the
        first that no longer fits)."""
        params = group["params"]
        grads = [p.grad for p in params]
        # The same params without grads as when planned ("is", not "in": a tensor's == is slow).
        if len([g for g in grads if g is None]) != len(plan.idle) or \
                any(grads[i] is not None for i in plan.idle):
            return 0
        for k, b in enumerate(plan.buckets):
            ps = params if b.whole else [params[i] for i in b.idx]
            gs = grads if b.whole else [grads[i] for i in b.idx]
            try:
                if b.steps is not None and \
                        not all(map(is_, [d["step"] for d in b.dicts], b.steps)):
                    # A step count set from outside: read the counts again.
                    cohort = self._ft_cohort
                    for p in ps:
                        cohort.pop(p, None)
                    return k
                self._ft_call(group, b, ps, gs, grad_scale, found_inf)
            except (TypeError, ValueError, KeyError):
                # Validated before anything was written: redo this bucket from scratch.
                return k
        return len(plan.buckets)

    def _ft_prepare_state(self, p, spec):
        """Create or adapt p's state; True when p has never stepped (fresh state)."""
        rule, state = self._ft_rule, self.state[p]
        fresh = ("step" not in state) if rule.takes_step else \
            any(k not in state or state[k] is None for k in spec)
        if rule.takes_step:
            s = state.get("step")
            if s is None:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            elif not torch.is_tensor(s):
                state["step"] = torch.tensor(float(s), dtype=torch.float32, device=p.device)
            elif s.device != p.device:
                state["step"] = s.to(p.device)
        for key, init in rule_spec_scalars(rule).items():
            # 0-dim float32 on the CPU, where torch.optim (not capturable) keeps them.
            s = state.get(key)
            if not torch.is_tensor(s):
                state[key] = torch.tensor(init if s is None else float(s), dtype=torch.float32)
        sdtype = torch.float32 if p.dtype in _HALF else p.dtype
        for key, init in spec.items():
            t = state.get(key)
            if t is None:
                state[key] = torch.full_like(p, init, dtype=sdtype)
            elif t.dtype != sdtype or t.device != p.device:
                state[key] = t.to(device=p.device, dtype=sdtype)
        return fresh

    def _ft_step_group(self, group, only, grad_scale, found_inf):
        """Buckets the params with grads (of `only`, indices into the group, or all), steps
        each bucket and returns the plan to replay (None after a step that changed state
        layout)."""
        rule = self._ft_rule
        spec = rule.state(group)
        cohort = self.__dict__.setdefault("_ft_cohort", {})
        tickets = self.__dict__.setdefault("_ft_tickets", itertools.count())
        params = group["params"]
        buckets, idle = {}, []
        for i in (range(len(params)) if only is None else only):
            p = params[i]
            g = p.grad
            if g is None:
                idle.append(i)
                continue
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if rule.takes_step:
                state = self.state[p]
                if p not in cohort or "step" not in state:   # new, loaded or reset state
                    # Read before _ft_prepare_state moves it to the param's device (free on CPU).
                    cohort[p] = ("count", float(state.get("step", 0.0)))
            fresh = self._ft_prepare_state(p, spec)
            when = cohort[p] if rule.takes_step else fresh
            # DTensors (FSDP2) and plain tensors go to separate calls: a rule call takes its
            # lists' local shards when they hold DTensors (Note [DTensor shards]).
            key = (p.device, p.dtype, g.dtype, when, is_dtensor(p))
            buckets.setdefault(key, []).append(i)
        plan = _Plan(self, group, tuple(spec), idle)
        for (device, _, _, when, _), idx in buckets.items():
            b = _Bucket(idx, len(idx) == len(params), [self.state[params[i]] for i in idx],
                        device, params[idx[0]].is_complex())
            if rule.takes_step:
                b.share_steps(rule_spec_scalars(rule))
            else:
                b.fresh = when
            ps = [params[i] for i in idx]
            self._ft_call(group, b, ps, [_in_layout_of(p.grad, p) for p in ps], grad_scale,
                          found_inf)
            if rule.takes_step:
                ticket = next(tickets)
                for p in ps:
                    cohort[p] = ticket
            b.fresh = False
            plan.buckets.append(b)
        return None if only is not None or plan.dropped else plan

    def _ft_call(self, group, b, ps, gs, grad_scale, found_inf):
        rule, device = self._ft_rule, b.device
        grad_scale = _on(grad_scale, device)
        found_inf = _on(found_inf, device)
        lr = group["lr"]
        if torch.is_tensor(lr) and lr.device.type != "cpu":
            lr = _on(lr, device)
        dicts = b.dicts
        lists = {k: [d[k] for d in dicts]
                 for k in [*self._ft_rule.state(group), *rule_spec_scalars(rule)]}
        if b.complex:  # Note [complex params]
            ps, gs = _real_views(ps), _real_views(gs)
            lists = {k: _real_views(v) for k, v in lists.items()}
        if b.steps is not None:
            b.buffer.add_(1.0)
            try:
                rule.call(group, ps, gs, lists, b.steps[0], lr, grad_scale=grad_scale,
                          found_inf=found_inf)
            except BaseException:
                b.buffer.sub_(1.0)
                raise
            if found_inf is not None:
                b.buffer.sub_(found_inf.ne(0).to(torch.float32))
            return
        # SGD momentum: a fresh buffer takes the grad (step 1)
        rule.call(group, ps, gs, lists, 1 if b.fresh else 2, lr, grad_scale=grad_scale,
                  found_inf=found_inf)
        if b.fresh and found_inf is not None and device.type == "cpu" and bool(found_inf):
            # A skipped first SGD step leaves the buffers unset, as a skipped torch step does.
            for d in dicts:
                for k in lists:
                    del d[k]
            b.plan_dropped = True


class _Bucket:
    """Params of a group stepped by one kernel call (Note [step plans])."""

    __slots__ = ("idx", "whole", "dicts", "device", "complex", "buffer", "steps", "fresh",
                 "plan_dropped")

    def __init__(self, idx, whole, dicts, device, complex_params=False):
        self.idx, self.whole, self.dicts, self.device = idx, whole, dicts, device
        self.complex = complex_params
        self.buffer = self.steps = None
        self.fresh = self.plan_dropped = False

    def share_steps(self, scalar_keys=()):
        """Makes the bucket's step tensors, and a rule's other 0-dim per-param state (NAdam's
        mu_product), views of one buffer per key (same values, torch's layout): one op
        advances them all."""
        self.buffer, self.steps = self._share("step")
        for key in scalar_keys:
            self._share(key)

    def _share(self, key):
        values = [d[key] for d in self.dicts]
        buffer = torch.stack(values) if len(values) > 1 else values[0].reshape(1).clone()
        views = list(buffer.unbind(0))
        for d, v in zip(self.dicts, views):
            d[key] = v
        return buffer, views


class _Plan:
    __slots__ = ("params", "state", "n_state", "keys", "idle", "buckets")

    def __init__(self, opt, group, keys, idle):
        self.params = list(group["params"])
        self.state = opt.state
        self.n_state = len(opt.state)
        self.keys = keys
        self.idle = idle
        self.buckets = []

    @property
    def dropped(self):
        return any(b.plan_dropped for b in self.buckets)

    def fits(self, opt, group):
        params = group["params"]
        # A param's state dict is the one torch.optim keeps for it: replaced dicts come with
        # load_state_dict (which drops the plans) or a new opt.state; a deleted one shows in len.
        return (opt.state is self.state and len(opt.state) == self.n_state
                and len(params) == len(self.params)
                and tuple(opt._ft_rule.state(group)) == self.keys
                and all(map(is_, params, self.params)))


def _in_layout_of(g, p):
    """g, or a copy of it in p's memory layout: the kernels step a param, its grad and its state
    as flat memory, so they must agree (torch.optim accepts, e.g., a C-order grad set on a
    channels_last param). Only the from-scratch path pays for this check; a replay with such a
    grad fails the kernel's validation before anything is written and comes here again."""
    if g.stride() == p.stride() or g.is_contiguous() and p.is_contiguous():
        return g
    return torch.empty_like(p, dtype=g.dtype).copy_(g)


def _real_views(tensors):
    """Complex tensors as the real tensors of their parts (Note [complex params]); others as
    they are (a param made real since the plan is then refused by the kernel and replanned)."""
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def _on(t, device):
    if torch.is_tensor(t) and t.device != device:
        return t.to(device, non_blocking=True)
    return t


def rule_spec_scalars(rule):
    """A rule's 0-dim per-param state (NAdam's mu_product), from its Spec when it has one."""
    spec = SPECS.get(rule.name)
    return spec.scalar_state if spec is not None else {}


def _extended_init(base, rule):
    """torch.optim's constructor of ``base`` plus the rule's ``torch_extra`` keys as keyword-only
    arguments (RMSprop's nesterov); torch carries them along in the param groups, unused."""
    P = inspect.Parameter
    extra = rule.torch_extra
    sig = inspect.signature(base.__init__)
    sig = inspect.Signature(
        [p.replace(annotation=P.empty) for p in sig.parameters.values()]
        + [P(k, P.KEYWORD_ONLY, default=rule.defaults[k]) for k in extra])

    def __init__(self, params, *args, **kwargs):
        # Set before torch's constructor: its add_param_group calls give them to each group.
        self._ft_extra = {k: convert(kwargs.pop(k, rule.defaults[k]))
                          for k, convert in extra.items()}
        base.__init__(self, params, *args, **kwargs)
        self.defaults.update(self._ft_extra)

    __init__.__signature__ = sig
    return __init__


def _make_class(rule):
    """The ft.torch drop-in of a rule-table entry (Note [rule table]): a subclass of its
    torch.optim namesake, or, when torch has none (Lion), a torch.optim.Optimizer with torch's
    conventions (0-dim float32 ``step``, state keys from the entry) and the ft.optim class's
    constructor without max_grad_norm / ema_decay."""
    attrs = {"__doc__": rule.torch_doc or rule.doc, "_ft_rule": rule, "__module__": __name__,
             "__qualname__": rule.name}
    base = getattr(torch.optim, rule.name, None)
    if base is not None:
        if rule.torch_extra:
            attrs["__init__"] = _extended_init(base, rule)
        return type(rule.name, (_FusedStep, base), attrs)
    P = inspect.Parameter
    sig = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        + [P(k, P.POSITIONAL_OR_KEYWORD, default=v) for k, v in rule.defaults.items()
           if k not in rule.keyword_only]
        + [P(k, P.KEYWORD_ONLY, default=rule.defaults[k]) for k in rule.keyword_only])

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        lr = values["lr"]
        if not isinstance(lr, torch.Tensor) and not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        rule.validate(values)
        torch.optim.Optimizer.__init__(self, values.pop("params"), values)

    __init__.__signature__ = sig
    attrs["__init__"] = __init__
    return type(rule.name, (_FusedStep, torch.optim.Optimizer), attrs)


for _rule in RULES.values():
    globals()[_rule.name] = _make_class(_rule)
del _rule
