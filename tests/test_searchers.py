"""Searchers on the toy problem: contract (determinism, no duplicates) and the baselines."""

from __future__ import annotations

import pytest

from autoprune.searchers import make_searcher, searcher_names
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy

BASELINES = ["random", "uniform"]


@pytest.mark.parametrize("name", [n for n in searcher_names() if n != "global"])
def test_same_seed_same_trials(name):
    problem = ToyProblem.make(seed=3)
    a = run_toy(make_searcher(name), problem, 12, seed=7)
    b = run_toy(make_searcher(name), problem, 12, seed=7)
    assert [t.policy for t in a] == [t.policy for t in b]
    assert a, "the searcher proposed nothing"


@pytest.mark.parametrize("name", [n for n in searcher_names() if n != "global"])
def test_no_duplicate_proposals(name):
    problem = ToyProblem.make(seed=1)
    trials = run_toy(make_searcher(name), problem, 15, seed=0)
    keys = [t.policy for t in trials]
    assert len(keys) == len(set(keys))


def test_uniform_starts_at_the_budget():
    problem = ToyProblem.make(seed=2, budget=0.55)
    trials = run_toy(make_searcher("uniform"), problem, 3)
    first = trials[0]
    assert first.feasible
    assert first.policy.mean_ratio() == pytest.approx(0.6)  # 0.4 keeps 60% > 55%; 0.6 is the least pruning that fits


def test_random_finds_feasible_policies():
    problem = ToyProblem.make(seed=0)
    trials = run_toy(make_searcher("random"), problem, 10)
    assert best_feasible(trials) > 0.5
    assert best_feasible(trials) <= problem.optimum()[0] + 1e-12


def test_unknown_searcher():
    from autoprune.errors import UserError

    with pytest.raises(UserError, match="unknown searcher"):
        make_searcher("simulated-annealing")
