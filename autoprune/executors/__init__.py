"""Backends that run trial functions for the search loop: inline, local processes, or Ray.

The loop only sees :class:`Executor`: ``submit(fn, *args)`` returns a standard
:class:`concurrent.futures.Future`, so every backend is interchangeable and the same function
and arguments give the same result on each.
"""

from __future__ import annotations

import os

from autoprune.errors import UserError
from autoprune.executors._base import (
    WORKER_RETRIES,
    Executor,
    RemoteTraceback,
    WorkerDied,
    set_torch_threads,
)
from autoprune.executors.inline import InlineExecutor
from autoprune.executors.processes import ProcessExecutor
from autoprune.executors.ray import RayExecutor

EXECUTORS = ("inline", "processes", "ray")

__all__ = [
    "EXECUTORS",
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "RemoteTraceback",
    "WORKER_RETRIES",
    "WorkerDied",
    "make_executor",
    "set_torch_threads",
]


def make_executor(
    name: str,
    *,
    workers: int = 1,
    threads_per_worker: int | None = None,
    ray_address: str | None = None,
) -> Executor:
    """Build the executor the user asked for (``--executor``, ``--workers``, ...).

    ``threads_per_worker`` defaults to an even share of this machine's cores for "processes"
    and "ray"; "inline" runs one trial at a time (``workers`` is ignored) and leaves the
    process's thread count alone unless it is given.
    Bad choices raise :class:`UserError`.
    """
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers must be a whole number >= 1, got {workers!r}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise UserError(f"threads per worker must be >= 1, got {threads_per_worker!r}")
    if ray_address is not None and name != "ray":
        raise UserError(f"a Ray address only applies to the 'ray' executor, not {name!r}")
    if name == "inline":  # one trial at a time whatever ``workers`` says
        return InlineExecutor(threads_per_worker=threads_per_worker)
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    if name == "processes":
        return ProcessExecutor(workers=workers, threads_per_worker=threads)
    return RayExecutor(workers=workers, address=ray_address, threads_per_worker=threads)
