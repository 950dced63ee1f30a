"""Ctrl-C and SIGTERM stop a search where it stands, even when a dependency swallows the signal.

Python raises a signal's KeyboardInterrupt at whatever line the main thread is running, and a
bare ``except:`` there eats it. Torch-Pruning's graph tracing is such a place: it retries the
model's forward on any exception, so a Ctrl-C or a ``kill`` landing in that forward was lost and
the search ran on to its end with exit status 0. The handlers installed here also record the
signal, and the search loop calls :func:`check` between steps, so a swallowed signal still stops
the search at the next step, with the exit status the signal calls for.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received: list[str] = []  # the names of the signals received since :func:`handled` began


def _stop(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    raise KeyboardInterrupt(name)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, ``ray job stop``) stops it the way Ctrl-C does and
    both are recorded for :func:`check`. Off the main thread (where Python cannot install a
    handler) and for a SIGINT handler someone else installed, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _stop)
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    _received.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()


def received() -> str | None:
    """The first signal received inside :func:`handled` ('SIGINT', 'SIGTERM'), or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise KeyboardInterrupt again if a signal arrived and something swallowed it."""
    if _received:
        raise KeyboardInterrupt(_received[0])


def exit_status(exc: KeyboardInterrupt | None = None) -> int:
    """The shell's status for an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    name = received() or (str(exc) if exc is not None else "")
    return 128 + signal.SIGTERM if name == "SIGTERM" else 128 + signal.SIGINT
