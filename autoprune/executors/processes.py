"""Run trials in spawned local processes: parallel trials on one machine, no Ray.

Each of the ``workers`` slots is a thread of this process that owns one worker process and runs
one trial on it at a time. A slot sees its own worker die (its process sentinel fires before a
reply arrives), so a worker SIGKILLed mid-trial costs that trial alone: it is run once more on a
fresh worker (``WORKER_RETRIES``), then failed with :class:`WorkerDied`, while trials on the
other workers go on. (``concurrent.futures.ProcessPoolExecutor``, used before, breaks as a whole
when one worker dies: every running trial fails with ``BrokenProcessPool`` and the pool is dead.)
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from autoprune.executors._base import (
    WORKER_RETRIES,
    Executor,
    RemoteTraceback,
    WorkerDied,
    set_torch_threads,
    worker_died_message,
)

T = TypeVar("T")


def _worker_main(conn: multiprocessing.connection.Connection, threads: int) -> None:
    """A worker process: receive a pickled ``(fn, args)``, run it, send back the outcome; repeat.

    Ctrl-C reaches every process of the terminal's group; the parent cancels and kills the
    workers, so workers ignore SIGINT instead of each printing a traceback. Torch's thread count
    is set again for every trial (a trial may change it); a worker does not import torch before
    its first trial needs it (seconds per worker), so until then ``OMP_NUM_THREADS`` carries the
    count to torch's start.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not payload:
            return  # the parent's stop message
        try:
            fn, args = pickle.loads(payload)
            if "torch" in sys.modules:
                set_torch_threads(threads)
            reply: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller's future
            reply = ("error", exc, traceback.format_exc())
        try:
            data = pickle.dumps(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            text = reply[2] if reply[0] == "error" else ""
            data = pickle.dumps(("error", RuntimeError(f"the trial's {'exception' if text else 'result'} cannot be "
                                                       f"sent back from the worker: {type(exc).__name__}: {exc}"), text))
        conn.send_bytes(data)


@dataclass
class _Job:
    future: concurrent.futures.Future[Any]
    payload: bytes
    endings: list[str] = field(default_factory=list)  # how each attempt's worker died


def _ending(process: multiprocessing.process.BaseProcess) -> str:
    """``pid 123 killed by SIGKILL`` or ``pid 123 exited with status 1``."""
    code = process.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with status {code}"
    return f"pid {process.pid} {how}"


class _Slot(threading.Thread):
    """One worker process and the thread that feeds it jobs from the executor's queue."""

    def __init__(self, executor: ProcessExecutor, index: int) -> None:
        super().__init__(name=f"autoprune-worker-{index}", daemon=True)
        self.executor = executor
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.job: _Job | None = None

    def _start_process(self) -> None:
        ctx = self.executor._ctx
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child, self.executor.threads_per_worker), daemon=True)
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def run(self) -> None:
        jobs = self.executor._jobs
        while True:
            job = jobs.get()
            if job is None:
                break
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
            except RuntimeError:
                continue  # cancelled while queued, and acknowledged by ``_acknowledge_cancel``
            self.job = job
            self._run(job)
            self.job = None
        self._stop_process()

    def _run(self, job: _Job) -> None:
        while True:
            if self.executor._killing:
                job.future.set_exception(concurrent.futures.CancelledError("the executor was shut down"))
                return
            if self.process is None or not self.process.is_alive():
                self._start_process()
            assert self.process is not None and self.conn is not None
            try:
                self.conn.send_bytes(job.payload)
                reply = self._reply()
            except (OSError, EOFError):
                reply = None
            if reply is not None:
                _settle(job.future, reply)
                return
            self.process.join(timeout=5)
            job.endings.append(_ending(self.process))
            self.process, self.conn = None, None
            if self.executor._killing:
                job.future.set_exception(concurrent.futures.CancelledError("the executor was shut down"))
                return
            if len(job.endings) > WORKER_RETRIES:
                job.future.set_exception(WorkerDied(worker_died_message(job.endings)))
                return
            job.future.worker_retries = len(job.endings)  # type: ignore[attr-defined]

    def _reply(self) -> tuple[Any, ...] | None:
        """The worker's reply, or None once its process has died without one."""
        assert self.process is not None and self.conn is not None
        while True:
            ready = multiprocessing.connection.wait([self.conn, self.process.sentinel])
            if self.conn in ready or self.conn.poll():  # a reply sent just before dying still counts
                try:
                    data = self.conn.recv_bytes()
                except (EOFError, OSError):
                    return None
                try:
                    return pickle.loads(data)
                except Exception as exc:  # noqa: BLE001 - e.g. an exception class that cannot be rebuilt
                    return ("error", RuntimeError(f"cannot read the worker's reply: {type(exc).__name__}: {exc}"), "")
            if self.process.sentinel in ready:
                return None

    def _stop_process(self) -> None:
        if self.process is None:
            return
        if self.conn is not None and not self.executor._killing:
            try:
                self.conn.send_bytes(b"")
            except OSError:
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None


def _acknowledge_cancel(future: concurrent.futures.Future[Any]) -> None:
    """A future cancelled while queued is acknowledged at once: ``concurrent.futures.wait`` and
    ``as_completed`` would otherwise wait until a slot takes it off the queue."""
    if future.cancelled():
        try:
            future.set_running_or_notify_cancel()
        except RuntimeError:
            pass


def _settle(future: concurrent.futures.Future[Any], reply: tuple[Any, ...]) -> None:
    if reply[0] == "ok":
        future.set_result(reply[1])
        return
    exc, text = reply[1], reply[2]
    if isinstance(exc, BaseException):
        if text and exc.__cause__ is None:
            exc.__cause__ = RemoteTraceback(text)
        future.set_exception(exc)
    else:
        future.set_exception(RuntimeError(str(exc)))


class ProcessExecutor(Executor):
    """``workers`` spawned processes, each running one trial at a time.

    "spawn" (not "fork") because torch and threads do not survive a fork safely. A worker starts
    on the first trial that needs it, imports torch (a few seconds) and is reused for later
    trials; every trial sets torch's thread count to ``threads_per_worker`` again. Functions must
    be importable (module-level) and arguments picklable. Worker exceptions come back with the
    worker's traceback as ``__cause__``. A worker that dies mid-trial is replaced; its trial is
    run again once, then fails with :class:`WorkerDied` (``future.worker_retries`` counts the
    reruns).
    """

    name: ClassVar[str] = "processes"

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        self.capacity = workers
        self.threads_per_worker = threads_per_worker
        self._ctx = multiprocessing.get_context("spawn")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._killing = False
        self._slots = [_Slot(self, i) for i in range(workers)]
        for slot in self._slots:
            slot.start()

    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot submit to an executor that has been shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        future.worker_retries = 0  # type: ignore[attr-defined]
        try:
            payload = pickle.dumps((fn, args))
        except Exception as exc:  # noqa: BLE001 - as ProcessPoolExecutor: the future holds it
            future.set_running_or_notify_cancel()
            future.set_exception(exc)
            return future
        future.add_done_callback(_acknowledge_cancel)
        self._jobs.put(_Job(future, payload))
        return future

    def worker_pids(self) -> list[int]:
        """The PIDs of the worker processes alive now (for tests and diagnostics)."""
        return [slot.process.pid for slot in self._slots
                if slot.process is not None and slot.process.pid is not None and slot.process.is_alive()]

    def shutdown(self, *, cancel: bool = False) -> None:
        if self._closed and not cancel:
            return
        self._closed = True
        if cancel:
            self._killing = True
            while True:  # trials not started yet are cancelled (and acknowledged)
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.future.cancel()
            for slot in self._slots:
                process = slot.process
                if process is not None and process.is_alive():
                    process.kill()
        for _ in self._slots:
            self._jobs.put(None)
        for slot in self._slots:
            slot.join(timeout=None if not cancel else 10)
