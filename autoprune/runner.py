"""The search loop: ask -> submit -> wait -> record -> tell, and nothing else.

Searchers propose, executors run, the ledger records. The loop asks for ``batch`` policies at a
time and tells results in the order they were asked, so a seeded search proposes the same
policies whichever executor runs it (parallel completion order never leaks into the searcher).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    """

    trials: int
    batch: int = 1
    max_proposals: int | None = None
    time_limit_s: float | None = None
    min_time_s: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class LoopResult:
    trials: tuple[Trial, ...]
    stopped: str
    elapsed_s: float
    outcomes: tuple[TrialOutcome, ...]


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
                number = ledger.start(policy, searcher=searcher.name, fidelity=fidelity)
                seed = trial_seed(config.seed, number)
                ledger.annotate(number, seed=seed, **searcher.trial_attrs(policy))
                request = replace(template, number=number, policy=policy, seed=seed, fidelity=fidelity,
                                  limit=None if probe else template.limit)
                pending.append((number, policy, seed, fidelity, probe, executor.submit(run_trial, recipe, request)))
                proposed += 1
            for number, policy, seed, fidelity, probe, future in pending:
                try:
                    outcome = future.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - a broken trial must not end the search
                    ledger.fail(number, f"{type(exc).__name__}: {exc}")
                    trial = Trial(number, policy, FAILED, {}, seed, searcher.name, fidelity)
                    outcome = None
                else:
                    ledger.finish(number, outcome.metrics, constraint=outcome.constraint, rejected=outcome.rejected)
                    state = REJECTED if outcome.rejected else COMPLETE
                    metrics = dict(outcome.metrics)
                    trial = Trial(number, policy, state, metrics, seed, searcher.name, fidelity, outcome.constraint)
                    outcomes.append(outcome)
                    # Probes (a knapsack scan) never use up the trial budget, even when they are
                    # scored at the run's own fidelity (a `--fidelity bn` search).
                    scored += int(not outcome.rejected and not probe)
                finished.append(trial)
                searcher.tell(trial)
                if on_trial is not None:
                    on_trial(trial, outcome)
    except KeyboardInterrupt:
        ledger.fail_running("interrupted")
        raise
    return LoopResult(tuple(finished), stopped, time.perf_counter() - started, tuple(outcomes))
