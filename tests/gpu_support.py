"""GPU test plumbing: skip without a CUDA device, and move NumPy test data onto it (torch/CuPy).

A machine where torch sees a GPU but fusedtrain does not (a CPU-only build, a driver older than
the build's CUDA runtime) fails these tests instead of skipping them: a green run there would
prove nothing.  FUSEDTRAIN_REQUIRE_GPU=1 also fails them when no GPU is visible at all (the GPU
check script sets it)."""

import os

import numpy as np
import pytest

import fusedtrain as ft


def cuda_devices():
    info = ft.info()
    return info["cuda_devices"] if info["cuda_compiled"] else []


def _torch_sees_a_gpu():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def require_torch_cuda():
    """torch with a usable CUDA device, else skip (the whole module when used at import)."""
    required = os.environ.get("FUSEDTRAIN_REQUIRE_GPU") == "1"
    if not cuda_devices():
        info = ft.info()
        why = "fusedtrain was built without CUDA" if not info["cuda_compiled"] else \
            f"fusedtrain sees no CUDA device: {info.get('cuda_error')}"
        if required or _torch_sees_a_gpu():
            raise RuntimeError(f"GPU tests cannot run: {why}, but torch sees a GPU "
                               f"(or FUSEDTRAIN_REQUIRE_GPU=1)")
        pytest.skip(f"no CUDA device ({why})", allow_module_level=True)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        if required:
            raise RuntimeError("GPU tests cannot run: fusedtrain sees a GPU but torch does not")
        pytest.skip("torch has no CUDA", allow_module_level=True)
    return torch


def to_cuda(torch, a):
    """A torch CUDA tensor holding the NumPy array a (bfloat16 from ml_dtypes included)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).cuda()
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def to_host(torch, t):
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
    return t.cpu().numpy()
