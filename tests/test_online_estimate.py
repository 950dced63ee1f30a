"""The tracked estimate: rescaled by measured trials, so a table that reads low stops letting
over-budget proposals through."""

from __future__ import annotations

import dataclasses

import pytest

from autoprune.costs.online import TrackedEstimate
from autoprune.searchers import make_searcher
from autoprune.study import COMPLETE, REJECTED, Trial
from autoprune.testing.toy import ToyProblem


def test_factor_is_one_until_enough_observations_then_the_median_ratio():
    est = TrackedEstimate(lambda p: 2.0, min_observations=3)
    est.observe({}, 3.0)
    est.observe({}, 2.4)
    assert est.factor == 1.0 and est({}) == 2.0
    est.observe({}, 2.6)
    assert est.factor == pytest.approx(1.3)
    assert est({}) == pytest.approx(2.6)


def test_small_errors_are_left_alone_and_old_observations_expire():
    est = TrackedEstimate(lambda p: 1.0, min_observations=1, window=2, tolerance=0.05)
    est.observe({}, 1.04)
    assert est.factor == 1.0
    for measured in (2.0, 2.0, 0.5, 0.5):
        est.observe({}, measured)
    assert est.factor == 0.5 and est.observations == 2


def test_missing_or_zero_values_are_not_observed():
    est = TrackedEstimate(lambda p: None)
    est.observe({}, 1.0)
    assert est.observations == 0 and est({}) is None


def _rejected(problem: ToyProblem, tracked: bool, seed: int) -> int:
    def low(policy):  # a table that reads 30% low, as a stale LUT on a busier machine does
        return 0.7 * problem.cost(policy)

    estimate = TrackedEstimate(low) if tracked else low
    ctx = dataclasses.replace(problem.context(seed), estimate=estimate)
    searcher = make_searcher("random")
    searcher.setup(ctx)
    rejected = scored = 0
    while scored < 15:
        (policy,) = searcher.ask(1)
        cost = problem.cost(policy)
        over = cost > problem.budget
        state = REJECTED if over else COMPLETE
        metrics = {"macs": cost} if over else {"macs": cost, "val_accuracy": problem.accuracy(policy)}
        searcher.tell(Trial(0, policy, state, metrics, seed, "random", "toy", cost / problem.budget - 1))
        rejected += over
        scored += not over
    return rejected


def test_tracking_cuts_the_proposals_rejected_over_budget():
    problem = ToyProblem.make(n_slots=6, seed=1, budget=0.5)
    plain = sum(_rejected(problem, False, s) for s in range(3))
    tracked = sum(_rejected(problem, True, s) for s in range(3))
    assert plain >= 10
    assert tracked <= plain / 3

