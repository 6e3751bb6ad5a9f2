"""The unit a benchmark suite hands the runner: one kernel on one workload, with its competitors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

OURS = "fusedtrain"


@dataclass
class Case:
    suite: str                       # "cpu optim", "cuda batch norm", ...
    kernel: str                      # "adam", "forward", ...
    workload: str                    # "16M x 1", "64x256x28x28 nhwc", ...
    dtype: str
    bytes_moved: int                 # minimum memory traffic of one call: every array once
    fns: Dict[str, Callable[[], object]]   # OURS first, then the baseline implementations
    sync: Optional[Callable[[], object]] = None
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """A case not built yet: the runner builds one at a time so only one workload is in memory."""
    suite: str
    kernel: str
    workload: str
    build: Callable[[], Case]
