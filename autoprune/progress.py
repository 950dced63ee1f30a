"""Live progress of a search: trials done, best feasible accuracy so far, elapsed and remaining."""

from __future__ import annotations

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


class SearchProgress:
    """A rich progress bar fed by the runner's ``on_trial`` callback."""

    def __init__(self, console: Console, total: int, metric: str) -> None:
        self.metric = metric
        self.best: float | None = None
        self.rejected = 0
        self.failed = 0
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
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def update(self, trial: Trial, outcome: TrialOutcome | None) -> None:
        if trial.state == "rejected":
            self.rejected += 1
        elif trial.state == "failed":
            self.failed += 1
        elif trial.scored:
            if trial.feasible and (self.best is None or (trial.accuracy or 0) > self.best):
                self.best = trial.accuracy
            self._progress.advance(self._task)
        self._progress.update(self._task, status=self._status())
