"""The search loop: ask -> submit -> wait -> record -> tell, and nothing else.

Searchers propose, executors run, the ledger records. The loop asks for ``batch`` policies at a
time and tells results in the order they were asked, so a seeded search proposes the same
policies whichever executor runs it (parallel completion order never leaks into the searcher).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from autoprune.errors import UserError
from autoprune.executors import Executor
from autoprune.searchers import Searcher
from autoprune.study import COMPLETE, FAILED, REJECTED, Ledger, Trial
from autoprune.task import TaskRecipe
from autoprune.trial import TrialOutcome, TrialRequest, run_trial


@dataclass(frozen=True)
class LoopConfig:
    """When the loop stops and how it asks.

    Attributes:
        trials: scored (trained) trials to run; rejected policies and probes
            (``Searcher.is_probe``, e.g. a knapsack scan) do not count, whatever their fidelity.
        batch: policies asked, and run, at a time (the number of workers).
        max_proposals: hard cap on proposals, rejected ones included.
        time_limit_s: stop asking after this many seconds.
        min_time_s: after ``trials`` are scored, keep asking until this many seconds have passed
            (an anytime run: ``autoprune bench`` reads its equal-trials and equal-time views as two
            prefixes of one search).
        seed: the search seed; trial seeds derive from it and the trial number.
        max_failures: this many trials failing in a row with the same error stop the search
            (``SearchFailing``, with that error as its message) instead of proposing on.
    """

    trials: int
    batch: int = 1
    max_proposals: int | None = None
    time_limit_s: float | None = None
    min_time_s: float | None = None
    seed: int = 0
    max_failures: int = 3


@dataclass(frozen=True)
class LoopResult:
    trials: tuple[Trial, ...]
    stopped: str
    elapsed_s: float
    outcomes: tuple[TrialOutcome, ...]


class SearchFailing(UserError):
    """Trials keep failing with one error: the search stops with it instead of proposing on."""


def scored_search_trials(trials: list[Trial], fidelity: str) -> int:
    """Trials that count against ``--trials``: scored at the run's fidelity, probes excepted."""
    return sum(t.scored and t.fidelity == fidelity and not t.probe for t in trials)


def trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number * 7_919) % (2**31 - 1)


def replay(searcher: Searcher, ledger: Ledger) -> int:
    """Tell the searcher every finished search trial already in the ledger (resume, warm start)."""
    told = 0
    for trial in ledger.trials():
        if trial.state in (COMPLETE, REJECTED) and trial.fidelity != "final":
            searcher.tell(trial)
            told += 1
    return told


def run_loop(
    recipe: TaskRecipe,
    template: TrialRequest,
    searcher: Searcher,
    ledger: Ledger,
    executor: Executor,
    config: LoopConfig,
    *,
    on_trial: Callable[[Trial, TrialOutcome | None], None] | None = None,
) -> LoopResult:
    """Run the search until ``config.trials`` trials are scored or the searcher is exhausted.

    ``template`` holds everything but the policy, number and seed. On Ctrl-C the running trials
    are marked failed in the ledger and KeyboardInterrupt propagates; finished trials are kept.
    """
    started = time.perf_counter()
    max_proposals = config.max_proposals or 20 * config.trials
    scored = proposed = 0
    failing: list[str] = []  # the errors of the trials that failed since the last one that did not
    finished: list[Trial] = []
    outcomes: list[TrialOutcome] = []
    stopped = "trials"

    def more() -> bool:
        if scored < config.trials:
            return True
        return config.min_time_s is not None and time.perf_counter() - started < config.min_time_s

    try:
        while more():
            if proposed >= max_proposals:
                stopped = "max_proposals"
                break
            if config.time_limit_s is not None and time.perf_counter() - started > config.time_limit_s:
                stopped = "time"
                break
            wanted = config.trials - scored if scored < config.trials else config.batch
            n = min(config.batch, wanted, max_proposals - proposed)
            policies = searcher.ask(n)
            if not policies:
                stopped = "exhausted"
                break
            pending = []
            for policy in policies:
                probe = searcher.is_probe(policy)
                fidelity = (searcher.probe_fidelity or template.fidelity) if probe else template.fidelity
                number = ledger.start(policy, searcher=searcher.name, fidelity=fidelity, probe=probe)
                seed = trial_seed(config.seed, number)
                ledger.annotate(number, seed=seed, **searcher.trial_attrs(policy))
                request = replace(template, number=number, policy=policy, seed=seed, fidelity=fidelity,
                                  limit=None if probe else template.limit)
                pending.append((number, policy, seed, fidelity, probe, executor.submit(run_trial, recipe, request)))
                proposed += 1
            for number, policy, seed, fidelity, probe, future in pending:
                concurrent.futures.wait([future])
                if getattr(future, "worker_retries", 0):  # its worker died, and the trial ran again
                    ledger.annotate(number, worker_retries=future.worker_retries)
                try:
                    outcome = future.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - a broken trial must not end the search
                    error = f"{type(exc).__name__}: {exc}"
                    ledger.fail(number, error)
                    trial = Trial(number, policy, FAILED, {}, seed, searcher.name, fidelity, probe=probe)
                    outcome = None
                    failing = failing + [error] if failing and failing[-1] == error else [error]
                else:
                    failing = []
                    ledger.finish(number, outcome.metrics, constraint=outcome.constraint, rejected=outcome.rejected)
                    state = REJECTED if outcome.rejected else COMPLETE
                    metrics = dict(outcome.metrics)
                    trial = Trial(number, policy, state, metrics, seed, searcher.name, fidelity, outcome.constraint, probe=probe)
                    outcomes.append(outcome)
                    # Probes (a knapsack scan) never use up the trial budget, even when they are
                    # scored at the run's own fidelity (a `--fidelity bn` search).
                    scored += int(not outcome.rejected and not probe)
                finished.append(trial)
                searcher.tell(trial)
                if on_trial is not None:
                    on_trial(trial, outcome)
                if len(failing) >= config.max_failures:
                    first = failing[-1].strip().splitlines()[0] if failing[-1].strip() else failing[-1]
                    raise SearchFailing(f"the search stopped: {len(failing)} trials in a row failed with {first} "
                                        "(finished trials are kept in the study; the failed ones hold the error)")
    except BaseException as exc:  # Ctrl-C, SIGTERM, a failing search: no trial is left RUNNING
        ledger.fail_running("interrupted" if isinstance(exc, KeyboardInterrupt) else f"search stopped: {exc}")
        raise
    return LoopResult(tuple(finished), stopped, time.perf_counter() - started, tuple(outcomes))
