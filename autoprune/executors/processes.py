"""Run trials in a pool of spawned local processes: parallel trials on one machine, no Ray."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures._base as futures_base
import multiprocessing
import signal
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from autoprune.executors._base import Executor, set_torch_threads

T = TypeVar("T")


def _init_worker(threads: int) -> None:
    """Runs once in each new worker: fix torch's threads and leave Ctrl-C to the parent.

    Ctrl-C reaches every process of the terminal's group; the parent cancels and kills the
    workers, so workers ignore SIGINT instead of each printing a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_torch_threads(threads)


class ProcessExecutor(Executor):
    """A :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` spawned processes.

    "spawn" (not "fork") because torch and threads do not survive a fork safely. Each worker
    imports torch on start (a few seconds) and is reused for later trials; every trial sets
    torch's thread count to ``threads_per_worker`` again. Functions must be importable
    (module-level) and arguments picklable. Worker exceptions come back with the worker's
    traceback as ``__cause__``.
    """

    name: ClassVar[str] = "processes"

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        self.capacity = workers
        self.threads_per_worker = threads_per_worker
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads_per_worker,),
        )
        self._closed = False
        self._futures: set[concurrent.futures.Future[Any]] = set()

    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot submit to an executor that has been shut down")
        future = self._pool.submit(_run_trial, self.threads_per_worker, fn, *args)
        self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        """Drop finished futures; keep cancelled ones, which shutdown may have to acknowledge."""
        if not future.cancelled():
            self._futures.discard(future)

    def shutdown(self, *, cancel: bool = False) -> None:
        if self._closed and not cancel:
            return
        self._closed = True
        if not cancel:
            self._pool.shutdown(wait=True)
            return
        # Grab the processes and the pool's manager thread before shutdown() forgets them, then
        # kill the processes: running trials fail with BrokenProcessPool instead of finishing.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        manager = getattr(self._pool, "_executor_manager_thread", None)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
        if manager is not None:
            manager.join(timeout=5)
            if manager.is_alive():
                return
        # The pool cancels queued futures but never acknowledges them once its workers are gone,
        # so concurrent.futures.wait()/as_completed() would wait on them forever. The manager
        # thread has exited, so nobody else can acknowledge them now.
        for future in list(self._futures):
            if future._state == futures_base.CANCELLED:
                future.set_running_or_notify_cancel()


def _run_trial(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """Worker side: reset torch's thread count (a previous trial may have changed it), run."""
    set_torch_threads(threads)
    return fn(*args)
