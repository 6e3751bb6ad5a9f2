"""GPU test plumbing: skip without a CUDA device, and move NumPy test data onto it (torch/CuPy)."""

import numpy as np
import pytest

import fusedtrain as ft


def cuda_devices():
    info = ft.info()
    return info["cuda_devices"] if info["cuda_compiled"] else []


def require_torch_cuda():
    """torch with a usable CUDA device, else skip (the whole module when used at import)."""
    if not cuda_devices():
        pytest.skip("no CUDA device (or fusedtrain built without CUDA)", allow_module_level=True)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
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
