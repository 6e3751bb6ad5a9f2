"""Multi-process test plumbing: spawn ranks over gloo on the loopback interface, bounded in time.

``run_ranks(fn, world, *args)`` starts ``world`` fresh processes (torch.multiprocessing, spawn),
each with a gloo process group on 127.0.0.1 at a free port, calls ``fn(rank, world, *args)``
in each, and always destroys the group. A rank that raises fails the test with its traceback
(the others are stopped); ranks still running at the deadline are killed and the test fails.
Spawning costs seconds (each rank imports torch), so a test batches many checks per group.

``fn`` must be importable by the children: a module-level function of a test module (the
test directory is on the children's sys.path, passed by the spawn start method).
"""
import datetime
import os
import socket
import sys
import time

import pytest

torch = pytest.importorskip("torch")
dist = torch.distributed


def require_gloo():
    """Skip (with the reason) where torch cannot run a gloo process group."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build of torch")
    if not dist.is_gloo_available():
        pytest.skip("torch.distributed has no gloo backend in this build of torch")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world, port, timeout, args):
    # Loopback only; one thread per rank: the ranks share the machine's cores.
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    elif sys.platform == "darwin":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo0")
    import fusedtrain as ft
    torch.set_num_threads(1)
    ft.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout))
    try:
        fn(rank, world, *args)
        dist.barrier()  # no rank tears the group down while another still has collectives queued
    finally:
        dist.destroy_process_group()
    # Note [rank exit]: a rank that passed leaves without interpreter finalization. There, under
    # load, torch's gloo teardown sometimes destroys a joinable std::thread (std::terminate,
    # "terminate called without an active exception", SIGABRT) after destroy_process_group has
    # returned on every rank: a crash in torch's exit path, not in anything the test checks.
    # A failing rank still raises, and the parent reports its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn, world, *args, timeout=120):
    """Runs ``fn(rank, world, *args)`` on ``world`` gloo ranks; fails the test on an error in
    any rank or after ``timeout`` seconds."""
    require_gloo()
    import torch.multiprocessing as mp
    for attempt in range(3):
        ctx = mp.start_processes(_entry, args=(fn, world, _free_port(), timeout, args),
                                 nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    pytest.fail(f"{fn.__name__} on {world} ranks did not finish within "
                                f"{timeout} s")
            return
        except mp.ProcessRaisedException as e:
            # Another process took the port between our probe and rank 0's bind: new port.
            if "address already in use" in str(e).lower() and attempt < 2:
                continue
            raise AssertionError(f"{fn.__name__}, rank {e.error_index} of {world}:\n{e}") \
                from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join(5)


class Collectives:
    """Counts the collectives issued inside ``with``, whatever API issued them: every
    torch.distributed collective reaches the process group as a ``c10d`` operator of the
    dispatcher (``c10d.allgather_``, ``c10d.allreduce_``, ...), which this mode sees."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        names = self.names = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.namespace == "c10d":
                    names.append(str(func))
                return func(*args, **(kwargs or {}))
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False


def assert_close(actual, expected, tol, what):
    """Compared in float64 (the references are float64)."""
    torch.testing.assert_close(actual.to(torch.float64), expected.to(torch.float64), rtol=tol,
                               atol=tol, msg=lambda m: f"{what}: {m}")
