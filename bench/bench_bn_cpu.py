"""Times fusedtrain batch norm (forward, backward, forward+backward) on CPU against PyTorch in one run."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

import norm_bench
from norm_bench import torch


@dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple            # the array's own shape (channels last when channels_last)
    channels_last: bool
    target_fwd_bwd: float   # required fusedtrain speedup over torch for forward+backward

    @property
    def channels(self):
        return self.shape[-1] if self.channels_last else self.shape[1]

    @property
    def numel(self):
        return int(np.prod(self.shape))

    @property
    def row(self):
        return {"channels_last": self.channels_last}


WORKLOADS = (
    Workload("64x256x28x28-nchw", (64, 256, 28, 28), False, 2.5),
    Workload("64x256x28x28-nhwc", (64, 28, 28, 256), True, 2.0),
    Workload("512x1024-2d", (512, 1024), False, 1.5),
)
EPS, MOMENTUM = 1e-5, 0.1


def ft_calls(ft, w, x, dy, weight, bias, rm, rv):
    cl = w.channels_last
    _, mean, invstd = ft.batch_norm_forward(x, weight, bias, rm, rv, channels_last=cl)

    def fwd():
        return ft.batch_norm_forward(x, weight, bias, rm, rv, momentum=MOMENTUM, eps=EPS,
                                     channels_last=cl)

    def bwd():
        return ft.batch_norm_backward(dy, x, weight, mean, invstd, channels_last=cl)

    def both():
        _, m, s = fwd()
        return ft.batch_norm_backward(dy, x, weight, m, s, channels_last=cl)

    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def torch_calls(w, x, dy, weight, bias, rm, rv):
    """torch's own kernels on the same memory: channels-last tensors for the NHWC workload."""
    def nchw(a):
        t = torch.from_numpy(a)
        return t.permute(0, 3, 1, 2) if w.channels_last else t  # channels_last memory format
    tx, tdy = nchw(x), nchw(dy)
    tw, tb = torch.from_numpy(weight), torch.from_numpy(bias)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    aten = torch.ops.aten
    _, smean, sinvstd = aten.native_batch_norm(tx, tw, tb, trm, trv, True, MOMENTUM, EPS)

    def fwd():
        return aten.native_batch_norm(tx, tw, tb, trm, trv, True, MOMENTUM, EPS)

    def bwd():
        return aten.native_batch_norm_backward(tdy, tx, tw, trm, trv, smean, sinvstd, True, EPS,
                                               [True, True, True])

    def both():
        _, m, s = fwd()
        return aten.native_batch_norm_backward(tdy, tx, tw, trm, trv, m, s, True, EPS,
                                               [True, True, True])

    return {"forward": fwd, "backward": bwd, "fwd+bwd": both}


def build(w, ft, use_torch):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(w.shape, dtype=np.float32) * 2 + 0.5)
    dy = rng.standard_normal(w.shape, dtype=np.float32)
    C = w.channels
    weight = rng.uniform(0.5, 1.5, C).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    ours = ft_calls(ft, w, x, dy, weight, bias, rm, rv)
    theirs = torch_calls(w, x, dy, weight, bias, rm, rv) if use_torch else {}
    return ours, theirs


def main(argv=None) -> int:
    args = norm_bench.parse_args(__doc__, argv)
    return norm_bench.run(args, WORKLOADS, build, benchmark="cpu_batch_norm", json_stem="cpu_bn",
                          settings={"eps": EPS, "momentum": MOMENTUM,
                                    "torch_calls": "aten.native_batch_norm / native_batch_norm_backward, "
                                                   "channels_last memory format for NHWC"})


if __name__ == "__main__":
    sys.exit(main())
