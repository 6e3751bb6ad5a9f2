"""Full-batch optimizers: L-BFGS and nonlinear conjugate gradient over fused multi-tensor kernels.

``ft.optim.LBFGS`` / ``ft.optim.ConjugateGradient`` (NumPy and CuPy params; the closure returns
``(loss, grads)``) and ``ft.torch.LBFGS`` / ``ft.torch.ConjugateGradient`` (torch's closure API)
share the algorithms here; only how arrays are made and how a closure is read differ (a
backend). Every vector operation is one multi-tensor kernel call over all params, without
flattening them (csrc/math/fullbatch.h); the scalar logic (history ring, line search,
termination tests) runs here.

Note [full-batch state]: the state is per param tensor, in the compute dtype (float32; float64
for float64 params): the search direction ``d``, the previous gradient, and for L-BFGS the
pairs (s, y). Every state vector is a view of one flat buffer over all params (each param's part
is its own contiguous array), and the history is one array of shape ``(2 * slots, total numel)``
whose rows (2j, 2j + 1) hold pair j, param i in its own block of columns (Note [history
arena]): the kernels then stream each state vector as one run of memory. The history grows by
doubling up to ``history_size + 1`` slots: a new pair is written into a free slot and kept only
if ``y's > 1e-10``, so a full history keeps one spare.

Note [torch scalar precision]: torch.optim.LBFGS keeps its scalars (g'd, y's, 1/y's, H, the
first step length, the line search's Armijo and curvature tests) as 0-dim tensors of the params'
dtype. With float32 params they are float32, and a test such as ``f_new > f + c1 t g'd`` is then
decided in float32. The kernels return float64; for float32 params we round them to
``numpy.float32``, whose arithmetic with Python floats stays float32 (NumPy >= 2), so the same
tests take the same branches near convergence, where the difference decides the evaluation count.

Note [failed step]: a closure that raises or returns something unusable (wrong grads, a NaN
loss), or a step length that overflows (an lr too large for the gradients' scale, where
torch.optim.LBFGS would write inf or NaN into the params), makes ``step()`` put the params back to their values before the step, forget the
curvature history (the next step starts from steepest descent), and re-raise. The params'
values before the step are kept as a side effect of the first move (no extra pass).
"""
import math
import numbers

import numpy as np

from . import _C
from ._optim_base import _is_array, _xp, param_list
from ._line_search import strong_wolfe
from ._streams import launch_stream
from .utils import global_norm

__all__ = ["LBFGS", "ConjugateGradient"]

_HALF = ("float16", "bfloat16")
_FLOATS = ("float32", "float64") + _HALF
# csrc/math/fullbatch.h StepMode
_ADD, _SAVE_BASE, _FROM_BASE, _RESTORE = 0, 1, 2, 3


# -- hyperparameters --------------------------------------------------------------------------
def _count(name, key, value, low):
    if isinstance(value, float) and value.is_integer():
        value = int(value)             # torch.optim.LBFGS takes max_eval=25.0 as well
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: {key} must be an int >= {low}, got {value!r}")
    return int(value)


def _real(name, key, value, low=0.0):
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        try:
            value = value.item()       # a 1-element tensor or array (torch allows a tensor lr)
        except (TypeError, ValueError):
            pass
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):    # 10**400 has no float
        number = None
    if not isinstance(value, numbers.Real) or number is None or not number >= low \
            or math.isinf(number):
        raise ValueError(f"{name}: {key} must be a finite number >= {low}, got {value!r}")
    return number


def lbfgs_hyper(name, group):
    """Validated L-BFGS hyperparameters of a param group (torch.optim.LBFGS's keys)."""
    max_iter = _count(name, "max_iter", group["max_iter"], 1)
    max_eval = group.get("max_eval")
    max_eval = max_iter * 5 // 4 if max_eval is None else _count(name, "max_eval", max_eval, 1)
    ls = group.get("line_search_fn")
    if not (ls is None or isinstance(ls, str) and ls == "strong_wolfe"):
        raise ValueError(f"{name}: line_search_fn must be None or 'strong_wolfe', got {ls!r}")
    return dict(lr=_real(name, "lr", group["lr"]), max_iter=max_iter, max_eval=max_eval,
                tolerance_grad=_real(name, "tolerance_grad", group["tolerance_grad"]),
                tolerance_change=_real(name, "tolerance_change", group["tolerance_change"]),
                history_size=_count(name, "history_size", group["history_size"], 1),
                line_search_fn=ls)


def cg_hyper(name, group):
    """Validated conjugate-gradient hyperparameters of a param group."""
    h = lbfgs_hyper(name, {**group, "history_size": 1})
    del h["history_size"]
    beta = group.get("beta", "polak_ribiere")
    if not isinstance(beta, str) or beta not in ("polak_ribiere", "fletcher_reeves"):
        raise ValueError(f"{name}: beta must be 'polak_ribiere' or 'fletcher_reeves', "
                         f"got {beta!r}")
    restart = group.get("restart_every")
    if restart is not None:
        restart = _count(name, "restart_every", restart, 1)
    c1 = _real(name, "c1", group.get("c1", 1e-4))
    c2 = _real(name, "c2", group.get("c2", 0.1))
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"{name}: the line search needs 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    h.update(beta=beta, restart_every=restart, c1=c1, c2=c2)
    return h


# -- backends ---------------------------------------------------------------------------------
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_scalar(value):
    """A kernel's float64 scalar in float32 (Note [torch scalar precision]): beyond float32's
    range, inf, as torch's float32 tensor would hold, without NumPy's overflow warning."""
    if -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        return np.float32(value)
    with np.errstate(over="ignore"):
        return np.float32(value)


class ArrayBackend:
    """NumPy / CuPy params: state arrays from the params' library, and a closure returning
    ``(loss, grads)`` with grads aligned with the params."""

    closure_returns = "returning (loss, grads)"

    def __init__(self, name, params):
        self.name = name
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name}: params is an empty list")
        for i, p in enumerate(self.params):
            if not _is_array(p) or isinstance(p, np.generic):
                raise TypeError(f"{name}: params[{i}] is {type(p).__name__}, not an array")
            if np.dtype(p.dtype).name not in _FLOATS:
                raise TypeError(f"{name}: params[{i}] has dtype {np.dtype(p.dtype).name}; "
                                f"expected float32, float64, float16 or bfloat16")
            # Stepped in place as flat memory (Note [full-batch state]).
            if not p.flags.c_contiguous:
                raise ValueError(f"{name}: params[{i}] is not C-contiguous")
            if not getattr(p.flags, "writeable", True):
                raise ValueError(f"{name}: params[{i}] is read-only")
        check_uniform(name, self.params, lambda p: (np.dtype(p.dtype).name, _xp(p).__name__,
                                                    _device_of(p)))
        p0 = self.params[0]
        self.xp = _xp(p0)
        self.half = np.dtype(p0.dtype).name in _HALF
        self.compute = np.float32 if self.half else np.dtype(p0.dtype)
        self.scalar = float32_scalar if self.compute == np.float32 else float

    def flat(self, shape):
        return self.xp.empty(shape, dtype=self.compute)

    def views(self, flat):
        """Per-param views (shapes of the params) of a flat vector over all params."""
        out, k = [], 0
        for p in self.params:
            out.append(flat[k:k + p.size].reshape(p.shape))
            k += p.size
        return out

    def copy_into(self, dst, src):
        dst[...] = src

    def evaluate(self, closure):
        out = closure()
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{self.name}.step: the closure must return (loss, grads), "
                            f"got {type(out).__name__}")
        loss, grads = out
        value = loss_value(self.name, loss)
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"{self.name}.step: the closure's grads must be a list of arrays, "
                            f"got {type(grads).__name__}")
        if len(grads) != len(self.params):
            raise ValueError(f"{self.name}.step: the closure returned {len(grads)} grads for "
                             f"{len(self.params)} params")
        grads = list(grads)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if isinstance(g, np.generic):
                # NumPy answers a 0-d param's arithmetic with a scalar.
                g = grads[i] = np.asarray(g)
            if not _is_array(g):
                raise TypeError(f"{self.name}.step: grads[{i}] is {type(g).__name__}, not an array")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"{self.name}.step: grads[{i}] has shape {tuple(g.shape)} but "
                                 f"params[{i}] has shape {tuple(p.shape)}")
            if np.dtype(g.dtype) != np.dtype(p.dtype):
                raise TypeError(f"{self.name}.step: grads[{i}] has dtype {np.dtype(g.dtype).name} "
                                f"but params[{i}] has {np.dtype(p.dtype).name}")
            if _xp(g) is not self.xp or _device_of(g) != _device_of(p):
                raise ValueError(f"{self.name}.step: grads[{i}] is not on params[{i}]'s device")
            if not g.flags.c_contiguous:
                grads[i] = self.xp.ascontiguousarray(g)    # read only: a copy will do
        return loss, value, grads


def _opt_float(v):
    return None if v is None else float(v)


def _device_of(a):
    dev = getattr(a, "device", None)
    return getattr(dev, "id", None) if not isinstance(a, np.ndarray) else None


def check_uniform(name, params, key_of):
    """All params share dtype and device (one kernel call covers them)."""
    k0 = key_of(params[0])
    for i, p in enumerate(params):
        if key_of(p) != k0:
            raise ValueError(f"{name}: params[{i}] differs from params[0] in dtype or device "
                             f"({key_of(p)} vs {k0}); a full-batch optimizer takes params of one "
                             f"dtype on one device")


def loss_value(name, loss):
    """The closure's loss as a float; TypeError for anything but a number or 1-element array."""
    if loss is None:
        raise TypeError(f"{name}.step: the closure returned no loss (None)")
    try:
        size = loss.numel() if hasattr(loss, "numel") else getattr(loss, "size", 1)
        if size != 1:
            raise TypeError(f"{name}.step: the closure's loss has {size} elements; expected a "
                            f"scalar")
        value = float(loss.item() if hasattr(loss, "item") else loss)
    except (TypeError, ValueError) as e:
        if str(e).startswith(name):
            raise
        raise TypeError(f"{name}.step: the closure's loss is {type(loss).__name__}, not a "
                        f"number") from None
    return value


# -- the shared machinery ---------------------------------------------------------------------
class _Core:
    """State and kernel calls shared by L-BFGS and CG (Note [full-batch state])."""

    def __init__(self, backend):
        self.b = backend
        self.n = len(backend.params)
        self.total = sum(int(np.prod(p.shape)) for p in backend.params)
        self.func_evals = 0
        self.n_iter = 0
        self.d = None
        self.prev_grad = None
        self.t = None
        self.prev_loss = None
        self._pool = []         # gradient buffers (Note [line-search buffers])
        self._bases = [None, None]
        self._moved = False
        self.st = None

    # arrays
    def _vectors(self):
        return self.b.views(self.b.flat((self.total,)))

    def _buffer(self, live):
        """Note [line-search buffers]: a gradient buffer none of the handles in ``live`` is."""
        busy = {id(x) for x in live}
        for buf in self._pool:
            if id(buf) not in busy:
                return buf
        self._pool.append(self._vectors())
        return self._pool[-1]

    # kernels
    def _grads_in(self, grads, copy, live=()):
        """The closure's grads as our compute-dtype arrays: as they are, or copied into a
        buffer when the next closure could overwrite them (line search) or they are half."""
        if not copy and not self.b.half:
            return grads
        buf = self._buffer(live)
        _C.fullbatch_grad_copy_(grads, buf, None, self.st)
        return buf

    def _max_abs(self, g):
        return self.b.scalar(global_norm(g, math.inf, stream=self.st))

    def _abs_sum(self, g):
        return self.b.scalar(global_norm(g, 1.0, stream=self.st))

    def _move(self, mode, t, base=None):
        if not math.isfinite(t):
            # An lr the gradients' scale overflows; the step is undone (Note [failed step]).
            raise ValueError(f"{self.b.name}.step: the step length is {float(t)}, not a finite "
                             f"number (is lr too large for these gradients?)")
        _C.fullbatch_param_step_(self.b.params, self.d, base, mode, float(t), self.st)

    def _base(self, which):
        if self._bases[which] is None:
            self._bases[which] = self._vectors()
        return self._bases[which]

    def _step_params(self, t):
        """p += t d; the first move of a step keeps the params' values (Note [failed step])."""
        if self._moved:
            self._move(_ADD, t)
        else:
            self._move(_SAVE_BASE, t, self._base(0))
            self._moved = True

    def _line_search(self, closure, t, loss, g, gtd, dmax, max_ls, c1, c2, tol_change):
        """Strong-Wolfe search along d from the current params; leaves them at the chosen point.

        Note [line-search base]: the first trial saves the params (into the step's restore copy
        when nothing has moved yet), every trial writes p = base + t d."""
        base = self._base(1 if self._moved else 0)
        state = {"saved": False, "at": None}

        def phi(t_trial, live):
            if state["saved"]:
                self._move(_FROM_BASE, t_trial, base)
            else:
                self._move(_SAVE_BASE, t_trial, base)
                state["saved"] = True
                self._moved = True
            state["at"] = t_trial
            _, f_new, grads = self._evaluate(closure)
            buf = self._buffer(live)
            gtd_new = _C.fullbatch_grad_copy_(grads, buf, self.d, self.st)
            return f_new, buf, self.b.scalar(gtd_new)

        loss, g, t, evals = strong_wolfe(phi, t, loss, g, gtd, dmax, c1=c1, c2=c2,
                                         tolerance_change=tol_change, max_ls=max_ls)
        if state["at"] is None:
            pass                       # no trial (max_ls < 1): the params never moved
        elif state["at"] != t:
            self._move(_FROM_BASE, t, base)
        return loss, g, t, evals

    def _evaluate(self, closure):
        returned, loss, grads = self.b.evaluate(closure)
        if math.isnan(loss):
            raise ValueError(f"{self.b.name}.step: the closure returned a NaN loss")
        return returned, loss, grads

    def _restore(self):
        """Params back to their values before the step (Note [failed step])."""
        self._move(_RESTORE, 0.0, self._bases[0])
        self.forget()

    def run(self, closure, h, direction, c1, c2):
        """One step() call: the iteration of torch.optim.LBFGS.step around ``direction(g, h)``
        (which returns g'd, max |d| and the first trial step), with Note [failed step]."""
        if closure is None or not callable(closure):
            raise TypeError(f"{self.b.name}.step: a closure is required: a function that "
                            f"re-evaluates the full-batch loss ({self.b.closure_returns})")
        self._moved = False
        # The launch stream of this step: torch's / CuPy's current stream now (None on the CPU).
        self.st = launch_stream(self.b.params)
        evals_before = self.func_evals
        try:
            return self._iterate(closure, h, direction, c1, c2)
        except BaseException:
            if self._moved:
                self._restore()
                self.func_evals = evals_before
            raise

    def _iterate(self, closure, h, direction, c1, c2):
        max_iter, max_eval = h["max_iter"], h["max_eval"]
        tol_grad, tol_change = h["tolerance_grad"], h["tolerance_change"]
        # Compared with this backend's scalars, as torch compares them with its float32 tensors:
        # a tolerance beyond float32's range is inf there (without NumPy's overflow warning).
        tol_grad, tol_change32 = self.b.scalar(tol_grad), self.b.scalar(tol_change)
        wolfe = h["line_search_fn"] == "strong_wolfe"
        orig_loss, loss, grads = self._evaluate(closure)
        current_evals = 1
        self.func_evals += 1
        g = self._grads_in(grads, copy=wolfe)
        if self._max_abs(g) <= tol_grad:
            return orig_loss
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            self.n_iter += 1
            gtd, dmax, self.t = direction(g, h)
            self.prev_loss = loss
            if gtd > -tol_change32:
                break
            ls_evals = 0
            if wolfe:
                loss, g, self.t, ls_evals = self._line_search(
                    closure, self.t, loss, g, gtd, dmax, max_eval - current_evals, c1, c2,
                    tol_change)
                opt_cond = self._max_abs(g) <= tol_grad
            else:
                self._step_params(self.t)
                opt_cond = False
                if n_iter != max_iter:    # torch skips the evaluation after the last move
                    _, loss, grads = self._evaluate(closure)
                    g = self._grads_in(grads, copy=False)
                    opt_cond = self._max_abs(g) <= tol_grad
                    ls_evals = 1
            current_evals += ls_evals
            self.func_evals += ls_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if dmax * abs(self.t) <= tol_change32:     # torch's d.mul(t).abs().max()
                break
            if abs(loss - self.prev_loss) < tol_change:
                break
        return orig_loss

    def _first_step(self, g, lr):
        """The first iteration's trial step, min(1, 1/|g|_1) lr (torch.optim.LBFGS's), in torch's
        scalar precision (Note [torch scalar precision]): an lr past float32's range overflows
        to inf here, which the step then refuses by name; NumPy's overflow warning adds nothing."""
        total = self._abs_sum(g)
        with np.errstate(over="ignore"):
            return min(1.0, 1.0 / total if total > 0 else math.inf) * lr

    def forget(self):
        self.n_iter = 0
        self.d = self.prev_grad = self.t = self.prev_loss = None

    # checkpoints: lists per param, copies
    def _copies(self, arrays):
        if arrays is None:
            return None
        return [a.clone() if hasattr(a, "clone") else a.copy() for a in arrays]

    def _load_vectors(self, values, what):
        if values is None:
            return None
        if len(values) != self.n:
            raise ValueError(f"{self.b.name}.load_state_dict: {what} has {len(values)} arrays "
                             f"for {self.n} params")
        out = self._vectors()
        for i, (dst, src) in enumerate(zip(out, values)):
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"{self.b.name}.load_state_dict: {what}[{i}] has shape "
                                 f"{tuple(src.shape)}, expected {tuple(dst.shape)}")
        for dst, src in zip(out, values):
            self.b.copy_into(dst, src)
        return out


class LbfgsCore(_Core):
    """L-BFGS with torch.optim.LBFGS's iteration, termination tests and line search."""

    def __init__(self, backend):
        super().__init__(backend)
        self.hist = None       # (2 * cap, total numel): Note [full-batch state]
        self.cap = 0
        self.slots = []        # history slots in use, oldest first
        self.ro = []           # 1 / y's of each
        self.h_diag = 1.0
        self.al = []

    def forget(self):
        super().forget()
        self.slots, self.ro, self.h_diag, self.al = [], [], 1.0, []

    def _free_slot(self, history_size):
        used = set(self.slots)
        for j in range(self.cap):
            if j not in used:
                return j
        cap = min(history_size + 1, max(1, 2 * self.cap))
        if cap <= self.cap:            # history_size lowered below the pairs held
            self.slots.pop(0)
            self.ro.pop(0)
            return self._free_slot(history_size)
        hist = self.b.flat((2 * cap, self.total))
        if self.hist is not None:
            self.b.copy_into(hist[:2 * self.cap], self.hist)
        self.hist, self.cap = hist, cap
        return self._free_slot(history_size)

    def step(self, closure, hyper):
        return self.run(closure, hyper, self._direction, 1e-4, 0.9)

    def _direction(self, g, h):
        """d = -H g by the two-loop recursion after storing the last pair; returns g'd, max |d|
        and the first trial step."""
        st, m = self.st, h["history_size"]
        if self.n_iter == 1:
            self.d, self.prev_grad = self._vectors(), self._vectors()
            gtd, dmax = _C.fullbatch_combine_(self.d, g, g, self.prev_grad, False, 0.0, -1.0,
                                              1.0, st)
            self.slots, self.ro, self.h_diag = [], [], 1.0
            return self.b.scalar(gtd), self.b.scalar(dmax), self._first_step(g, h["lr"])
        while len(self.slots) > m:   # history_size lowered between steps
            self.slots.pop(0)
            self.ro.pop(0)
        slot = self._free_slot(m)
        ys, yy, first_dot = _C.fullbatch_history_(g, self.prev_grad, self.d, self.hist, slot,
                                                  float(self.t), st)
        ys, yy = self.b.scalar(ys), self.b.scalar(yy)
        if ys > 1e-10:
            if len(self.slots) == m:
                self.slots.pop(0)
                self.ro.pop(0)
            self.slots.append(slot)
            self.ro.append(1.0 / ys)
            self.h_diag = ys / yy
        else:
            first_dot = None     # the newest pair is an older one (Note [first pass folded])
        gtd, dmax, self.al = _C.fullbatch_direction_(
            g, self.d, self.hist, self.slots, [float(r) for r in self.ro], float(self.h_diag), st,
            first_dot)
        return self.b.scalar(gtd), self.b.scalar(dmax), h["lr"]

    # checkpoints
    def export(self):
        """Copies of the state, per param: d, prev_grad, and the pairs oldest first."""
        def rows(r):
            return self.b.views(self.hist[r])
        return {
            "func_evals": self.func_evals, "n_iter": self.n_iter, "t": _opt_float(self.t),
            "prev_loss": self.prev_loss, "h_diag": float(self.h_diag),
            "ro": [float(r) for r in self.ro],
            "d": self._copies(self.d), "prev_grad": self._copies(self.prev_grad),
            "old_stps": [self._copies(rows(2 * j)) for j in self.slots],
            "old_dirs": [self._copies(rows(2 * j + 1)) for j in self.slots],
        }

    def load(self, s, history_size):
        """Restore from export()'s layout (values copied); checks shapes first."""
        name = f"{self.b.name}.load_state_dict"
        stps, dirs, ro = list(s.get("old_stps") or []), list(s.get("old_dirs") or []), \
            [float(r) for r in (s.get("ro") or [])]
        if not len(stps) == len(dirs) == len(ro):
            raise ValueError(f"{name}: {len(stps)} old_stps, {len(dirs)} old_dirs and "
                             f"{len(ro)} ro values do not match")
        d = self._load_vectors(s.get("d"), "d")
        prev = self._load_vectors(s.get("prev_grad"), "prev_grad")
        pairs = [(self._load_vectors(a, f"old_stps[{j}]"), self._load_vectors(b, f"old_dirs[{j}]"))
                 for j, (a, b) in enumerate(zip(stps, dirs))]
        self.forget()
        self.hist, self.cap = None, 0
        k = len(pairs)
        if k:
            self.cap = max(k, min(history_size + 1, k + 1))
            self.hist = self.b.flat((2 * self.cap, self.total))
            for j, (sv, yv) in enumerate(pairs):
                for r, vectors in ((2 * j, sv), (2 * j + 1, yv)):
                    for dst, src in zip(self.b.views(self.hist[r]), vectors):
                        self.b.copy_into(dst, src)
        sc = self.b.scalar
        self.slots, self.ro = list(range(k)), [sc(r) for r in ro]
        self.d, self.prev_grad = d, prev
        self.func_evals = int(s.get("func_evals", 0))
        self.n_iter = int(s.get("n_iter", 0))
        self.t = None if s.get("t") is None else float(s["t"])
        self.prev_loss = None if s.get("prev_loss") is None else float(s["prev_loss"])
        self.h_diag = sc(s.get("h_diag", 1.0))


class CgCore(_Core):
    """Nonlinear conjugate gradient (Goodfellow et al. Algorithm 8.9) with restarts and the
    strong-Wolfe line search.

    Note [conjugate-gradient restarts]: beta = 0 (d = -g) on the first iteration, after
    ``restart_every`` iterations without one, and whenever the new d would not descend
    (g'd = -g'g + beta g'd_prev >= 0, known from the dots before d is written). The three dots
    g'g, g'g_prev, g'd_prev are one pass; d = beta d - g, g_prev = g and g'd are a second.

    Note [conjugate-gradient step length]: CG directions carry no natural scale, so after a
    restart the first trial is min(1, 1/|g|_1) lr (as L-BFGS's first step) and later ones
    t_prev g_prev'd_prev / g'd, which assumes the directional derivative changes as in the last
    iteration (Nocedal & Wright eq. 3.60).
    """

    def __init__(self, backend):
        super().__init__(backend)
        self.gg_prev = None
        self.gtd_prev = None
        self.since_restart = 0

    def forget(self):
        super().forget()
        self.gg_prev = self.gtd_prev = None
        self.since_restart = 0

    def step(self, closure, hyper):
        return self.run(closure, hyper, self._direction, hyper["c1"], hyper["c2"])

    def _direction(self, g, h):
        """d = beta d - g (Note [conjugate-gradient restarts]); returns g'd, max |d| and the
        first trial step (Note [conjugate-gradient step length])."""
        st = self.st
        restart_every = h["restart_every"] or self.total
        if self.d is None or self.since_restart >= restart_every:
            (gg,) = _C.fullbatch_dots(g, [g], st)
            beta = 0.0
        else:
            gg, g_gprev, gd = _C.fullbatch_dots(g, [g, self.prev_grad, self.d], st)
            if h["beta"] == "fletcher_reeves":
                beta = gg / self.gg_prev
            else:
                beta = max(0.0, (gg - g_gprev) / self.gg_prev)
            if not -gg + beta * gd < 0:    # not a descent direction
                beta = 0.0
        if self.d is None:
            self.d, self.prev_grad = self._vectors(), self._vectors()
        gtd, dmax = map(self.b.scalar, _C.fullbatch_combine_(
            self.d, g, g, self.prev_grad, beta != 0.0, beta, -1.0, 1.0, st))
        self.since_restart = 1 if beta == 0.0 else self.since_restart + 1
        self.gg_prev = gg
        if beta == 0.0 or self.gtd_prev is None or self.t is None:
            t = self._first_step(g, h["lr"])
        else:
            t = self.t * self.gtd_prev / gtd
        self.gtd_prev = gtd
        return gtd, dmax, t

    def export(self):
        return {"func_evals": self.func_evals, "n_iter": self.n_iter, "t": _opt_float(self.t),
                "prev_loss": self.prev_loss, "gg_prev": _opt_float(self.gg_prev),
                "gtd_prev": _opt_float(self.gtd_prev),
                "since_restart": self.since_restart, "d": self._copies(self.d),
                "prev_grad": self._copies(self.prev_grad)}

    def load(self, s):
        d = self._load_vectors(s.get("d"), "d")
        prev = self._load_vectors(s.get("prev_grad"), "prev_grad")
        if (d is None) != (prev is None):
            raise ValueError(f"{self.b.name}.load_state_dict: d and prev_grad go together")
        self.forget()
        self.d, self.prev_grad = d, prev
        self.func_evals = int(s.get("func_evals", 0))
        self.n_iter = int(s.get("n_iter", 0))
        for key in ("t", "prev_loss", "gg_prev", "gtd_prev"):
            setattr(self, key, None if s.get(key) is None else float(s[key]))
        self.since_restart = int(s.get("since_restart", 0))


# -- ft.optim classes -------------------------------------------------------------------------
class _FullBatchOptimizer:
    _core_cls = None
    _hyper = None

    def __init__(self, params, defaults):
        name = type(self).__name__
        params = param_list(name, params)
        if params and isinstance(params[0], dict):
            if len(params) != 1:
                raise ValueError(f"{name} doesn't support per-parameter options (param groups)")
            group = dict(params[0])
            params = list(group.pop("params"))
            unknown = set(group) - set(defaults)
            if unknown:
                raise ValueError(f"{name}: unknown hyperparameter(s) {sorted(unknown)}")
            defaults = {**defaults, **group}
        self.defaults = dict(defaults)
        type(self)._hyper(name, defaults)
        self._core = self._core_cls(ArrayBackend(name, params))
        self.param_groups = [{**defaults, "params": self._core.b.params}]

    @property
    def params(self):
        return self._core.b.params

    def _hyperparameters(self):
        return type(self)._hyper(type(self).__name__, self.param_groups[0])

    def state_dict(self):
        """Copies of the state (Note [full-batch state]) and the hyperparameters."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": self._core.export(), "param_groups": [group]}

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items() if k != "params")
        return f"{type(self).__name__}({len(self.params)} params, {hyper})"


class LBFGS(_FullBatchOptimizer):
    """L-BFGS for NumPy and CuPy params, torch.optim.LBFGS's algorithm and arguments.

    ``step(closure)``: ``closure()`` re-evaluates the full-batch loss at the current params and
    returns ``(loss, grads)`` (grads aligned with the params, same shapes and dtype); one step
    runs up to ``max_iter`` iterations and ``max_eval`` closure calls, and returns the loss of the
    first call.

    Each iteration, with g the gradient and (s_i, y_i) the last ``history_size`` pairs of param
    and gradient changes (kept when y_i's_i > 1e-10), takes the direction

        d = -H g,  H the L-BFGS inverse-Hessian approximation (two-loop recursion):
        q = -g;  for i = k-1..0: a_i = rho_i s_i'q, q -= a_i y_i;   (rho_i = 1 / y_i's_i)
        r = gamma q  (gamma = s'y / y'y of the newest pair);
        for i = 0..k-1: b_i = rho_i y_i'r, r += (a_i - b_i) s_i;  d = r

    and moves ``x += t d``: t = lr (the first iteration ever: min(1, 1/|g|_1) lr), or the step
    that the strong-Wolfe line search finds (``line_search_fn="strong_wolfe"``, c1 = 1e-4,
    c2 = 0.9). Textbook form: Nocedal & Wright Algorithms 7.4-7.5; the seeds' BFGS update
    H_{k+1} = (I - rho s y') H_k (I - rho y s') + rho s s' applied k times to gamma I.

    It stops when max |g| <= tolerance_grad, max |t d| <= tolerance_change, the loss changes
    by less than tolerance_change, or g'd > -tolerance_change. Each two-loop recursion is one
    fused kernel pass per history entry and loop over all params (csrc/math/fullbatch.h). See
    Note [full-batch state] and Note [failed step].
    """
    _core_cls = LbfgsCore
    _hyper = staticmethod(lbfgs_hyper)

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      history_size=history_size, line_search_fn=line_search_fn))

    def step(self, closure=None):
        return self._core.step(closure, self._hyperparameters())

    def load_state_dict(self, state_dict):
        group = {**self.param_groups[0], **state_dict["param_groups"][0],
                 "params": self.params}
        hyper = lbfgs_hyper(f"{type(self).__name__}.load_state_dict", group)
        self._core.load(state_dict["state"], hyper["history_size"])
        self.param_groups[0] = group


class ConjugateGradient(_FullBatchOptimizer):
    """Nonlinear conjugate gradient for NumPy and CuPy params (Goodfellow et al. Algorithm 8.9).

    ``step(closure)`` as ``LBFGS.step``: ``closure()`` returns ``(loss, grads)``. Each iteration

        beta = g'g / g_prev'g_prev                       (Fletcher-Reeves), or
        beta = max(0, (g - g_prev)'g / g_prev'g_prev)     (Polak-Ribiere, clipped at 0: "PR+")
        d = -g + beta d_prev,   x += t d,  t from the strong-Wolfe line search

    with beta reset to 0 (a steepest-descent restart) on the first iteration, every
    ``restart_every`` iterations (default: the number of parameters, the classical choice) and
    whenever d would not be a descent direction (g'd >= 0). On a convex quadratic with exact line
    searches this is the linear conjugate gradient method and ends in at most n iterations.

    The first step after a restart is min(1, 1/|g|_1) lr, later ones start the line search
    from t_prev g_prev'd_prev / g'd (Nocedal & Wright eq. 3.60). The line search uses c1 = 1e-4
    and c2 = 0.1 (N&W's advice for CG; Fletcher-Reeves needs c2 < 1/2 to guarantee descent).
    ``line_search_fn=None`` moves by the fixed step instead. Stopping tests as ``LBFGS``.
    """
    _core_cls = CgCore
    _hyper = staticmethod(cg_hyper)

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, beta="polak_ribiere", restart_every=None,
                 line_search_fn="strong_wolfe", c1=1e-4, c2=0.1):
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, beta=beta,
                                      restart_every=restart_every,
                                      line_search_fn=line_search_fn, c1=c1, c2=c2))

    def step(self, closure=None):
        return self._core.step(closure, self._hyperparameters())

    def load_state_dict(self, state_dict):
        group = {**self.param_groups[0], **state_dict["param_groups"][0],
                 "params": self.params}
        cg_hyper(f"{type(self).__name__}.load_state_dict", group)
        self._core.load(state_dict["state"])
        self.param_groups[0] = group
