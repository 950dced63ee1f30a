"""Run trials in the calling process, one at a time: the default, and the easiest to debug."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from autoprune.executors._base import Executor

T = TypeVar("T")


class InlineExecutor(Executor):
    """Runs ``fn`` inside :meth:`submit` and returns an already completed future.

    Use it for small runs, tests and debugging (breakpoints and tracebacks work as usual).
    ``threads_per_worker`` (if given) sets torch's thread count for the duration of each call
    and restores the previous count afterwards; ``None`` leaves the process's count alone.
    KeyboardInterrupt is not captured: it stops the caller immediately.
    """

    name: ClassVar[str] = "inline"

    def __init__(self, threads_per_worker: int | None = None) -> None:
        self.capacity = 1
        self.threads_per_worker = threads_per_worker
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot submit to an executor that has been shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            result = self._call(fn, args)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self.threads_per_worker is None:
            return fn(*args)
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads_per_worker)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(previous)

    def shutdown(self, *, cancel: bool = False) -> None:
        self._closed = True
