"""Which CUDA stream a call launches on: stream=, else the caller's framework's current stream."""
from . import _C


def _first_array(arrays):
    if isinstance(arrays, (list, tuple)) and arrays:
        return arrays[0]
    return None


def _handle(stream):
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream", "handle"):
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"stream must be an int handle or have .ptr / .cuda_stream, "
                    f"got {type(stream).__name__}")


def launch_stream(arrays, stream=None):
    """The stream handle (int) for a call on these arrays, or None when they are on the CPU.

    Explicit ``stream`` wins; PyTorch CUDA tensors use ``torch.cuda.current_stream()``; CuPy
    arrays ``cupy.cuda.get_current_stream()``; other CUDA arrays the legacy default stream.
    Kernels never synchronize other streams (Note [export streams]).
    """
    first = _first_array(arrays)
    if first is None:
        return None if stream is None else _handle(stream)
    module = type(first).__module__ or ""
    if module.startswith("torch"):
        if not first.is_cuda:
            return None
        if stream is not None:
            return _handle(stream)
        # DLPack's exchange API answers without creating a torch.cuda.Stream object.
        handle = _C._framework_stream(first)
        if handle is not None:
            return handle
        import torch
        return torch.cuda.current_stream(first.device).cuda_stream
    if not hasattr(first, "__cuda_array_interface__"):
        return None
    if stream is not None:
        return _handle(stream)
    if module.startswith("cupy"):
        import cupy
        return cupy.cuda.get_current_stream().ptr
    return 0


def is_array(x):
    """A 1-element array argument (capturable lr/step, AMP scalars) rather than a number."""
    return hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__") or \
        hasattr(x, "__array_interface__")
