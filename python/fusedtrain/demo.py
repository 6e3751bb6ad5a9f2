"""The Quick start demo: a small batch-norm network trained once per optimizer, on our kernels only.

``python -m fusedtrain demo`` generates a three-arm spiral (no download), trains
2 -> 64 -> BN -> ReLU -> 64 -> BN -> ReLU -> 3 with softmax cross-entropy from the same
initialization and the same minibatches under every rule of the rule table (SGD, momentum,
Nesterov, AdaGrad, RMSProp, Adam, ...), and reports final loss, test accuracy and time per step, plus a PNG of the loss curves.
The dense layers run in NumPy (CuPy with ``--device cuda``); batch norm forward/backward and the
update rule are fusedtrain calls, one per layer and one per step for all eight tensors.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

import fusedtrain as ft


@dataclass(frozen=True)
class Optimizer:
    name: str
    fn: object
    states: int                     # zero-initialized state lists the rule keeps
    takes_step: bool
    hyper: dict = field(default_factory=dict)


# Learning rates picked per rule, as one would in practice: adaptive rules take smaller ones.
# The optimizers themselves come from the rule table (_optim_rules.FUNCTIONS), so a new rule is
# trained here without an edit, at its own default lr until it has a line below.
TUNED = {
    "sgd_": ("SGD", {"lr": 0.2}),
    "momentum_": ("Momentum", {"lr": 0.05, "momentum": 0.9}),
    "adagrad_": ("AdaGrad", {"lr": 0.1}),
    "rmsprop_": ("RMSProp", {"lr": 0.005, "alpha": 0.99}),
    "adadelta_": ("AdaDelta", {"lr": 1.0}),
    "adam_": ("Adam", {"lr": 0.01}),
    "adamw_": ("AdamW", {"lr": 0.01}),
    "nadam_": ("NAdam", {"lr": 0.01}),
    "lion_": ("Lion", {"lr": 0.002}),     # sign steps: a smaller lr than Adam's
}
# Variants worth a run of their own: (name, the rule they follow, its hyperparameters).
VARIANTS = (("Nesterov", "momentum_", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),)
DEFAULT_LR = 0.01   # a new rule whose lr has no default


def _optimizers():
    from ._optim_rules import FUNCTIONS, REQUIRED
    out = []
    for spec in FUNCTIONS.values():
        lr = next((h.default for h in spec.hypers if h.name == "lr"), None)
        name, hyper = TUNED.get(spec.fn, (spec.name or spec.fn.rstrip("_"),
                                          {} if lr is None else
                                          {"lr": DEFAULT_LR if lr is REQUIRED else lr}))
        out.append(Optimizer(name, getattr(ft, spec.fn), len(spec.states), spec.takes_step, hyper))
        out += [Optimizer(vname, out[-1].fn, out[-1].states, out[-1].takes_step, vhyper)
                for vname, fn, vhyper in VARIANTS if fn == spec.fn]
    return tuple(out)


OPTIMIZERS = _optimizers()


def spirals(points_per_class=400, classes=3, noise=0.4, seed=0):
    """Interleaved spiral arms in the plane, one class per arm: not linearly separable, so the
    hidden layers have to earn their keep. Returns float32 (N, 2) inputs and int labels."""
    rng = np.random.default_rng(seed)
    r = np.linspace(0.05, 1.0, points_per_class)
    xs, ys = [], []
    for k in range(classes):
        theta = np.linspace(0, 3 * math.pi, points_per_class) + 2 * math.pi * k / classes
        theta = theta + rng.standard_normal(points_per_class) * noise * 0.5
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(points_per_class, k))
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


class Net:
    """The network's tensors and its forward/backward; `xp` is numpy or cupy."""

    HIDDEN = 64

    def __init__(self, xp, classes, seed=0, matmul=None):
        rng = np.random.default_rng(seed)
        h = self.HIDDEN

        def he(fan_in, fan_out):
            return rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        # No bias before a batch norm: its beta does that job.
        host = [he(2, h), np.ones(h), np.zeros(h), he(h, h), np.ones(h), np.zeros(h),
                he(h, classes) * 0.5, np.zeros(classes)]
        self.xp, self.mm = xp, matmul or xp.matmul
        self.params = [xp.asarray(a, dtype=xp.float32) for a in host]
        self.running = [[xp.zeros(h, dtype=xp.float32), xp.ones(h, dtype=xp.float32)]
                        for _ in range(2)]

    def forward(self, x, training):
        xp = self.xp
        w1, g1, b1, w2, g2, b2, w3, c3 = self.params
        z1 = self.mm(x, w1)
        a1, m1, s1 = ft.batch_norm_forward(z1, g1, b1, *self.running[0], training=training)
        r1 = xp.maximum(a1, 0)
        z2 = self.mm(r1, w2)
        a2, m2, s2 = ft.batch_norm_forward(z2, g2, b2, *self.running[1], training=training)
        r2 = xp.maximum(a2, 0)
        logits = self.mm(r2, w3) + c3
        return logits, (x, z1, m1, s1, a1, r1, z2, m2, s2, a2, r2)

    def loss_and_grads(self, x, y):
        """Mean cross-entropy of a minibatch (a 0-d array, no host sync) and the grads."""
        xp = self.xp
        logits, (x, z1, m1, s1, a1, r1, z2, m2, s2, a2, r2) = self.forward(x, training=True)
        w1, g1, b1, w2, g2, b2, w3, c3 = self.params
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        n = len(y)
        rows = xp.arange(n)
        loss = -logp[rows, y].mean()
        dlogits = xp.exp(logp)
        dlogits[rows, y] -= 1
        dlogits /= n
        dw3, dc3 = self.mm(r2.T, dlogits), dlogits.sum(axis=0)
        da2 = self.mm(dlogits, w3.T) * (a2 > 0)
        dz2, dg2, db2 = ft.batch_norm_backward(da2, z2, g2, m2, s2)
        dw2 = self.mm(r1.T, dz2)
        da1 = self.mm(dz2, w2.T) * (a1 > 0)
        dz1, dg1, db1 = ft.batch_norm_backward(da1, z1, g1, m1, s1)
        dw1 = self.mm(x.T, dz1)
        grads = [dw1, dg1, db1, dw2, dg2, db2, dw3, dc3]
        return loss, [xp.ascontiguousarray(g, dtype=xp.float32) for g in grads]

    def accuracy(self, x, y):
        logits, _ = self.forward(x, training=False)
        return float((logits.argmax(axis=1) == y).mean())


def _einsum_matmul(a, b):
    return np.einsum("ij,jk->ik", a, b)


def one_blas_thread():
    """(context, matmul) for the NumPy run. Matrices of 128 x 64 are far too small to split
    across threads, and a threaded BLAS spinning beside our own kernel threads on a small
    machine made each step 20-60x slower; threadpoolctl (the `demo` extra) pins BLAS to one
    thread, and without it einsum's own loop (no BLAS) does the products."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), _einsum_matmul
    return threadpool_limits(limits=1, user_api="blas"), np.matmul


def train(opt, xp, data, steps, batch_size=128, seed=0, sync=lambda: None, matmul=None):
    """One training run; returns the per-step losses (host floats) and the test accuracy."""
    x_train, y_train, x_test, y_test = data
    net = Net(xp, classes=int(y_train.max()) + 1, seed=seed, matmul=matmul)
    state = [[xp.zeros_like(p) for p in net.params] for _ in range(opt.states)]
    order = np.random.default_rng(seed + 1)  # the same minibatches for every optimizer
    losses = []
    n = len(y_train)
    sync()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = xp.asarray(order.integers(0, n, batch_size))
        loss, grads = net.loss_and_grads(x_train[idx], y_train[idx])
        extra = {"step": step} if opt.takes_step else {}
        opt.fn(net.params, grads, *state, **extra, **opt.hyper)
        losses.append(loss)
    sync()
    seconds = time.perf_counter() - t0
    losses = [float(v) for v in (xp.stack(losses).get() if xp is not np else losses)]
    return {"optimizer": opt.name, "losses": losses, "ms_per_step": 1e3 * seconds / steps,
            "test_accuracy": net.accuracy(x_test, y_test),
            "train_accuracy": net.accuracy(x_train, y_train)}


def final_loss(losses):
    tail = losses[-max(1, len(losses) // 20):]   # the last 5%: one minibatch is noisy
    return sum(tail) / len(tail)


def plot(results, path, title):
    from .bench.report import require_matplotlib
    plt = require_matplotlib("demo's loss plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        losses = np.asarray(r["losses"])
        k = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")  # a moving average over k steps
        ax.plot(np.arange(k, len(losses) + 1), smooth, label=f"{r['optimizer']} "
                f"({100 * r['test_accuracy']:.1f}% test)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy, moving average)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(*, device="cpu", steps=None, quick=False, plot_path="fusedtrain_demo.png", seed=0,
        print_fn=print):
    """Trains once per optimizer, prints the table and writes the plot; returns the results."""
    if device == "cuda":
        try:
            import cupy as xp
        except ImportError:
            raise SystemExit("fusedtrain demo --device cuda needs CuPy: pip install 'fusedtrain[cuda]'")
        if not ft.info()["cuda_devices"]:
            raise SystemExit("fusedtrain demo --device cuda: this fusedtrain build sees no CUDA "
                             "device (python -m fusedtrain info)")
        sync = xp.cuda.get_current_stream().synchronize
        limits, matmul = contextlib.nullcontext(), None
    elif device == "cpu":
        xp, sync = np, (lambda: None)
        limits, matmul = one_blas_thread()
    else:
        raise SystemExit(f"fusedtrain demo: unknown device {device!r} (cpu or cuda)")
    if plot_path:
        from .bench.report import require_matplotlib
        require_matplotlib("demo's loss plot (or pass --no-plot)")  # fail before training
    steps = steps or (150 if quick else 1000)
    x, y = spirals(points_per_class=200 if quick else 400, seed=seed)
    split = len(y) * 4 // 5
    data = [xp.asarray(a) for a in (x[:split], y[:split], x[split:], y[split:])]
    print_fn(f"3-class spirals: {split} train / {len(y) - split} test points; "
             f"net 2-64-BN-ReLU-64-BN-ReLU-3; {steps} steps of 128 on {device}")
    with limits:
        results = [train(opt, xp, data, steps, seed=seed, sync=sync, matmul=matmul)
                   for opt in OPTIMIZERS]
    name_w = max(len(o.name) for o in OPTIMIZERS)
    print_fn(f"{'optimizer':<{name_w}}  final loss  train acc  test acc  ms/step")
    for r in results:
        print_fn(f"{r['optimizer']:<{name_w}}  {final_loss(r['losses']):>10.4f}  "
                 f"{100 * r['train_accuracy']:>8.1f}%  {100 * r['test_accuracy']:>7.1f}%  "
                 f"{r['ms_per_step']:>7.3f}")
    if plot_path:
        plot(results, plot_path, f"fusedtrain {ft.__version__}: optimizers on a 3-class spiral "
                                 f"({device}, batch norm, {steps} steps)")
        print_fn(f"wrote {plot_path}")
    return results
