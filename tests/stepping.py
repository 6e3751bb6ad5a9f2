"""Runs one optimizer case side by side on the kernels and the float64 reference, step by step."""

import zlib

import numpy as np

import fusedtrain as ft
import fusedtrain.reference as ref
from precisions import Tolerance, assert_close, dtype_named

MASTER_TOL = Tolerance(2e-5, 2e-6)


def seed_for(*parts):
    """A stable seed per test, so a failure reproduces and cases do not share random streams."""
    return zlib.crc32("/".join(map(str, parts)).encode())


class SideBySide:
    """The same problem held twice: in the kernels' storage types and in the reference's float64.

    Half params without a master copy stay half in the reference too, so it rounds them to the
    storage dtype after every step exactly where the kernels do.
    """

    def __init__(self, case, precision, shapes, seed):
        self.case, self.precision = case, precision
        self.rng = np.random.default_rng(seed)
        self.param_dtype = dtype_named(precision.param)
        self.grad_dtype = dtype_named(precision.grad)
        state_dtype = dtype_named(precision.state)
        self.shapes = [tuple(s) for s in shapes]

        params = [self.rng.standard_normal(s).astype(np.float32).astype(self.param_dtype) for s in self.shapes]
        self.ext_params = params
        self.start_scale = [float(np.max(np.abs(p.astype(np.float64)))) if p.size else 0.0 for p in params]
        self.ref_params = [p.copy() if precision.half else p.astype(np.float64) for p in params]
        self.ext_master = [p.astype(np.float32) for p in params] if precision.master else None
        self.ref_master = [p.astype(np.float64) for p in params] if precision.master else None
        self.ext_state, self.ref_state = {}, {}
        for name in case.state_names:
            value = case.state_init.get(name, 0.0)
            self.ext_state[name] = [np.full(s, value, dtype=state_dtype) for s in self.shapes]
            self.ref_state[name] = [np.full(s, value, dtype=np.float64) for s in self.shapes]

    def new_grads(self):
        """Fresh gradients for one step, scaled up by grad_scale as a loss scaler would."""
        scale = self.case.grad_scale or 1.0
        grads = [self.rng.standard_normal(s) * scale for s in self.shapes]
        if self.case.rule.sign_state:
            grads = [self.away_from_sign_flip(i, g, scale) for i, g in enumerate(grads)]
        grads = [g.astype(np.float32).astype(self.grad_dtype) for g in grads]
        return grads, [g.astype(np.float64) for g in grads]

    SIGN_MARGIN = 0.05

    def away_from_sign_flip(self, i, g, scale):
        """Moves the grads whose interpolation c = beta1*m + (1 - beta1)*g with the rule's sign
        state (Lion) lies within SIGN_MARGIN of 0 to c = +-SIGN_MARGIN: sign() is discontinuous
        there, and rounding differences of the storage types would flip it."""
        o = {**self.case.rule.defaults(), **self.case.hyper}
        beta1, flip = o["beta1"], -1.0 if o.get("maximize") else 1.0
        m = self.ref_state[self.case.rule.sign_state][i]
        g_eff = flip * g / scale
        c = beta1 * m + (1 - beta1) * g_eff
        near = np.abs(c) < self.SIGN_MARGIN
        if beta1 >= 1 or not near.any():
            return g
        target = np.where(c < 0, -self.SIGN_MARGIN, self.SIGN_MARGIN)
        g_eff = np.where(near, (target - beta1 * m) / (1 - beta1), g_eff)
        return flip * g_eff * scale

    def call_rule(self, module, params, grads, state, master, step, **extra):
        rule = self.case.rule
        args = [params, grads] + [state[n] for n in rule.positional_state]
        kwargs = {n: state[n] for n in rule.keyword_state(self.case.options)}
        if rule.takes_step:
            kwargs["step"] = step
        if master is not None:
            kwargs["master_params"] = master
        getattr(module, rule.name)(*args, **kwargs, **self.case.options, **extra)

    def step(self, step, **extra):
        ext_grads, ref_grads = self.new_grads()
        self.call_rule(ft, self.ext_params, ext_grads, self.ext_state, self.ext_master, step, **extra)
        self.call_rule(ref, self.ref_params, ref_grads, self.ref_state, self.ref_master, step, **extra)

    def run(self, steps):
        for k in range(1, steps + 1):
            self.step(k)
        return self

    def check(self, where=""):
        p = self.precision
        for i in range(len(self.shapes)):
            s0 = self.start_scale[i]
            assert_close(self.ext_params[i], self.ref_params[i], p.param_tol, f"{where}params[{i}]", s0)
            if p.master:
                assert_close(self.ext_master[i], self.ref_master[i], MASTER_TOL,
                             f"{where}master_params[{i}]", s0)
            for name in self.case.state_names:
                assert_close(self.ext_state[name][i], self.ref_state[name][i], p.state_tol, f"{where}{name}[{i}]")
