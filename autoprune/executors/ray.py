"""Run trials as Ray tasks: on a local Ray started here, or on a cluster the user started."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from autoprune.errors import UserError, missing_extra
from autoprune.executors._base import (
    WORKER_RETRIES,
    Executor,
    RemoteTraceback,
    WorkerDied,
    set_torch_threads,
    worker_died_message,
)

T = TypeVar("T")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HOW_TO_START = (
    "start one with `ray start --head` (from this venv) and pass its address, or 'auto' on the "
    "head node; for an explicit address with token auth (the default) set RAY_AUTH_MODE=token "
    "here, or start the head and every client with RAY_AUTH_MODE=disabled"
)


def _run_task(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """Worker side of every task: Ray reuses workers, so reset torch's thread count first."""
    set_torch_threads(threads)
    return fn(*args)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


def _local_runtime_env() -> dict[str, Any] | None:
    """Let workers import autoprune when it is not installed (e.g. run from a source tree).

    Installed (also editable) packages need nothing: local workers run this interpreter. A
    runtime_env costs about a second on the first task, so it is only used when needed.
    """
    try:
        importlib.metadata.distribution("autoprune")
        return None
    except importlib.metadata.PackageNotFoundError:
        root = Path(__file__).resolve().parents[2]
        return {"env_vars": {"PYTHONPATH": str(root)}}


def _check_reachable(address: str) -> None:
    """Fail fast on a host:port nobody listens on (``ray.init`` would retry for minutes)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(
            f"bad Ray address {address!r}: expected host:port or 'auto'; {_HOW_TO_START}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); {_HOW_TO_START}"
        ) from None


def _worker_died(exc: BaseException) -> bool:
    from ray.exceptions import LocalRayletDiedError, NodeDiedError, WorkerCrashedError

    return isinstance(exc, (WorkerCrashedError, NodeDiedError, LocalRayletDiedError))


def _death(exc: BaseException) -> str:
    """One line on how a task's worker died: Ray's exception type and the first line it gives."""
    first = next((line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _unwrap(exc: BaseException) -> BaseException:
    """Turn Ray's wrapper into the trial's own exception, worker traceback as ``__cause__``."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            if cause.__cause__ is None:
                cause.__cause__ = RemoteTraceback(_ANSI.sub("", str(exc)))
            return cause
    return exc


@dataclass(frozen=True)
class TrialResources:
    """What Ray reserves for each trial (``--trial-cpus``, ``--trial-gpus``): ``num_cpus`` and
    ``num_gpus`` of its task. Fractions below 1 are allowed (four trials of 0.25 GPU share one).

    ``cpus=None``: ``--threads`` when given, else an even share of the cluster's CPUs among the
    workers, or 1 CPU per trial when the workers follow from the cluster. ``gpus=None``: 1 GPU
    where the cluster has any, else none (what ``--device auto`` means on a cluster).
    """

    cpus: float | None = None
    gpus: float | None = None

    def problem(self) -> str:
        """What is wrong with these numbers ('' when nothing): Ray takes a fraction below 1 or a
        whole number, never 1.5."""
        for flag, value, low in (("--trial-cpus", self.cpus, 0.0), ("--trial-gpus", self.gpus, 0.0)):
            if value is None:
                continue
            if value < low or (flag == "--trial-cpus" and value == 0):
                return f"{flag} must be {'> 0' if flag == '--trial-cpus' else '>= 0'}, got {value:g}"
            if value > 1 and value != int(value):
                return f"{flag} {value:g}: Ray reserves a fraction below 1 or a whole number, not {value:g}"
        return ""


@dataclass(frozen=True)
class TrialPlan:
    """How many trials run at once on a Ray cluster, and what each one reserves and uses."""

    workers: int
    cpus: float
    gpus: float
    threads: int


def plan_trials(offered_cpus: float, offered_gpus: float, node: tuple[float, float], *, workers: int | None,
                threads: int | None, resources: TrialResources) -> TrialPlan:
    """Workers, per-trial request and threads for a cluster that offers ``offered_cpus`` and
    ``offered_gpus`` in all and ``node`` (CPUs, GPUs) on its largest node.

    Without ``workers``, as many trials as the cluster holds at once: its GPUs divided by the
    per-trial GPUs when trials take GPUs (CPUs shared evenly among them unless given), else its
    CPUs divided by the per-trial CPUs. Torch threads follow from the CPU request (at least 1)
    unless ``threads`` is given. A request no node can hold is a UserError (Ray would wait for
    it forever).
    """
    problem = resources.problem()
    if problem:
        raise UserError(problem)
    gpus = resources.gpus if resources.gpus is not None else (1.0 if offered_gpus >= 1 else 0.0)
    cpus = resources.cpus if resources.cpus is not None else (float(threads) if threads else None)
    offer = f"the Ray cluster offers {offered_cpus:g} CPUs and {offered_gpus:g} GPUs"
    if gpus > 0 and offered_gpus <= 0:
        raise UserError(f"each trial asks for {gpus:g} GPU (--trial-gpus, or --device cuda) but {offer}; "
                        "use --device cpu or --trial-gpus 0, or add GPU nodes")
    if workers is None:
        if gpus > 0:
            workers = int(offered_gpus / gpus + 1e-9)
            if cpus is None:
                cpus = float(max(1, int(offered_cpus // max(workers, 1))))
        if cpus is None:
            cpus = 1.0
        by_cpus = int(offered_cpus / cpus + 1e-9)
        workers = min(workers, by_cpus) if workers is not None else by_cpus
        if workers < 1:
            raise UserError(f"{offer}: not enough for one trial of {cpus:g} CPUs and {gpus:g} GPUs "
                            "(--trial-cpus, --trial-gpus)")
    elif cpus is None:
        cpus = float(max(1, int(offered_cpus // workers)))
    largest_cpus, largest_gpus = node
    if cpus > largest_cpus or gpus > largest_gpus:
        raise UserError(f"each trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but the largest node of the Ray "
                        f"cluster has {largest_cpus:g} CPUs and {largest_gpus:g} GPUs, so no trial could start; "
                        "lower --trial-cpus/--trial-gpus (or --threads)")
    return TrialPlan(workers, cpus, gpus, threads or max(1, int(cpus)))


def cluster_address(address: str | None) -> str | None:
    """``--ray-address``, else ``RAY_ADDRESS`` (set by Ray for a ``ray job submit`` entrypoint, so
    a job's search runs its trials on that cluster), else None: a private local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _offered(ray: Any) -> tuple[float, float, tuple[float, float]]:
    """(CPUs, GPUs) of the whole cluster, and of its largest alive node."""
    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    node = (max((r.get("CPU", 0.0) for r in nodes), default=0.0), max((r.get("GPU", 0.0) for r in nodes), default=0.0))
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)), node


class RayExecutor(Executor):
    """Runs each trial as a Ray task that reserves ``resources`` (``num_cpus``/``num_gpus``);
    futures follow ``ObjectRef.future()``.

    ``address=None`` (and no ``RAY_ADDRESS``) starts a private local Ray on this machine's cores
    and GPUs (about 5 s and 850 MB) and shuts it down in :meth:`shutdown`. An address joins a
    running cluster (``ray start --head``) and leaves it running. ``workers=None`` runs as many
    trials at once as the cluster holds (``plan_trials``); torch threads per trial follow from the
    CPU request unless ``threads_per_worker`` is given. Functions and arguments must be
    picklable, and workers on other machines must have autoprune installed (or get it through
    ``ray job submit --working-dir``). A returned future stays pending (never "running") until its
    result arrives, so ``future.cancel()`` works until then and kills the Ray task.
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self, workers: int | None = None, address: str | None = None, threads_per_worker: int | None = None,
        resources: TrialResources | None = None,
    ) -> None:
        ray = _import_ray()
        resources = resources or TrialResources()
        problem = resources.problem()
        if problem:
            raise UserError(problem)
        address = cluster_address(address)
        self._owns_ray = False
        if address is None:
            import torch

            cores, gpus = float(os.cpu_count() or 1), float(torch.cuda.device_count())
            plan = plan_trials(cores, gpus, (cores, gpus), workers=workers, threads=threads_per_worker,
                               resources=resources)
            self._owns_ray = not ray.is_initialized()
            ray.init(
                address="local",  # never join a cluster that `ray start` left on this machine
                num_cpus=max(int(cores), math.ceil(plan.workers * plan.cpus)),  # every worker fits at once
                num_gpus=int(gpus),
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
                runtime_env=_local_runtime_env(),
            )
            self.where = "a local Ray"
        else:
            _check_reachable(address)
            try:
                ray.init(
                    address=address,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                message = " ".join(str(exc).split())
                raise UserError(
                    f"cannot join the Ray cluster at {address!r}: {message}; {_HOW_TO_START}"
                ) from None
            offered_cpus, offered_gpus, node = _offered(ray)
            plan = plan_trials(offered_cpus, offered_gpus, node, workers=workers, threads=threads_per_worker,
                               resources=resources)
            self.where = f"the Ray cluster at {address} ({offered_cpus:g} CPUs, {offered_gpus:g} GPUs)"
        self.plan = plan
        self.capacity = plan.workers
        self.threads_per_worker = plan.threads
        self._remote = ray.remote(num_cpus=plan.cpus, num_gpus=plan.gpus, max_retries=0)(_run_task)
        self._pending: dict[concurrent.futures.Future[Any], Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    def describe(self) -> str:
        p = self.plan
        return (f"ray: {p.workers} trial{'s' if p.workers != 1 else ''} at once on {self.where}; each reserves "
                f"{p.cpus:g} CPU{'s' if p.cpus != 1 else ''} and {p.gpus:g} GPU{'s' if p.gpus != 1 else ''} and "
                f"trains with {p.threads} thread{'s' if p.threads != 1 else ''}")

    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot submit to an executor that has been shut down")
        out: concurrent.futures.Future[T] = concurrent.futures.Future()
        out.worker_retries = 0  # type: ignore[attr-defined]
        out.worker_endings = []  # type: ignore[attr-defined]
        out.add_done_callback(self._on_out_done)
        self._launch(out, fn, args)
        return out

    def _launch(self, out: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        ref = self._remote.remote(self.threads_per_worker, fn, *args)
        with self._lock:
            self._pending[out] = ref
        ref.future().add_done_callback(lambda inner: self._settle(out, inner, fn, args))

    def _settle(
        self, out: concurrent.futures.Future[Any], inner: concurrent.futures.Future[Any],
        fn: Callable[..., Any], args: tuple[Any, ...],
    ) -> None:
        """Copy Ray's outcome into the caller's future (unless the caller cancelled it); a task
        whose worker died is run again ``WORKER_RETRIES`` times (Ray's own retries are off, so
        each one is counted), then fails with :class:`WorkerDied`."""
        try:
            exc = inner.exception()
        except concurrent.futures.CancelledError as cancelled:
            exc = cancelled
        died = exc is not None and _worker_died(exc)
        if died:
            out.worker_endings.append(_death(exc))
        if died and out.worker_retries < WORKER_RETRIES and not self._closed and not out.done():
            out.worker_retries += 1
            self._launch(out, fn, args)
            return
        try:
            if exc is None:
                out.set_result(inner.result())
            elif died:
                out.set_exception(WorkerDied(worker_died_message(out.worker_endings)))
            else:
                out.set_exception(_unwrap(exc))
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    def _on_out_done(self, out: concurrent.futures.Future[Any]) -> None:
        """Forget a finished future; a cancelled one also kills its Ray task.

        ``Future.cancel()`` alone does not wake ``concurrent.futures.wait``/``as_completed``
        (they wait for the executor to acknowledge), so acknowledge here; this callback runs
        once per future and nothing else acknowledges, so it cannot happen twice.
        """
        with self._lock:
            ref = self._pending.pop(out, None)
        if out.cancelled():
            out.set_running_or_notify_cancel()
            if ref is not None:
                self._cancel_ref(ref)

    @staticmethod
    def _cancel_ref(ref: Any) -> None:
        import ray

        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished, or Ray is gone: nothing left to stop
            pass

    def shutdown(self, *, cancel: bool = False) -> None:
        if self._closed and not cancel:
            return
        self._closed = True
        with self._lock:
            pending = list(self._pending)
        if cancel:
            for out in pending:
                out.cancel()  # the done callback kills the task
        else:
            concurrent.futures.wait(pending)
        if self._owns_ray:
            import ray

            self._owns_ray = False
            ray.shutdown()
