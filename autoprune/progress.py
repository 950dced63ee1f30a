"""Output of a search: a console that reads well piped, and the progress of the trials.

On a terminal the progress is a live bar (trials done, best feasible accuracy so far, elapsed and
remaining); piped to a file or another program, it is one plain line per finished trial, since a
live bar there is printed once, at the end, cut to 80 columns.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autoprune.study import Trial
from autoprune.trial import TrialOutcome

# Width of a console that is not a terminal (and has no COLUMNS): tables get their natural
# width, and text is never wrapped (soft wrap), so a piped log has one line per message.
PIPED_WIDTH = 200
LABELS = {"latency_ms": "latency", "macs": "MACs", "params": "params"}


def make_console(*, stderr: bool = False, **options: Any) -> Console:
    """A rich console on stdout (or stderr) that wraps words on a terminal and, piped, neither
    hard-wraps a message mid-sentence nor squeezes a table into 80 columns."""
    console = Console(stderr=stderr, **options)
    if not console.is_terminal:
        console.soft_wrap = True
        if "width" not in options and not os.environ.get("COLUMNS"):
            console.width = PIPED_WIDTH
    return console


def clock(seconds: float) -> str:
    """``1:05`` (minutes:seconds), ``1:02:05`` past an hour."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class SearchProgress:
    """The search's progress, fed by the runner's ``on_trial`` callback: a rich bar on a terminal,
    a plain line per finished trial otherwise (``live`` forces either)."""

    def __init__(self, console: Console, total: int, metric: str, *, live: bool | None = None) -> None:
        self.console = console
        self.total = total
        self.metric = metric
        self.best: float | None = None
        self.done = 0
        self.rejected = 0
        self.failed = 0
        self.live = console.is_terminal if live is None else live
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]search"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task("search", total=total, status=self._status())

    def _status(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        return f"best feasible val acc {best} | rejected {self.rejected} | failed {self.failed}"

    def __enter__(self) -> SearchProgress:
        if self._progress is not None:
            self._progress.__enter__()
        else:
            self._print(f"search: {self.total} trials to score")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, trial: Trial, outcome: TrialOutcome | None) -> None:
        if trial.state == "rejected":
            self.rejected += 1
        elif trial.state == "failed":
            self.failed += 1
        elif trial.scored:
            if trial.feasible and (self.best is None or (trial.accuracy or 0) > self.best):
                self.best = trial.accuracy
            if not trial.probe:
                self.done += 1
        if self._progress is not None:
            if trial.scored and not trial.probe:
                self._progress.advance(self._task)
            self._progress.update(self._task, status=self._status())
        else:
            self._print(self.line(trial))

    def line(self, trial: Trial) -> str:
        """One finished trial, as the piped log prints it."""
        from autoprune.objectives import format_metric

        cost = trial.metrics.get(self.metric)
        what = f"{LABELS.get(self.metric, self.metric)} {format_metric(self.metric, cost)}" if cost is not None else ""
        if trial.state == "rejected":
            over = f", {trial.constraint:.1%} over the limit" if trial.constraint is not None else ""
            head = f"rejected ({what}{over})"
        elif trial.state == "failed":
            head = "failed"
        elif trial.scored:
            fit = "" if trial.constraint is None else ", within budget" if trial.feasible else ", over budget"
            head = f"val acc {trial.accuracy:.4f} ({what}{fit})"
        else:
            head = trial.state
        kind = f"probe {trial.fidelity}" if trial.probe else trial.fidelity
        elapsed = time.perf_counter() - self._started
        to_go = max(0, self.total - self.done)
        left = f", about {clock(elapsed / self.done * to_go)} left" if self.done and to_go else ""
        best = "-" if self.best is None else f"{self.best:.4f}"
        return (f"trial {trial.number} [{kind}]: {head}; scored {self.done}/{self.total}, best feasible {best}, "
                f"rejected {self.rejected}, failed {self.failed}; {clock(elapsed)} elapsed{left}")

    def _print(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)
