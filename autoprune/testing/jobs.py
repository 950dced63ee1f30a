"""Small trial functions for executor tests: module-level so spawned and Ray workers import them."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int, delay: float = 0.0) -> int:
    """Return ``x * x`` after ``delay`` seconds (to make later jobs finish first)."""
    time.sleep(delay)
    return x * x


def fail(message: str) -> None:
    """Raise ValueError(message): checks that worker exceptions keep their type and text."""
    raise ValueError(message)


def sleep(seconds: float) -> int:
    """Sleep, then return the worker's PID: a long job to cancel."""
    time.sleep(seconds)
    return os.getpid()


def thread_count() -> int:
    """torch's intra-op thread count inside the worker."""
    import torch

    return torch.get_num_threads()


def tiny_training(seed: int, steps: int = 5) -> float:
    """Seeded 5-step SGD on a small linear model; returns the final loss as a float.

    Deterministic for a given seed and thread count, so every executor must return the same
    float bit for bit.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 3)
    inputs = torch.randn(32, 8, generator=generator)
    targets = torch.randn(32, 3, generator=generator)
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    for _ in range(steps):
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        with torch.no_grad():  # plain SGD by hand: torch.optim imports torch._dynamo (seconds)
            for parameter in model.parameters():
                parameter -= 0.1 * parameter.grad
    return float(loss.item())


def assigned_resources() -> dict[str, float]:
    """What Ray reserved for the task running this (``num_cpus``, ``num_gpus``)."""
    import ray

    return dict(ray.get_runtime_context().get_assigned_resources())


def rendezvous(directory: str, name: str, expected: int, timeout: float = 60.0) -> tuple[int, bool]:
    """Leave a mark in ``directory`` and wait until ``expected`` marks exist.

    Returns ``(pid, met)``: ``met`` is True only if ``expected`` jobs were running at the same
    time, which proves parallelism without relying on timings.
    """
    folder = Path(directory)
    (folder / name).touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.iterdir())) >= expected:
            return os.getpid(), True
        time.sleep(0.02)
    return os.getpid(), False


def pid_then_sleep(path: str, seconds: float) -> int:
    """Append this worker's PID to ``path`` and sleep: a job whose worker a test can kill mid-run."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


def die_then_run(marks: str, key: str, deaths: int, fn, *args):
    """SIGKILL this worker process on the first ``deaths`` attempts of ``key``, then run ``fn``.

    Attempts are counted in files under ``marks`` (one per attempt), so a killed attempt is
    remembered by the next worker: the death is real, and lands in the middle of a trial.
    """
    import signal

    folder = Path(marks)
    folder.mkdir(parents=True, exist_ok=True)
    attempt = len(list(folder.glob(f"{key}.*")))
    (folder / f"{key}.{attempt}").write_text(str(os.getpid()))
    if attempt < deaths:
        os.kill(os.getpid(), signal.SIGKILL)
    return fn(*args)


def toy_trial(problem, request):
    """A trial of ``autoprune.testing.toy.ToyProblem``: closed-form accuracy and cost, as the
    runner's ``run_trial`` would report them (rejected over budget, unless a probe)."""
    from autoprune.trial import TrialOutcome

    policy = request.policy
    constraint = problem.cost(policy) / problem.budget - 1.0
    metrics = {"val_accuracy": problem.accuracy(policy), "macs": problem.cost(policy)}
    rejected = request.limit is not None and constraint > 0
    return TrialOutcome(request.number, metrics, rejected, constraint, {})


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def meter_trainer(env: dict[str, str], seconds: float, step_s: float) -> int:
    """Busy training "steps" of ``step_s`` inside ``autoprune.meter.step`` for ``seconds``; the count."""
    os.environ.update(env)
    from autoprune import meter

    steps, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with meter.step("cpu"):
            _busy(step_s)
        steps += 1
    return steps


def meter_reader(env: dict[str, str], readings: int, read_s: float, pause_s: float) -> int:
    """``readings`` busy "latency readings" of ``read_s`` inside ``autoprune.meter.reading``."""
    os.environ.update(env)
    from autoprune import meter

    for _ in range(readings):
        time.sleep(pause_s)
        with meter.reading("cpu"):
            _busy(read_s)
    return readings
