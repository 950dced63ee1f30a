"""Scored trials per minute with 1 and 2 workers on every executor, and the framework's overhead.

The same short random search (seed 0, the task's search fidelity) runs once per executor and
worker count, each into its own study. Each configuration uses the whole machine: a parallel
executor gives each worker cores / workers threads; ``inline`` runs one trial at a time with every
core (its "2 workers" asks two policies at a time and runs them one after the other). The
executor's start-up (process pool, Ray) is timed apart; the first trial in a fresh worker pays
for loading the task, and that stays in the loop's time, as it would in a real search.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

WORKERS = (1, 2)


def trials_at_once(executor: str, workers: int) -> int:
    """How many trials an executor runs at once: the inline one runs one, whatever ``workers`` says."""
    return 1 if executor == "inline" else workers


def overhead_fraction(wall_s: float, busy_s: float, workers: int) -> float:
    """Share of the worker time available (wall x parallel workers) not spent fine-tuning or
    evaluating; with one worker this is (wall - sum(finetune_s + evaluate_s)) / wall."""
    capacity = wall_s * max(1, workers)
    return (capacity - busy_s) / capacity if capacity > 0 else float("nan")


def throughput_study(task, *, executors: tuple[str, ...], trials: int, storage: str, root: Path,
                     log=print) -> list[dict[str, Any]]:
    """One row per (executor, workers): scored, wall seconds, trials per minute, overhead."""
    rows = []
    for name in executors:
        for workers in WORKERS:
            row = _one(task, name, workers, trials, storage, root)
            rows.append(row)
            if row.get("error"):
                log(f"throughput {name} x{workers}: {row['error']}")
            else:
                log(f"throughput {name} x{workers}: {row['per_minute']:.2f} scored trials/min, "
                    f"overhead {row['overhead']:.0%}")
    return rows


def _one(task, name: str, workers: int, trials: int, storage: str, root: Path) -> dict[str, Any]:
    from autoprune.executors import make_executor
    from autoprune.pipeline import make_run_searcher, open_ledger
    from autoprune.runner import LoopConfig, run_loop

    base = task.problem
    cores = os.cpu_count() or 1
    parallel = trials_at_once(name, workers)
    threads = base.settings.threads or max(1, cores // parallel)
    row: dict[str, Any] = {"executor": name, "workers": workers, "threads": threads, "trials": trials}
    settings = base.settings.replace(
        searcher="random", seed=0, trials=trials, executor=name, workers=workers, threads=threads,
        storage=storage, study_name=f"{task.name}/throughput/{name}/x{workers}", resume=False,
        run_dir=str(root / task.name / f"throughput-{name}-x{workers}"),
    )
    problem = dataclasses.replace(base, settings=settings, run_dir=Path(settings.run_dir),
                                  scoring=dataclasses.replace(base.scoring, threads=threads))
    try:
        tick = time.perf_counter()
        executor = make_executor(name, workers=workers, threads_per_worker=threads, ray_address=settings.ray_address)
        row["startup_s"] = time.perf_counter() - tick
        with executor:
            ledger = open_ledger(problem)
            searcher = make_run_searcher(problem)
            tick = time.perf_counter()
            result = run_loop(problem.recipe, problem.template(settings.fidelity), searcher, ledger, executor,
                              LoopConfig(trials=trials, batch=workers, seed=0))
            wall = time.perf_counter() - tick
    except Exception as exc:  # noqa: BLE001 - e.g. Ray not installed: report it, go on
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return row
    scored = [t for t in result.trials if t.scored]
    busy = sum(float(t.metrics.get("finetune_s", 0)) + float(t.metrics.get("evaluate_s", 0)) for t in scored)
    row.update(scored=len(scored), wall_s=wall, per_minute=60.0 * len(scored) / wall if wall > 0 else 0.0,
               busy_s=busy, overhead=overhead_fraction(wall, busy, parallel))
    return row
