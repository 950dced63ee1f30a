"""The tracked estimate: rescaled by measured trials, so a table that reads low stops letting
over-budget proposals through."""

from __future__ import annotations

import dataclasses
import math
import zlib

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


def _random_search(problem: ToyProblem, estimate, seed: int, scored_trials: int) -> tuple[int, int]:
    """(rejected, scored) of a random search on the toy problem screened by ``estimate``."""
    searcher = make_searcher("random")
    searcher.setup(dataclasses.replace(problem.context(seed), estimate=estimate))
    rejected = scored = 0
    while scored < scored_trials:
        (policy,) = searcher.ask(1)
        cost = problem.cost(policy)
        over = cost > problem.budget
        state = REJECTED if over else COMPLETE
        metrics = {"macs": cost} if over else {"macs": cost, "val_accuracy": problem.accuracy(policy)}
        searcher.tell(Trial(0, policy, state, metrics, seed, "random", "toy", cost / problem.budget - 1))
        rejected += over
        scored += not over
    return rejected, scored


def _rejected(problem: ToyProblem, tracked: bool, seed: int) -> int:
    def low(policy):  # a table that reads 30% low, as a stale LUT on a busier machine does
        return 0.7 * problem.cost(policy)

    return _random_search(problem, TrackedEstimate(low) if tracked else low, seed, 15)[0]


def test_tracking_cuts_the_proposals_rejected_over_budget():
    problem = ToyProblem.make(n_slots=6, seed=1, budget=0.5)
    plain = sum(_rejected(problem, False, s) for s in range(3))
    tracked = sum(_rejected(problem, True, s) for s in range(3))
    assert plain >= 10
    assert tracked <= plain / 3


def test_margin_grows_with_rejections_shrinks_with_acceptances_and_stays_bounded():
    est = TrackedEstimate(lambda p: 1.0, limit=1.0, step=0.1, target_rejection=0.2, max_margin=1.5)
    est.observe({}, 0.9)
    assert est.margin == 1.0  # never below 1
    est.observe({}, 1.1)
    assert est.margin == pytest.approx(math.exp(0.08))
    est.observe({}, 0.9)
    assert est.margin == pytest.approx(math.exp(0.06))
    for _ in range(50):
        est.observe({}, 1.1)
    assert est.margin == pytest.approx(1.5)
    assert TrackedEstimate(lambda p: 1.0).margin == 1.0  # no limit, no margin


def _rejection_rate(problem: ToyProblem, limit: float | None, seed: int) -> float:
    def noisy(policy):  # right on average, but off by up to 35% either way from policy to policy
        wobble = (zlib.crc32(repr(policy.items).encode()) % 1000) / 1000
        return problem.cost(policy) * (0.65 + 0.7 * wobble)

    rejected, scored = _random_search(problem, TrackedEstimate(noisy, limit=limit), seed, 20)
    return rejected / (rejected + scored)


def test_the_margin_corrects_for_random_search_keeping_the_most_under_estimated_draws():
    problem = ToyProblem.make(n_slots=8, seed=2, budget=0.4)
    median_only = [_rejection_rate(problem, None, s) for s in range(3)]
    with_margin = [_rejection_rate(problem, problem.budget, s) for s in range(3)]
    assert sum(with_margin) <= 0.8 * sum(median_only)
    assert max(with_margin) <= 0.2
