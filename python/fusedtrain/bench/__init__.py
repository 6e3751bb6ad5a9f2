"""Benchmarks that ship with fusedtrain: the suites behind ``python -m fusedtrain bench``.

``run(quick=..., json_path=..., plot_path=...)`` times every suite that applies to this machine
(CPU optimizers and batch norm; CUDA when a device is visible) against PyTorch when it is
installed, else against the NumPy reference (``fusedtrain.reference``), and returns the report
as a dict. The scripts in the repository's ``bench/`` directory are the longer, target-checking
versions of the same measurements.
"""
from .runner import run

__all__ = ["run"]
