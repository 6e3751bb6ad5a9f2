"""torch.optim drop-ins of the full-batch methods: ``LBFGS`` (a subclass of torch.optim.LBFGS) and
``ConjugateGradient``, whose vector work runs in fusedtrain's multi-tensor kernels (CPU SIMD or
CUDA) without flattening the params. The algorithms are fusedtrain.fullbatch's.

Note [torch full-batch state]: the state lives per param tensor while stepping (Note
[full-batch state]); ``state_dict()`` writes it in torch.optim.LBFGS's layout (one entry on the
first param: ``func_evals``, ``n_iter``, flat ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``,
``H_diag``, ``prev_flat_grad``, ``prev_loss``), so a checkpoint loads into torch.optim.LBFGS and
back and both continue on the same trajectory. The flat vectors are copies (concatenations),
made only when a state dict is asked for. ConjugateGradient uses the same flat style for its own
keys (``d``, ``prev_flat_grad``, ``t``, ``prev_loss``, ``gg_prev``, ``gtd_prev``,
``since_restart``). Between steps ``state[params[0]]`` holds the counters alone, ``func_evals`` and
``n_iter``, as torch's do (loops read them to stop).
"""
import torch

from ..fullbatch import (CgCore, LbfgsCore, cg_hyper, check_uniform, float32_scalar, lbfgs_hyper,
                         loss_value)

__all__ = ["LBFGS", "ConjugateGradient"]

_HALF = (torch.float16, torch.bfloat16)


class TorchBackend:
    """torch params: state tensors on the params' device, grads read from ``p.grad`` after the
    closure (``None`` reads as zeros, as torch.optim.LBFGS does).

    Note [complex full-batch params]: torch.optim.LBFGS flattens a complex param as
    ``view_as_real(p)``, two real values per entry, so its vectors, dot products and checkpoint
    are those of the real and imaginary parts.  Here the kernels get those real views of the
    param and of its grad (memory shared, no copy): the same vectors, per param tensor, and the
    same flat checkpoint layout."""

    closure_returns = "returning the loss after backward() has set the params' .grad"

    def __init__(self, name, params):
        self.name = name
        self.owners = list(params)      # the caller's params: .grad and the state key
        for i, p in enumerate(self.owners):
            if not p.is_contiguous():
                raise ValueError(f"{name}: params[{i}] is not contiguous")
        self.complex = [torch.is_complex(p) for p in self.owners]
        self.params = [torch.view_as_real(p) if c else p
                       for p, c in zip(self.owners, self.complex)]
        check_uniform(name, self.params, lambda p: (p.dtype, p.device))
        self.half = self.params[0].dtype in _HALF
        self.compute = torch.float32 if self.half else self.params[0].dtype
        self.scalar = float32_scalar if self.compute == torch.float32 else float   # Note [torch scalar precision]
        self._zeros = {}

    def flat(self, shape):
        return torch.empty(shape, dtype=self.compute, device=self.params[0].device)

    def views(self, flat):
        """Per-param views (shapes of the params) of a flat vector over all params."""
        out, k = [], 0
        for p in self.params:
            out.append(flat[k:k + p.numel()].view(p.shape))
            k += p.numel()
        return out

    def copy_into(self, dst, src):
        dst.copy_(src)

    def evaluate(self, closure):
        with torch.enable_grad():
            out = closure()
        value = loss_value(self.name, out)
        grads = []
        for i, p in enumerate(self.params):
            g = self.owners[i].grad
            if g is None:
                g = self._zeros.get(i)
                if g is None:
                    g = self._zeros[i] = torch.zeros_like(p)
            else:
                if g.is_sparse:
                    g = g.to_dense()
                elif not g.is_contiguous():
                    g = g.contiguous()
                if self.complex[i] and torch.is_complex(g):
                    g = torch.view_as_real(g.resolve_conj())
            grads.append(g)
        return out, value, grads


def _flat(arrays):
    return None if arrays is None else torch.cat([a.reshape(-1) for a in arrays])


class _FlatCheckpoint:
    """state_dict() / load_state_dict() in the flat layout (Note [torch full-batch state])."""

    # our export() key -> the checkpoint's key, for the per-param vectors
    _vectors = {"d": "d", "prev_grad": "prev_flat_grad"}
    _scalars = {}

    def _publish_counters(self):
        """torch.optim.LBFGS keeps its iteration counters in ``state[params[0]]``, where training
        loops read them (``n_iter``, ``func_evals``); ours are copied there after every step and
        load (the vectors stay ours: state_dict() gives them in torch's layout)."""
        self.state[self._ft.b.owners[0]] = {"func_evals": self._ft.func_evals,
                                            "n_iter": self._ft.n_iter}

    def _split(self, flat, what):
        params = self._ft.b.params
        total = sum(p.numel() for p in params)
        if flat.numel() != total:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {what} has {flat.numel()} "
                             f"values for params of {total}")
        out, k = [], 0
        for p in params:
            out.append(flat[k:k + p.numel()].reshape(p.shape))
            k += p.numel()
        return out

    def _export_state(self, s):
        out = {"func_evals": s["func_evals"], "n_iter": s["n_iter"]}
        if s["d"] is None:
            return out
        for ours, theirs in self._vectors.items():
            out[theirs] = _flat(s[ours])
        for ours, theirs in self._scalars.items():
            out[theirs] = s[ours]
        return out

    def _import_state(self, st):
        s = {"func_evals": st.get("func_evals", 0), "n_iter": st.get("n_iter", 0)}
        for ours, theirs in self._vectors.items():
            v = st.get(theirs)
            s[ours] = None if v is None else self._split(v, theirs)
        for ours, theirs in self._scalars.items():
            v = st.get(theirs)
            s[ours] = None if v is None else float(v)
        return s

    def state_dict(self):
        """torch.optim's state_dict, with the state in the flat layout (copies)."""
        s = self._ft.export()
        p0 = self._ft.b.owners[0]
        entry = self._export_state(s)
        if s["d"] is not None:
            entry.update(self._export_extra(s, p0))
        saved = self.state.pop(p0, None)
        self.state[p0] = entry
        try:
            return super().state_dict()
        finally:
            del self.state[p0]
            if saved is not None:
                self.state[p0] = saved

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)   # torch's checks; casts tensors to the params'
        st = self.state.pop(self._ft.b.owners[0], {})
        s = self._import_state(st)
        s.update(self._import_extra(st))
        self._load(s)
        self._publish_counters()

    def _export_extra(self, s, p0):
        return {}

    def _import_extra(self, st):
        return {}


class LBFGS(_FlatCheckpoint, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` on fusedtrain's kernels: same arguments, closure API, iterates and
    function evaluations (up to rounding), and state_dict layout (Note [torch full-batch state]).

    Differences: the history is kept per param tensor in float32 (float64 for float64 params)
    instead of one flat vector, so nothing is concatenated per iteration; each two-loop
    recursion is 2k+1 fused passes over all params (Note [fused two-loop]); the line search's
    trial points are written as base + t d (Note [line-search base]); a closure that raises or
    returns a NaN loss puts the params back as they were before ``step()`` and re-raises
    (Note [failed step]). Params must be contiguous, of one dtype on one device; complex
    params are stepped as their real and imaginary parts, as torch's (Note [complex full-batch
    params]).

    Textbook form: see ``fusedtrain.optim.LBFGS``.
    """
    _scalars = {"t": "t", "prev_loss": "prev_loss"}

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval,
                         tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                         history_size=history_size, line_search_fn=line_search_fn)
        lbfgs_hyper(type(self).__name__, self.param_groups[0])
        self._ft = LbfgsCore(TorchBackend(type(self).__name__, self._params))

    @torch.no_grad()
    def step(self, closure=None):
        """Up to ``max_iter`` L-BFGS iterations; ``closure`` re-evaluates the loss (calling
        backward()) and returns it. Returns the first evaluation's loss."""
        try:
            return self._ft.step(closure, lbfgs_hyper(type(self).__name__, self.param_groups[0]))
        finally:
            self._publish_counters()

    def _export_extra(self, s, p0):
        dtype = self._ft.b.compute
        return {"old_dirs": [_flat(y) for y in s["old_dirs"]],
                "old_stps": [_flat(x) for x in s["old_stps"]],
                "ro": [torch.tensor(r, dtype=dtype, device=p0.device) for r in s["ro"]],
                "H_diag": torch.tensor(s["h_diag"], dtype=dtype, device=p0.device)}

    def _import_extra(self, st):
        return {"old_dirs": [self._split(y, "old_dirs") for y in st.get("old_dirs") or []],
                "old_stps": [self._split(x, "old_stps") for x in st.get("old_stps") or []],
                "ro": [float(r) for r in st.get("ro") or []],
                "h_diag": float(st.get("H_diag", 1.0))}

    def _load(self, s):
        self._ft.load(s, lbfgs_hyper(type(self).__name__, self.param_groups[0])["history_size"])


class ConjugateGradient(_FlatCheckpoint, torch.optim.Optimizer):
    """Nonlinear conjugate gradient (Goodfellow et al. Algorithm 8.9: Fletcher-Reeves or clipped
    Polak-Ribiere beta, restarts, strong-Wolfe line search) as a torch.optim.Optimizer with
    torch.optim.LBFGS's closure API; see ``fusedtrain.optim.ConjugateGradient`` for the formulas.
    One param group; params contiguous, of one dtype on one device (complex ones as their real
    and imaginary parts, Note [complex full-batch params])."""
    _scalars = {"t": "t", "prev_loss": "prev_loss", "gg_prev": "gg_prev",
                "gtd_prev": "gtd_prev"}

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, beta="polak_ribiere", restart_every=None,
                 line_search_fn="strong_wolfe", c1=1e-4, c2=0.1):
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        beta=beta, restart_every=restart_every, line_search_fn=line_search_fn,
                        c1=c1, c2=c2)
        cg_hyper(type(self).__name__, defaults)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"{type(self).__name__} doesn't support per-parameter options "
                             f"(parameter groups)")
        self._params = self.param_groups[0]["params"]
        self._ft = CgCore(TorchBackend(type(self).__name__, self._params))

    @torch.no_grad()
    def step(self, closure=None):
        """Up to ``max_iter`` CG iterations; ``closure`` re-evaluates the loss (calling
        backward()) and returns it. Returns the first evaluation's loss."""
        try:
            return self._ft.step(closure, cg_hyper(type(self).__name__, self.param_groups[0]))
        finally:
            self._publish_counters()

    def _export_extra(self, s, p0):
        return {"since_restart": s["since_restart"]}

    def _import_extra(self, st):
        return {"since_restart": int(st.get("since_restart", 0))}

    def _load(self, s):
        self._ft.load(s)
