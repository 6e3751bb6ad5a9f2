"""Float64 reference of the full-batch methods, on the params flattened into one vector.

``LBFGS`` follows torch.optim.LBFGS's step (its iteration, history update, two-loop recursion,
step lengths and stopping tests, in that order); ``ConjugateGradient`` is Goodfellow et al.
Algorithm 8.9 as fusedtrain.fullbatch documents it. Both take the params (a list of arrays,
updated in place: each move writes x rounded to the params' dtype) and ``step(closure)`` with a
closure returning ``(loss, grads)`` at the current params; they share the scalar strong-Wolfe
search with the kernels' classes (fusedtrain._line_search), which the comparison with torch
checks on its own.
"""
import numpy as np

from .._line_search import strong_wolfe


class _Flat:
    def __init__(self, params, hyper):
        self.params = list(params)
        self.hyper = hyper
        self.state = {"func_evals": 0, "n_iter": 0}
        self.x = np.concatenate([np.asarray(p, np.float64).ravel() for p in self.params])

    def _write(self, x):
        k = 0
        for p in self.params:
            n = p.size
            p[...] = x[k:k + n].reshape(p.shape).astype(p.dtype)
            k += n
        self.x = x

    def _eval(self, closure, x=None):
        if x is not None:
            self._write(x)
        loss, grads = closure()
        g = np.concatenate([np.asarray(a, np.float64).ravel() for a in grads])
        return loss, float(loss), g

    def step(self, closure):
        """torch.optim.LBFGS.step's iteration around the method's _direction(g) -> (d, t)."""
        h, s = self.hyper, self.state
        orig, loss, g = self._eval(closure)
        self._evals = 1
        s["func_evals"] += 1
        if np.abs(g).max(initial=0.0) <= h["tolerance_grad"]:
            return orig
        for n_iter in range(1, h["max_iter"] + 1):
            s["n_iter"] += 1
            d, t = self._direction(g)
            s.update(d=d, prev_g=g.copy(), t=t, prev_loss=loss)
            gtd = float(g @ d)
            if gtd > -h["tolerance_change"]:
                break
            loss, g, t, opt_cond = self._move(closure, t, d, n_iter, self.c1, self.c2, loss, g,
                                              gtd)
            s["t"] = t
            if self._finish(n_iter, opt_cond, loss, t, d):
                break
        return orig

    def _search(self, closure, t, f, g, gtd, d, c1, c2):
        x0 = self.x.copy()

        def phi(t_trial, live):
            _, f_new, g_new = self._eval(closure, x0 + t_trial * d)
            return f_new, g_new, float(g_new @ d)

        dmax = float(np.abs(d).max(initial=0.0))
        f, g, t, evals = strong_wolfe(phi, t, f, g, gtd, dmax, c1=c1, c2=c2,
                                      tolerance_change=self.hyper["tolerance_change"],
                                      max_ls=self.hyper["max_eval"] - self._evals)
        self._write(x0 + t * d)
        return f, g, t, evals

    def _finish(self, n_iter, opt_cond, loss, t, d):
        h, s = self.hyper, self.state
        return (n_iter == h["max_iter"] or self._evals >= h["max_eval"] or opt_cond
                or np.abs(d * t).max(initial=0.0) <= h["tolerance_change"]
                or abs(loss - s["prev_loss"]) < h["tolerance_change"])

    def _move(self, closure, t, d, n_iter, c1, c2, loss, g, gtd):
        """A line search or a fixed step; returns (loss, g, t, opt_cond)."""
        h = self.hyper
        if h["line_search_fn"] == "strong_wolfe":
            loss, g, t, evals = self._search(closure, t, loss, g, gtd, d, c1, c2)
        else:
            self._write(self.x + t * d)
            evals = 0
            if n_iter != h["max_iter"]:
                _, loss, g = self._eval(closure)
                evals = 1
        self._evals += evals
        self.state["func_evals"] += evals
        return loss, g, t, bool(evals) and np.abs(g).max(initial=0.0) <= h["tolerance_grad"]


def _defaults(lr, max_iter, max_eval, tolerance_grad, tolerance_change, line_search_fn):
    return dict(lr=lr, max_iter=max_iter, max_eval=max_iter * 5 // 4 if max_eval is None
                else max_eval, tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                line_search_fn=line_search_fn)


class LBFGS(_Flat):
    """torch.optim.LBFGS in float64 on a flat vector (the two-loop recursion written out)."""

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        super().__init__(params, dict(_defaults(lr, max_iter, max_eval, tolerance_grad,
                                                tolerance_change, line_search_fn),
                                      history_size=history_size))

    c1, c2 = 1e-4, 0.9

    def _direction(self, g):
        h, s = self.hyper, self.state
        if s["n_iter"] == 1:
            s.update(old_s=[], old_y=[], ro=[], H=1.0)
            return -g, min(1.0, 1.0 / np.abs(g).sum()) * h["lr"]
        y, sv = g - s["prev_g"], s["d"] * s["t"]
        ys = float(y @ sv)
        if ys > 1e-10:
            if len(s["old_s"]) == h["history_size"]:
                for key in ("old_s", "old_y", "ro"):
                    s[key].pop(0)
            s["old_s"].append(sv)
            s["old_y"].append(y)
            s["ro"].append(1.0 / ys)
            s["H"] = ys / float(y @ y)
        k = len(s["old_s"])
        al = [0.0] * k
        q = -g
        for i in range(k - 1, -1, -1):
            al[i] = float(s["old_s"][i] @ q) * s["ro"][i]
            q = q - al[i] * s["old_y"][i]
        r = q * s["H"]
        for i in range(k):
            be = float(s["old_y"][i] @ r) * s["ro"][i]
            r = r + (al[i] - be) * s["old_s"][i]
        return r, h["lr"]


class ConjugateGradient(_Flat):
    """Goodfellow et al. Algorithm 8.9 with Fletcher-Reeves or clipped Polak-Ribiere beta,
    restarts and the strong-Wolfe line search, in float64 on a flat vector."""

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, beta="polak_ribiere", restart_every=None,
                 line_search_fn="strong_wolfe", c1=1e-4, c2=0.1):
        super().__init__(params, dict(_defaults(lr, max_iter, max_eval, tolerance_grad,
                                                tolerance_change, line_search_fn),
                                      beta=beta, restart_every=restart_every, c1=c1, c2=c2))

    @property
    def c1(self):
        return self.hyper["c1"]

    @property
    def c2(self):
        return self.hyper["c2"]

    def _direction(self, g):
        h, s = self.hyper, self.state
        gg = float(g @ g)
        beta = 0.0
        if "gg" in s and s["since"] < (h["restart_every"] or self.x.size):
            if h["beta"] == "fletcher_reeves":
                beta = gg / s["gg"]
            else:
                beta = max(0.0, float((g - s["prev_g"]) @ g) / s["gg"])
            if not float(g @ (beta * s["d"] - g)) < 0:
                beta = 0.0
        d = -g if beta == 0.0 else beta * s["d"] - g
        s["since"] = 1 if beta == 0.0 else s["since"] + 1
        gtd = float(g @ d)
        if beta == 0.0 or "gtd" not in s:
            t = min(1.0, 1.0 / np.abs(g).sum()) * h["lr"]
        else:
            t = s["t"] * s["gtd"] / gtd
        s.update(gg=gg, gtd=gtd)
        return d, t


__all__ = ["LBFGS", "ConjugateGradient"]
