"""Run trials as Ray tasks: on a local Ray started here, or on a cluster the user started."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
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


class RayExecutor(Executor):
    """Runs each trial as a ``num_cpus=1`` Ray task; futures follow ``ObjectRef.future()``.

    ``address=None`` starts a private local Ray with ``workers`` CPUs (about 5 s and 850 MB) and
    shuts it down in :meth:`shutdown`. An address joins a running cluster (``ray start --head``)
    and leaves it running; ``workers`` then defaults to the cluster's CPU count. Functions and
    arguments must be picklable, and workers on other machines must have autoprune installed.
    A returned future stays pending (never "running") until its result arrives, so
    ``future.cancel()`` works until then and kills the Ray task.
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self, workers: int | None = None, address: str | None = None, threads_per_worker: int = 1
    ) -> None:
        ray = _import_ray()
        self.threads_per_worker = threads_per_worker
        self._owns_ray = False
        if address is None:
            workers = workers or os.cpu_count() or 1
            self._owns_ray = not ray.is_initialized()
            ray.init(
                address="local",  # never join a cluster that `ray start` left on this machine
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
                runtime_env=_local_runtime_env(),
            )
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
            if workers is None:
                workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.capacity = workers
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run_task)
        self._pending: dict[concurrent.futures.Future[Any], Any] = {}
        self._lock = threading.Lock()
        self._closed = False

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
