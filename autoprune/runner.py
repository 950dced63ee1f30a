"""The search loop: ask -> submit -> wait -> record -> tell, and nothing else.

Searchers propose, executors run, the ledger records. The loop keeps ``batch`` trials running (one per
worker) and tells results in the order they were asked. What the searcher knows when it is asked
is fixed by the order alone, never by which trial finished first, so a seeded search proposes the
same policies whichever executor runs it: with one worker, trial ``k`` is asked after trials
``0..k-1`` are told; with ``batch`` workers, after trials ``0..k-batch-2`` are told (``lag``).
That slack of two trials beyond the workers lets a worker freed by short trials (rejections)
take new policies at once while an older trial is still running, instead of idling until it ends.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from autoprune import interrupts
from autoprune.errors import UserError
from autoprune.executors import Executor
from autoprune.searchers import Searcher
from autoprune.space import Policy
from autoprune.study import COMPLETE, FAILED, REJECTED, Ledger, Trial, numeric_attrs
from autoprune.task import TaskRecipe
from autoprune.trial import TrialOutcome, TrialRequest, run_trial


@dataclass(frozen=True)
class LoopConfig:
    """When the loop stops and how it asks.

    Attributes:
        trials: scored (trained) trials to run; rejected policies and probes
            (``Searcher.is_probe``, e.g. a knapsack scan) do not count, whatever their fidelity.
        batch: trials running at a time (the number of workers); a worker is given a new policy as
            soon as its trial ends (see ``lag``).
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


def lag(batch: int) -> int:
    """How many trials asked before trial ``k`` may still be untold when it is asked: trial ``k``
    is asked knowing trials ``0..k-lag`` (and later ones only where the order of results, never
    the clock, made the loop tell them: a searcher that waited, a search near its end). One
    worker: every earlier trial. Several: two more than the workers, so a worker freed by short
    trials (up to two rejections in a row, common while a search's cost estimate settles) never
    waits for an older trial that is still running."""
    return 1 if batch <= 1 else batch + 2


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


@dataclass(frozen=True)
class _Running:
    """A submitted trial the loop has yet to tell."""

    number: int
    policy: Policy
    seed: int
    fidelity: str
    probe: bool
    future: concurrent.futures.Future
    attrs: dict[str, Any]  # what the searcher asked the ledger to record with it (``trial_attrs``)

    def trial(self, state: str, metrics: dict[str, float], constraint: float | None, searcher: str) -> Trial:
        """The trial as the ledger will give it back: the searcher's numeric attrs among its
        metrics and its portfolio member, so the live search and a resumed one see the same."""
        return Trial(self.number, self.policy, state, {**numeric_attrs(self.attrs), **metrics}, self.seed, searcher, self.fidelity,
                     constraint, member=str(self.attrs.get("member", "")), probe=self.probe)


def _submit(recipe: TaskRecipe, template: TrialRequest, searcher: Searcher, ledger: Ledger, executor: Executor,
            config: LoopConfig, policy: Policy) -> _Running:
    probe = searcher.is_probe(policy)
    fidelity = (searcher.probe_fidelity or template.fidelity) if probe else template.fidelity
    number = ledger.start(policy, searcher=searcher.name, fidelity=fidelity, probe=probe)
    seed = trial_seed(config.seed, number)
    attrs = searcher.trial_attrs(policy)
    ledger.annotate(number, seed=seed, **attrs)
    request = replace(template, number=number, policy=policy, seed=seed, fidelity=fidelity,
                      limit=None if probe else template.limit)
    return _Running(number, policy, seed, fidelity, probe, executor.submit(run_trial, recipe, request), attrs)


def _finish(running: _Running, searcher: Searcher, ledger: Ledger) -> tuple[Trial, TrialOutcome | None, str]:
    """Wait for a trial and record it: (the trial, its outcome or None, its error or '')."""
    number, future = running.number, running.future
    concurrent.futures.wait([future])
    if getattr(future, "worker_retries", 0):  # its worker died, and the trial ran again
        ledger.annotate(number, worker_retries=future.worker_retries)
    interrupts.check()  # a Ctrl-C a dependency swallowed inside the trial fails it, as one it did not swallow
    try:
        outcome = future.result()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken trial must not end the search
        error = f"{type(exc).__name__}: {exc}"
        ledger.fail(number, error)
        return running.trial(FAILED, {}, None, searcher.name), None, error
    ledger.finish(number, outcome.metrics, constraint=outcome.constraint, rejected=outcome.rejected)
    state = REJECTED if outcome.rejected else COMPLETE
    return running.trial(state, dict(outcome.metrics), outcome.constraint, searcher.name), outcome, ""


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
    out: deque[_Running] = deque()  # submitted and not yet told, in the order asked
    slack = lag(config.batch)

    def wanted() -> int:
        """Policies to ask now, less what the trials out may still score (0: ask nothing now)."""
        free = min(1 if out else config.batch, max_proposals - proposed)  # one at a time once running
        if scored >= config.trials:  # an anytime run (min_time_s) keeps every worker busy
            return free
        return min(free, config.trials - scored - sum(not r.probe for r in out))

    def why_stop() -> str:
        """Why no more policies are asked now ('' if they are)."""
        if scored >= config.trials and (config.min_time_s is None or time.perf_counter() - started >= config.min_time_s):
            return "trials"
        if proposed >= max_proposals:
            return "max_proposals"
        if config.time_limit_s is not None and time.perf_counter() - started > config.time_limit_s:
            return "time"
        return ""

    def tell_oldest() -> None:
        nonlocal scored, failing
        trial, outcome, error = _finish(out.popleft(), searcher, ledger)
        if outcome is not None:
            outcomes.append(outcome)
            # Probes (a knapsack scan) never use up the trial budget, even when they are
            # scored at the run's own fidelity (a `--fidelity bn` search).
            scored += int(not outcome.rejected and not trial.probe)
        if not error:
            failing = []
        else:  # only the same error over and over stops the search
            failing = failing + [error] if failing and failing[-1] == error else [error]
        finished.append(trial)
        searcher.tell(trial)
        if on_trial is not None:
            on_trial(trial, outcome)
        if len(failing) >= config.max_failures:
            first = failing[-1].strip().splitlines()[0] if failing[-1].strip() else failing[-1]
            raise SearchFailing(f"the search stopped: {len(failing)} trials in a row failed with {first} "
                                "(finished trials are kept in the study; the failed ones hold the error)")

    try:
        # Every tell below is decided by the order of trials and their results alone (so what the
        # searcher knows at each ask is the same on any executor); only waiting for a free worker
        # depends on the clock, and it tells nothing.
        while True:
            interrupts.check()
            stopped = why_stop()
            n = 0 if stopped else wanted()
            if n <= 0:  # nothing more to ask now: the trials out are told as they come back, in order
                if not out:
                    stopped = stopped or "trials"
                    break
                tell_oldest()
                continue
            if len(out) >= slack:  # the oldest must be known before the next ask
                tell_oldest()
                continue
            running = [r.future for r in out if not r.future.done()]
            if len(running) >= config.batch:  # every worker busy: wait for one, tell nothing
                concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                continue
            policies = searcher.ask(n)
            for policy in policies:
                out.append(_submit(recipe, template, searcher, ledger, executor, config, policy))
                proposed += 1
            if not policies:  # [] while trials are out: the searcher waits for them; none: exhausted
                if not out:
                    stopped = "exhausted"
                    break
                tell_oldest()
    except BaseException as exc:  # Ctrl-C, SIGTERM, a failing search: no trial is left RUNNING
        ledger.fail_running("interrupted" if isinstance(exc, KeyboardInterrupt) else f"search stopped: {exc}")
        raise
    return LoopResult(tuple(finished), stopped, time.perf_counter() - started, tuple(outcomes))
