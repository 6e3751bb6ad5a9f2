"""CUDA benchmark of the full-batch optimizers: time per L-BFGS iteration, closure excluded,
ft.torch.LBFGS against torch.optim.LBFGS on CUDA tensors in the same run (target >= 3x).

The workload and method are bench_fullbatch_cpu.py's (200 float32 tensors of 10,000 params,
history 10 and 100, with and without the strong-Wolfe search); the closure is synchronized and
its time subtracted, every optimizer step is synchronized before the clock is read.

    python bench/bench_fullbatch_cuda.py [--tensors 200] [--numel 10000] [--rounds 7]

Writes bench/results/cuda_fullbatch_<gpu>.json.
"""
import sys

import bench_fullbatch_cpu


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:   # answered without a GPU, as the other scripts do
        bench_fullbatch_cpu.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("bench_fullbatch_cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    return bench_fullbatch_cpu.main(["--device", "cuda"] + argv)


if __name__ == "__main__":
    sys.exit(main())
