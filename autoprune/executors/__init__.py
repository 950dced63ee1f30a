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
from autoprune.executors.ray import RayExecutor, TrialPlan, TrialResources, plan_trials

EXECUTORS = ("inline", "processes", "ray")

__all__ = [
    "EXECUTORS",
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "RemoteTraceback",
    "TrialPlan",
    "TrialResources",
    "WORKER_RETRIES",
    "WorkerDied",
    "default_trial_resources",
    "make_executor",
    "plan_trials",
    "set_torch_threads",
]


def make_executor(
    name: str,
    *,
    workers: int | None = 1,
    threads_per_worker: int | None = None,
    ray_address: str | None = None,
    resources: TrialResources | None = None,
) -> Executor:
    """Build the executor the user asked for (``--executor``, ``--workers``, ...).

    ``threads_per_worker`` defaults to an even share of this machine's cores for "processes";
    "ray" derives it from the per-trial CPU request (``resources``, see ``RayExecutor``);
    "inline" runs one trial at a time (``workers`` is ignored) and leaves the process's thread
    count alone unless it is given. ``workers=None`` means 1, except for "ray" on a cluster
    (``ray_address``, or ``RAY_ADDRESS`` inside a ``ray job submit`` job): what the cluster offers.
    Bad choices raise :class:`UserError`.
    """
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a whole number >= 1, got {workers!r}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise UserError(f"threads per worker must be >= 1, got {threads_per_worker!r}")
    if ray_address is not None and name != "ray":
        raise UserError(f"a Ray address only applies to the 'ray' executor, not {name!r}")
    if resources is not None and name != "ray":
        raise UserError(f"per-trial CPUs and GPUs are what Ray reserves; they do not apply to {name!r}")
    if name == "inline":  # one trial at a time whatever ``workers`` says
        return InlineExecutor(threads_per_worker=threads_per_worker)
    if name == "ray":
        from autoprune.executors.ray import cluster_address

        if workers is None and cluster_address(ray_address) is None:
            workers = 1
        return RayExecutor(workers=workers, address=ray_address, threads_per_worker=threads_per_worker,
                           resources=resources)
    workers = workers or 1
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    return ProcessExecutor(workers=workers, threads_per_worker=threads)


def default_trial_resources(trial_cpus: float | None, trial_gpus: float | None, device: str,
                            latency_device: str = "cpu") -> TrialResources:
    """Ray's per-trial request from the settings: GPUs default to 1 where a trial trains or reads
    latency on ``cuda``, to "1 where the cluster has GPUs" for ``--device auto``, else to 0."""
    if trial_gpus is None:
        if device.startswith("cuda") or latency_device.startswith("cuda"):
            trial_gpus = 1.0
        elif device == "cpu":
            trial_gpus = 0.0
    return TrialResources(cpus=trial_cpus, gpus=trial_gpus)
