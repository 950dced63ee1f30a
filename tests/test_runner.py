"""The search loop's stopping rules, and the bench's reading of one search as two views."""

from __future__ import annotations

import time
from concurrent.futures import Future

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
