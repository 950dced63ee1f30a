"""The search loop's stopping rules, and the bench's reading of one search as two views."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import optuna

from autoprune.bench.views import Anytime
from autoprune.costs import CostSettings
from autoprune.rules import SpaceRules
from autoprune.runner import LoopConfig, run_loop
from autoprune.searchers import Searcher, make_searcher
from autoprune.study import COMPLETE, REJECTED, Ledger, Trial
from autoprune.testing.toy import ToyProblem
from autoprune.trial import ScoringConfig, TrialOutcome, TrialRequest


class SlowExecutor:
    """Scores a toy policy after ``delay`` seconds, so the loop's clock moves."""

    def __init__(self, problem: ToyProblem, delay: float) -> None:
        self.problem, self.delay = problem, delay

    def submit(self, fn, recipe, request: TrialRequest) -> Future:
        time.sleep(self.delay)
        p, policy = self.problem, request.policy
        constraint = p.cost(policy) / p.budget - 1.0
        future: Future = Future()
        metrics = {"val_accuracy": p.accuracy(policy), "macs": p.cost(policy)}
        rejected = request.limit is not None and constraint > 0  # probes are scored unconstrained
        future.set_result(TrialOutcome(request.number, metrics, rejected, constraint, {}))
        return future


def _run(config: LoopConfig, delay: float = 0.02, searcher: str | Searcher = "random", fidelity: str = "kd:1"):
    problem = ToyProblem.make()
    space = problem.space()
    ledger = Ledger(optuna.create_study(direction="maximize"), space)
    searcher = make_searcher(searcher) if isinstance(searcher, str) else searcher
    searcher.setup(problem.context(0))
    template = TrialRequest(number=-1, policy=space.dense(), seed=0, fidelity=fidelity, target="macs",
                            limit=problem.budget, rules=SpaceRules(), cost=CostSettings((1, 8, 8)), scoring=ScoringConfig())
    return run_loop(None, template, searcher, ledger, SlowExecutor(problem, delay), config)


def _scored(result) -> int:
    return sum(t.state == COMPLETE for t in result.trials)


def test_the_loop_stops_at_its_scored_trials():
    result = _run(LoopConfig(trials=3))
    assert _scored(result) == 3 and result.stopped == "trials"


def test_probes_do_not_count_even_at_the_runs_own_fidelity():
    """A `--fidelity bn` knapsack search: its scan probes are scored at bn too, yet --trials
    counts only the planned trials (they used to eat the whole budget)."""
    knapsack = make_searcher("knapsack")
    result = _run(LoopConfig(trials=3), delay=0.0, searcher=knapsack, fidelity="bn")
    scored = [t for t in result.trials if t.state == COMPLETE]
    probes = [t for t in scored if knapsack.is_probe(t.policy)]
    assert result.stopped == "trials" and len(probes) > 3
    assert len(scored) - len(probes) == 3


def test_min_time_keeps_the_search_going_after_its_trials():
    result = _run(LoopConfig(trials=2, min_time_s=0.5))
    assert result.elapsed_s >= 0.5
    assert _scored(result) > 2  # 20 ms a trial: many more than 2 in half a second


def test_min_time_does_not_cut_a_search_short():
    result = _run(LoopConfig(trials=4, min_time_s=0.0))
    assert _scored(result) == 4


def test_views_are_prefixes_of_one_search():
    def trial(n: int, state: str, fidelity: str = "kd:5") -> Trial:
        return Trial(n, None, state, {"val_accuracy": 0.5} if state == COMPLETE else {}, fidelity=fidelity)

    trials = (trial(0, COMPLETE, "bn"), trial(1, REJECTED), trial(2, COMPLETE), trial(3, COMPLETE), trial(4, COMPLETE))
    run = Anytime(trials, (1.0, 2.0, 3.0, 4.0, 5.0), 5.5, "trials", None)
    assert run.time_to_scored(2, "kd:5") == 4.0  # the bn probe does not count
    assert run.time_to_scored(9, "kd:5") == 5.5  # never reached: the end of the loop
    assert [t.number for t in run.prefix(3.5)] == [0, 1, 2]


class ThreadedExecutor:
    """Scores toy policies on ``workers`` threads, trial ``n`` taking ``delay(n)`` seconds; keeps
    each trial's start and end time, to read when the loop asked."""

    def __init__(self, problem: ToyProblem, workers: int, delay) -> None:
        self.problem, self.delay, self.capacity = problem, delay, workers
        self.pool = ThreadPoolExecutor(workers)
        self.times: dict[int, tuple[float, float]] = {}

    def submit(self, fn, recipe, request: TrialRequest) -> Future:
        def score() -> TrialOutcome:
            started = time.perf_counter()
            time.sleep(self.delay(request.number))
            p, policy = self.problem, request.policy
            constraint = p.cost(policy) / p.budget - 1.0
            rejected = request.limit is not None and constraint > 0
            metrics = {"val_accuracy": p.accuracy(policy), "macs": p.cost(policy)}
            self.times[request.number] = (started, time.perf_counter())
            return TrialOutcome(request.number, metrics, rejected, constraint, {})

        return self.pool.submit(score)


def _run_on(executor, config: LoopConfig, searcher: str = "random"):
    problem = ToyProblem.make()
    space = problem.space()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ledger = Ledger(optuna.create_study(direction="maximize"), space)
    chosen = make_searcher(searcher)
    chosen.setup(problem.context(0))
    template = TrialRequest(number=-1, policy=space.dense(), seed=0, fidelity="kd:1", target="macs",
                            limit=problem.budget, rules=SpaceRules(), cost=CostSettings((1, 8, 8)), scoring=ScoringConfig())
    return run_loop(None, template, chosen, ledger, executor, config), chosen


def test_a_free_worker_gets_a_policy_while_its_partner_still_runs():
    """Two workers, trial 1 slow: trial 2 is asked as soon as trial 0 is told, not after a batch."""
    problem = ToyProblem.make()
    executor = ThreadedExecutor(problem, 2, lambda n: 0.6 if n == 1 else 0.02)
    result, _ = _run_on(executor, LoopConfig(trials=5, batch=2, max_proposals=5))
    times = executor.times
    assert len(result.trials) == 5
    assert times[2][0] < times[1][1]  # trial 2 started while trial 1 was still running
    for n, (start, _) in times.items():  # never more trials out than workers
        assert sum(s <= start < e for m, (s, e) in times.items() if m != n) <= 1


def test_a_worker_freed_by_a_short_trial_does_not_wait_for_an_older_one():
    """Trial 0 runs long and trials 1 and 2 end at once (rejections, say): their worker takes
    trials 2 and 3 while trial 0 still runs, instead of idling until trial 0 is told."""
    problem = ToyProblem.make()
    executor = ThreadedExecutor(problem, 2, lambda n: 0.6 if n == 0 else 0.02)
    result, _ = _run_on(executor, LoopConfig(trials=6, batch=2, max_proposals=6))
    times = executor.times
    assert len(result.trials) == 6 and [t.number for t in result.trials] == [0, 1, 2, 3, 4, 5]
    assert times[3][0] < times[0][1]  # trials 2 and 3 started while trial 0 was still running
    for n, (start, _) in times.items():  # never more trials running than workers
        assert sum(s <= start < e for m, (s, e) in times.items() if m != n) <= 1


def test_proposals_do_not_depend_on_which_trial_finishes_first():
    """Told in the order asked: the same seeded search on one schedule and on its reverse."""
    problem = ToyProblem.make()
    runs = []
    for delay in (lambda n: 0.01 * (n % 3), lambda n: 0.01 * (2 - n % 3)):
        result, _ = _run_on(ThreadedExecutor(problem, 3, delay), LoopConfig(trials=8, batch=3), "tpe")
        runs.append([t.policy for t in result.trials])
    assert runs[0] == runs[1] and len(runs[0]) >= 8


def test_a_searcher_that_waits_for_its_generation_is_not_exhausted():
    """emo hands out a generation and returns [] until it is told: the loop waits, then asks on."""
    problem = ToyProblem.make()
    result, emo = _run_on(ThreadedExecutor(problem, 3, lambda n: 0.0), LoopConfig(trials=24, batch=3), "emo")
    assert result.stopped == "trials" and _scored(result) >= 24
    assert emo.generations >= 2


def test_the_knapsack_plans_only_after_its_whole_scan_is_told():
    problem = ToyProblem.make()
    probe = make_searcher("knapsack")
    probe.setup(problem.context(0))
    last = len(probe._scan) - 1  # the last scan trial is slow: asking a plan before it is back is wrong
    executor = ThreadedExecutor(problem, 2, lambda n: 0.3 if n == last else 0.0)
    result, knapsack = _run_on(executor, LoopConfig(trials=3, batch=2), "knapsack")
    assert result.stopped == "trials" and not knapsack.fallback
    scan = [t.number for t in result.trials if knapsack.is_probe(t.policy)]
    planned = [t.number for t in result.trials if not knapsack.is_probe(t.policy)]
    assert len(scan) == len(knapsack._scan)
    # its values come from every scan trial: it asked for a plan only once all were back
    assert min(executor.times[n][0] for n in planned) >= max(executor.times[n][1] for n in scan)


def test_a_portfolio_member_between_generations_is_not_dropped():
    """A member with nothing to propose until its trials are told waits; it is not exhausted."""
    problem = ToyProblem.make()
    result, portfolio = _run_on(ThreadedExecutor(problem, 3, lambda n: 0.0), LoopConfig(trials=30, batch=3),
                                "portfolio:emo,random")
    assert result.stopped == "trials"
    assert not any(share.exhausted for share in portfolio.shares())
