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
"""
import itertools

import torch

from .._optim_rules import RULES

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]

_HALF = (torch.float16, torch.bfloat16)


class _FusedStep:
    """Mixin in front of a torch.optim class: replaces step() by fusedtrain kernel calls."""

    _step_supports_amp_scaling = True
    _ft_rule = None

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if group.get("differentiable"):
                raise ValueError(f"{type(self).__name__}: differentiable=True is not supported "
                                 f"by the fused kernels")
            self._ft_rule.validate(group)
        except ValueError:
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # Loaded step counts are read once, at the next step.
        self.__dict__.setdefault("_ft_cohort", {}).clear()

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
        for group in self.param_groups:
            self._ft_step_group(group, grad_scale, found_inf)
        return loss

    # -- internals ----------------------------------------------------------------------------
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
        sdtype = torch.float32 if p.dtype in _HALF else p.dtype
        for key, init in spec.items():
            t = state.get(key)
            if t is None:
                state[key] = torch.full_like(p, init, dtype=sdtype)
            elif t.dtype != sdtype or t.device != p.device:
                state[key] = t.to(device=p.device, dtype=sdtype)
        return fresh

    def _ft_step_group(self, group, grad_scale, found_inf):
        rule = self._ft_rule
        spec = rule.state(group)
        cohort = self.__dict__.setdefault("_ft_cohort", {})
        tickets = self.__dict__.setdefault("_ft_tickets", itertools.count())
        buckets = {}
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if rule.takes_step and p not in cohort:
                # Read before _ft_prepare_state moves it to the param's device (free on CPU).
                count = self.state[p].get("step", 0.0)
                cohort[p] = ("count", float(count))
            fresh = self._ft_prepare_state(p, spec)
            if rule.takes_step:
                when = cohort[p]
            else:
                when = fresh
            buckets.setdefault((p.device, p.dtype, g.dtype, when), []).append(p)
        for (device, _, _, when), ps in buckets.items():
            self._ft_call(group, ps, device, spec, when, grad_scale, found_inf)
            if rule.takes_step:
                ticket = next(tickets)
                for p in ps:
                    cohort[p] = ticket

    def _ft_call(self, group, ps, device, spec, when, grad_scale, found_inf):
        rule, state = self._ft_rule, self.state
        grad_scale = _on(grad_scale, device)
        found_inf = _on(found_inf, device)
        lr = group["lr"]
        if torch.is_tensor(lr) and lr.device.type != "cpu":
            lr = _on(lr, device)
        lists = {k: [state[p][k] for p in ps] for k in spec}
        steps = None
        if rule.takes_step:
            steps = [state[p]["step"] for p in ps]
            torch._foreach_add_(steps, 1.0)
            step = steps[0]
        else:
            step = 1 if when else 2       # SGD momentum: a fresh buffer takes the grad
        rule.call(group, ps, [p.grad for p in ps], lists, step, lr, grad_scale=grad_scale,
                  found_inf=found_inf)
        if found_inf is None:
            return
        if steps is not None:
            torch._foreach_add_(steps, found_inf.ne(0).to(torch.float32), alpha=-1.0)
        elif when and device.type == "cpu" and bool(found_inf):
            # A skipped first SGD step leaves the buffers unset, as a skipped torch step does.
            for p in ps:
                for k in spec:
                    del state[p][k]


def _on(t, device):
    if torch.is_tensor(t) and t.device != device:
        return t.to(device, non_blocking=True)
    return t


class SGD(_FusedStep, torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov) on fusedtrain's sgd_ / momentum_."""
    _ft_rule = RULES["SGD"]


class Adagrad(_FusedStep, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` on fusedtrain's adagrad_."""
    _ft_rule = RULES["Adagrad"]


class Adadelta(_FusedStep, torch.optim.Adadelta):
    """``torch.optim.Adadelta`` on fusedtrain's adadelta_."""
    _ft_rule = RULES["Adadelta"]


class Adam(_FusedStep, torch.optim.Adam):
    """``torch.optim.Adam`` (AMSGrad, decoupled_weight_decay) on fusedtrain's adam_."""
    _ft_rule = RULES["Adam"]


class AdamW(_FusedStep, torch.optim.AdamW):
    """``torch.optim.AdamW`` on fusedtrain's adamw_."""
    _ft_rule = RULES["AdamW"]


class RMSprop(_FusedStep, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` on fusedtrain's rmsprop_, plus keyword ``nesterov`` (Goodfellow
    et al. Algorithm 8.6; a group key torch.optim.RMSprop carries along and ignores)."""
    _ft_rule = RULES["RMSprop"]

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, nesterov=False):
        self._ft_nesterov = bool(nesterov)
        super().__init__(params, lr, alpha, eps, weight_decay, momentum, centered, capturable,
                         foreach, maximize, differentiable)
        self.defaults["nesterov"] = bool(nesterov)

    def add_param_group(self, param_group):
        if isinstance(param_group, dict):
            param_group = {"nesterov": getattr(self, "_ft_nesterov", False), **param_group}
        super().add_param_group(param_group)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
