"""Learning-rate schedules: callables of t, the number of steps already taken (0 for the first step).

Each schedule is a small picklable object, so an optimizer whose ``lr`` is a schedule can be
saved with ``state_dict()`` and resumed: the step count restores the position in the schedule.
``ft.optim`` classes accept one as ``lr``; with ``torch.optim`` wrap it in
``torch.optim.lr_scheduler.LambdaLR(opt, lambda t: sched(t) / lr0)``.
"""
import math
import numbers

from . import _checks as chk

__all__ = ["Schedule", "step_decay", "exponential", "inverse_time", "linear", "cosine", "warmup"]


def _real(fn, name, value, low=None, low_open=False, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = chk.to_float(fn, name, value)
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{fn}: {name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{fn}: {name} must be <= {high}, got {value}")
    return value


def _count(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {value!r}")
    return int(value)


class Schedule:
    """Base: ``sched(t)`` checks t and returns a Python float."""

    def __call__(self, t):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not t >= 0:
            raise ValueError(f"{type(self).__name__}: t (steps taken) must be a number >= 0, "
                             f"got {t!r}")
        return float(self._at(t))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


class step_decay(Schedule):
    """``lr0 * gamma ** floor(t / step_size)``: multiply by gamma every step_size steps."""

    def __init__(self, lr0, step_size, gamma):
        fn = "step_decay"
        self.lr0 = _real(fn, "lr0", lr0, 0.0)
        self.step_size = _count(fn, "step_size", step_size)
        self.gamma = _real(fn, "gamma", gamma, 0.0, low_open=True)

    def _at(self, t):
        return self.lr0 * self.gamma ** (t // self.step_size)


class exponential(Schedule):
    """``lr0 * exp(-k * t)``: exponential decay."""

    def __init__(self, lr0, k):
        self.lr0 = _real("exponential", "lr0", lr0, 0.0)
        self.k = _real("exponential", "k", k, 0.0)

    def _at(self, t):
        return self.lr0 * math.exp(-self.k * t)


class inverse_time(Schedule):
    """``lr0 / (1 + k * t)``: 1/t decay."""

    def __init__(self, lr0, k):
        self.lr0 = _real("inverse_time", "lr0", lr0, 0.0)
        self.k = _real("inverse_time", "k", k, 0.0)

    def _at(self, t):
        return self.lr0 / (1.0 + self.k * t)


class linear(Schedule):
    """Linear decay to ``lr_tau = final_fraction * lr0`` at step tau, constant after
    (Goodfellow et al. section 8.3.1): ``(1 - t/tau) * lr0 + (t/tau) * lr_tau`` for t < tau,
    ``lr_tau`` for t >= tau."""

    def __init__(self, lr0, tau, final_fraction=0.01):
        self.lr0 = _real("linear", "lr0", lr0, 0.0)
        self.tau = _count("linear", "tau", tau)
        self.final_fraction = _real("linear", "final_fraction", final_fraction, 0.0, high=1.0)

    def _at(self, t):
        lr_tau = self.final_fraction * self.lr0
        if t >= self.tau:
            return lr_tau
        alpha = t / self.tau
        return (1.0 - alpha) * self.lr0 + alpha * lr_tau


class cosine(Schedule):
    """Cosine annealing: ``lr_min + (lr0 - lr_min) * (1 + cos(pi * t / total_steps)) / 2`` for
    t < total_steps, ``lr_min`` after (torch's CosineAnnealingLR without restarts)."""

    def __init__(self, lr0, total_steps, lr_min=0.0):
        self.lr0 = _real("cosine", "lr0", lr0, 0.0)
        self.total_steps = _count("cosine", "total_steps", total_steps)
        self.lr_min = _real("cosine", "lr_min", lr_min, 0.0, high=self.lr0)

    def _at(self, t):
        if t >= self.total_steps:
            return self.lr_min
        return self.lr_min + (self.lr0 - self.lr_min) * (1.0 + math.cos(math.pi * t / self.total_steps)) / 2.0


class warmup(Schedule):
    """Linear warmup in front of another schedule (or a constant lr):
    ``schedule(t) * t / warmup_steps`` for t < warmup_steps, ``schedule(t)`` after.
    The first step (t = 0) therefore has lr 0."""

    def __init__(self, schedule, warmup_steps):
        if not callable(schedule):
            schedule = _real("warmup", "schedule", schedule, 0.0)
        self.schedule = schedule
        self.warmup_steps = _count("warmup", "warmup_steps", warmup_steps)

    def _at(self, t):
        base = self.schedule(t) if callable(self.schedule) else self.schedule
        if t < self.warmup_steps:
            return base * t / self.warmup_steps
        return base
