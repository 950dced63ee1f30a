"""One latency meter per device: a reading never overlaps a training step on the same device.

Trials train in parallel (processes, Ray tasks, a search sharing the machine), and a latency read
on cores or a GPU where another trial is training measures that training as much as the model.
This module is the one place that keeps them apart, whatever runs the trials:

- every latency reading (``LatencyCost``, the lookup table's layer profiles) runs inside
  :func:`reading`, which holds the device exclusively;
- every unit of training work (a distillation step, a BN-recalibration or evaluation batch, a
  pruning pass, a user's ``finetune``) runs inside :func:`step`, which holds the device shared;
  training yields between steps, so a reading waits for at most one step per trainer.

Both are ``flock`` locks on files of one directory per machine (``AUTOPRUNE_LOCK_DIR``, default
``<tmp>/autoprune-locks-<uid>``), one file per device, so every process of the machine takes part
(two searches on one machine too) and a process that dies drops its locks. A reader first takes a
turnstile that steps also pass through, so that steps coming one after another on several
workers cannot keep the device shared for ever. On CUDA a step synchronises before it lets go:
queued kernels would otherwise run during the reading.

``AUTOPRUNE_METER_TRACE=FILE`` appends one line per reading and per step (``kind device pid
asked start end``, monotonic seconds, comparable across the processes of one machine): what the tests
and ``benchmarks/meter_check.py`` check overlaps and waits with. ``AUTOPRUNE_METER=off`` turns the
locks off, for that benchmark's unprotected comparison only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; readings are not protected there
    fcntl = None  # type: ignore[assignment]

_local = threading.local()
_keys: dict[str, str] = {}


_made: set[Path] = set()


def lock_dir() -> Path:
    """Where the device locks live: one directory per machine and user."""
    configured = os.environ.get("AUTOPRUNE_LOCK_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"autoprune-locks-{uid}"
    if path not in _made:
        path.mkdir(parents=True, exist_ok=True)
        _made.add(path)
    return path


def device_key(device: Any) -> str:
    """``cpu``, or ``cuda-<uuid>``: a GPU by its identity, as each Ray task numbers its own GPUs."""
    name = str(device)
    if not name.startswith("cuda"):
        return "cpu"
    if name not in _keys:
        import torch

        index = int(name.partition(":")[2] or torch.cuda.current_device())
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", index))
        _keys[name] = f"cuda-{uuid}"
    return _keys[name]


def enabled() -> bool:
    return fcntl is not None and os.environ.get("AUTOPRUNE_METER", "on").lower() not in ("off", "0", "no")


def _depth(kind: str) -> int:
    return getattr(_local, kind, 0)


def _enter(kind: str, change: int) -> None:
    setattr(_local, kind, _depth(kind) + change)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # the directory was cleaned away (a tmp cleaner) since it was made
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _trace(kind: str, key: str, asked: float, start: float) -> None:
    path = os.environ.get("AUTOPRUNE_METER_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(f"{kind} {key} {os.getpid()} {asked:.6f} {start:.6f} {time.monotonic():.6f}\n")


def read_trace(path: str | Path) -> list[tuple[str, str, int, float, float, float]]:
    """The lines of a trace file as (kind, device, pid, asked, start, end)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        kind, key, pid, asked, start, end = line.split()
        rows.append((kind, key, int(pid), float(asked), float(start), float(end)))
    return rows


@contextlib.contextmanager
def reading(device: Any = "cpu") -> Iterator[None]:
    """Hold ``device`` alone for one latency reading: no training step runs on it meanwhile.

    Re-entrant within a thread. A reading asked for inside a training step of the same thread
    would wait for itself, so it is an error.
    """
    if _depth("steps"):
        raise RuntimeError("a latency reading inside a training step would wait for itself; read outside the step")
    if _depth("readings"):
        yield
        return
    key, asked = device_key(device), time.monotonic()
    with contextlib.ExitStack() as held:
        if enabled():
            folder = lock_dir()
            held.enter_context(_flock(folder / f"{key}.turnstile", fcntl.LOCK_EX))  # no new step starts
            held.enter_context(_flock(folder / f"{key}.lock", fcntl.LOCK_EX))  # the steps under way end
        start = time.monotonic()
        _enter("readings", 1)
        try:
            yield
        finally:
            _enter("readings", -1)
            _trace("reading", key, asked, start)


@contextlib.contextmanager
def step(device: Any = "cpu") -> Iterator[None]:
    """Hold ``device`` shared for one unit of training work; a pending reading goes first.

    Re-entrant within a thread (a step inside a step is the same step), and nothing inside a
    reading (the reading already holds the device).
    """
    if _depth("steps") or _depth("readings"):
        yield
        return
    key, asked = device_key(device), time.monotonic()
    with contextlib.ExitStack() as held:
        if enabled():
            folder = lock_dir()
            with _flock(folder / f"{key}.turnstile", fcntl.LOCK_EX):  # waits while a reading holds it
                held.enter_context(_flock(folder / f"{key}.lock", fcntl.LOCK_SH))
        start = time.monotonic()
        _enter("steps", 1)
        try:
            yield
        finally:
            _enter("steps", -1)
            if key != "cpu":  # queued kernels would run on into a reading
                import torch

                torch.cuda.synchronize(device)
            _trace("step", key, asked, start)


def device_of(model: Any) -> Any:
    """The device of a model's first parameter (the CPU for one without parameters)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"
