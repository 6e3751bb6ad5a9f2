"""Times fusedtrain layer, RMS and group norm (forward, backward, forward+backward) on CPU against
PyTorch's own kernels in one run: aten.native_layer_norm(_backward), aten.native_group_norm(_backward)
on the same memory (channels-last tensors for NHWC), and for RMS norm torch.nn.functional.rms_norm
with its autograd backward (torch has no CPU kernel of _fused_rms_norm_backward). Layer norm also
without a bias (ours bias_grads=False, torch's backward not asked for the bias grad)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

import norm_bench
from norm_bench import torch

EPS = 1e-5


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str               # layer, rms, group
    shape: tuple            # the array's own shape (channels last when channels_last)
    target_fwd_bwd: float | None  # required speedup over torch for forward+backward; None: none
    groups: int = 0
    channels_last: bool = False
    bias: bool = True       # layer norm: False is a layer without a bias (bias_grads=False)
    row: dict = field(default_factory=dict)

    @property
    def numel(self):
        return int(np.prod(self.shape))


WORKLOADS = (
    Workload("layernorm 8192x1024", "layer", (8192, 1024), 1.5),
    Workload("layernorm 8192x1024 no bias", "layer", (8192, 1024), 1.5, bias=False, row={"bias": False}),
    Workload("rmsnorm 8192x4096", "rms", (8192, 4096), 2.0),
    Workload("groupnorm 32x256x56x56 g32 nchw", "group", (32, 256, 56, 56), 2.0, groups=32,
             row={"channels_last": False}),
    Workload("groupnorm 32x56x56x256 g32 nhwc", "group", (32, 56, 56, 256), 2.0, groups=32,
             channels_last=True, row={"channels_last": True}),
    # Small maps (detection heads, late stages): no target, the shapes where ours is closest to
    # torch's or behind it (README, "Layer, RMS, group and instance norm").
    Workload("groupnorm 8x2048x7x7 g32 nchw", "group", (8, 2048, 7, 7), None, groups=32,
             row={"channels_last": False}),
    Workload("groupnorm 8x7x7x2048 g32 nhwc", "group", (8, 7, 7, 2048), None, groups=32,
             channels_last=True, row={"channels_last": True}),
    Workload("groupnorm 64x32x8x8 g32 nchw", "group", (64, 32, 8, 8), None, groups=32,
             row={"channels_last": False}),
)


def _fwd_bwd(fwd, bwd_of):
    """The three calls of a workload from its forward and its backward given the forward's outputs."""
    saved = fwd()
    return {"forward": fwd, "backward": lambda: bwd_of(saved), "fwd+bwd": lambda: bwd_of(fwd())}


def ft_calls(ft, w, x, dy, weight, bias):
    H = w.shape[-1]
    if w.kind == "layer":
        b = bias if w.bias else None
        return _fwd_bwd(lambda: ft.layer_norm_forward(x, H, weight, b, eps=EPS),
                        lambda s: ft.layer_norm_backward(dy, x, H, s[1], s[2], weight, bias_grads=w.bias))
    if w.kind == "rms":
        return _fwd_bwd(lambda: ft.rms_norm_forward(x, H, weight, eps=EPS),
                        lambda s: ft.rms_norm_backward(dy, x, H, s[1], weight))
    cl = w.channels_last
    return _fwd_bwd(lambda: ft.group_norm_forward(x, w.groups, weight, bias, eps=EPS, channels_last=cl),
                    lambda s: ft.group_norm_backward(dy, x, w.groups, s[1], s[2], weight, channels_last=cl))


def torch_calls(w, x, dy, weight, bias):
    aten = torch.ops.aten
    tx, tdy, tw, tb = (torch.from_numpy(a) for a in (x, dy, weight, bias))
    H = w.shape[-1]
    if w.kind == "layer":
        b = tb if w.bias else None
        return _fwd_bwd(lambda: aten.native_layer_norm(tx, [H], tw, b, EPS),
                        lambda s: aten.native_layer_norm_backward(tdy, tx, [H], s[1], s[2], tw, b,
                                                                  [True, True, w.bias]))
    if w.kind == "rms":
        txg, twg = tx.clone().requires_grad_(True), tw.clone().requires_grad_(True)
        return _fwd_bwd(lambda: torch.nn.functional.rms_norm(txg, [H], twg, EPS),
                        lambda y: torch.autograd.grad(y, (txg, twg), tdy, retain_graph=True))
    if w.channels_last:  # the same memory as an (N, C, H, W) tensor in channels_last format
        tx, tdy = (t.permute(0, 3, 1, 2) for t in (tx, tdy))
    N, C = tx.shape[:2]
    HW = tx.numel() // (N * C)
    return _fwd_bwd(lambda: aten.native_group_norm(tx, tw, tb, N, C, HW, w.groups, EPS),
                    lambda s: aten.native_group_norm_backward(tdy, tx, s[1], s[2], tw, N, C, HW,
                                                              w.groups, [True, True, True]))


def build(w, ft, use_torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(w.shape, dtype=np.float32) * 2 + 0.5
    dy = rng.standard_normal(w.shape, dtype=np.float32)
    P = w.shape[-1] if w.kind != "group" else (w.shape[-1] if w.channels_last else w.shape[1])
    weight = rng.uniform(0.5, 1.5, P).astype(np.float32)
    bias = rng.standard_normal(P).astype(np.float32)
    # With torch at hand ours takes torch tensors (views of the same memory): the path users take,
    # outputs allocated through torch (Note [huge pages]).
    mine = [torch.from_numpy(a) for a in (x, dy, weight, bias)] if use_torch else (x, dy, weight, bias)
    return ft_calls(ft, w, *mine), (torch_calls(w, x, dy, weight, bias) if use_torch else {})


def main(argv=None) -> int:
    args = norm_bench.parse_args(__doc__, argv)
    return norm_bench.run(args, WORKLOADS, build, benchmark="cpu_layer_norm", json_stem="cpu_ln",
                          settings={"eps": EPS,
                                    "fusedtrain_inputs": "torch CPU tensors (NumPy without torch)",
                                    "torch_calls": "aten.native_layer_norm(_backward), "
                                                   "F.rms_norm + autograd.grad, "
                                                   "aten.native_group_norm(_backward), channels_last "
                                                   "memory format for NHWC"})


if __name__ == "__main__":
    sys.exit(main())
