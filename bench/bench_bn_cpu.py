"""Times fusedtrain batch norm (forward, backward, forward+backward) on CPU against PyTorch in one run."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

import norm_bench
from fusedtrain.bench import batch_norm as bn
from fusedtrain.bench.batch_norm import EPS, MOMENTUM
from norm_bench import torch


@dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple            # the array's own shape (channels last when channels_last)
    channels_last: bool
    target_fwd_bwd: float   # required fusedtrain speedup over torch for forward+backward

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
def build(w, ft, use_torch):
    """fusedtrain.bench.batch_norm's data and calls: the same baseline as python -m fusedtrain bench."""
    x, dy, weight, bias, rm, rv = bn.data(w.shape, w.channels_last, "cpu")[0]
    # With torch at hand ours takes torch tensors (views of the same memory, running stats of
    # their own): the path users take, outputs allocated through torch (Note [huge pages]).
    mine = ([torch.from_numpy(a) for a in (x, dy, weight, bias)] +
            [torch.from_numpy(a.copy()) for a in (rm, rv)]) if use_torch else (x, dy, weight, bias, rm, rv)
    ours = bn.calls(ft, *mine, w.channels_last)
    theirs = bn.torch_calls(torch, x, dy, weight, bias, rm, rv, w.channels_last) if use_torch else {}
    return ours, theirs


def main(argv=None) -> int:
    args = norm_bench.parse_args(__doc__, argv)
    return norm_bench.run(args, WORKLOADS, build, benchmark="cpu_batch_norm", json_stem="cpu_bn",
                          settings={"eps": EPS, "momentum": MOMENTUM,
                                    "fusedtrain_inputs": "torch CPU tensors (NumPy without torch)",
                                    "torch_calls": "aten.native_batch_norm / native_batch_norm_backward, "
                                                   "channels_last memory format for NHWC"})


if __name__ == "__main__":
    sys.exit(main())
