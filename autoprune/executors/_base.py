"""The interface the search loop uses to run trials, whatever the backend."""

from __future__ import annotations

import abc
import concurrent.futures
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")

_interop_set = False


def set_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count (and, once per process, the inter-op count).

    Called at the start of every trial on a worker: reused workers keep whatever count the last
    trial left. The inter-op count can only be set before any parallel work in the process, so
    a failure there is ignored.
    """
    global _interop_set
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass


# A trial whose worker process died under it (SIGKILL, the OOM killer, a crashed node) is run once
# more on a fresh worker, then failed with ``WorkerDied``: once covers a worker lost to something
# outside the trial, while a trial that kills its worker every time (runs out of memory, say) is
# not run over and over. Every executor that runs trials in other processes follows this.
WORKER_RETRIES = 1


class WorkerDied(RuntimeError):
    """The worker process running a trial died on every attempt; the message says how each ended.

    The search loop records it as the trial's failure reason (``error`` and ``reason`` attributes)
    and goes on; the future's ``worker_retries`` says how many times the trial was run again.
    """


def worker_died_message(endings: list[str]) -> str:
    """One line: how each attempt's worker ended (``pid 12 killed by SIGKILL``), and the rule."""
    times = "once" if WORKER_RETRIES == 1 else f"{WORKER_RETRIES} times"
    return (f"the worker process running this trial died on each of {len(endings)} attempts "
            f"({'; '.join(endings)}); a trial is run again {times} on a fresh worker, then failed")


class RemoteTraceback(Exception):
    """The worker-side traceback text, attached as ``__cause__`` of an exception from a worker."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class Executor(abc.ABC):
    """Runs trial functions for the search loop and hands back standard futures.

    Lifecycle: the CLI/runner creates one executor, the loop calls :meth:`submit` many times
    (a free, picklable function plus small picklable arguments, never a live model) and waits
    on the returned :class:`concurrent.futures.Future` objects, then :meth:`shutdown` is called
    once, usually by leaving a ``with`` block. An exception raised in a trial is captured in its
    future: ``future.result()`` re-raises it with the worker's traceback text.

    Leaving the ``with`` block because of an exception (KeyboardInterrupt included) cancels work
    that has not started and stops the workers at once instead of waiting for running trials.
    """

    name: ClassVar[str]
    capacity: int
    """How many trials run at once; the loop keeps at most this many in flight."""

    @abc.abstractmethod
    def submit(self, fn: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args)``; the future holds its result or its exception."""

    @abc.abstractmethod
    def shutdown(self, *, cancel: bool = False) -> None:
        """Release the workers. ``cancel=False`` waits for submitted work; ``cancel=True``
        cancels what has not started and kills workers without waiting. Safe to call twice."""

    def describe(self) -> str:
        """One line for the log: how many trials run at once, and with what."""
        threads = getattr(self, "threads_per_worker", None)
        each = f", {threads} thread{'s' if threads != 1 else ''} each" if threads else ""
        return f"{self.name}: {self.capacity} trial{'s' if self.capacity != 1 else ''} at once{each}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(cancel=exc_type is not None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity})"
