"""Knapsack / DP searchers: exact on the additive toy problem, greedy gap, scan, sweep, determinism."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from autoprune.searchers import make_searcher
from autoprune.searchers.knapsack import KnapsackSearcher, interpolate_drops, scan_ratios
from autoprune.searchers.mckp import solve_greedy, solve_mckp
from autoprune.study import COMPLETE, Trial
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy


def drive(searcher: KnapsackSearcher, problem: ToyProblem, seed: int = 0, cap: int = 200) -> list[Trial]:
    """A runner that scores every policy, over budget or not (what the scan needs)."""
    searcher.setup(problem.context(seed))
    trials: list[Trial] = []
    while len(trials) < cap:
        policies = searcher.ask(3)
        if not policies:
            break
        for p in policies:
            cost = problem.cost(p)
            metrics = {"val_accuracy": problem.accuracy(p), "macs": cost}
            trial = Trial(len(trials), p, COMPLETE, metrics, seed, searcher.name, "toy", cost / problem.budget - 1)
            trials.append(trial)
            searcher.tell(trial)
    return trials


def after_scan(searcher: KnapsackSearcher, trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if not searcher.is_probe(t.policy)]


def brute_force(values, costs, capacity) -> float:
    best = -np.inf
    for combo in itertools.product(*(range(len(v)) for v in values)):
        if sum(c[k] for c, k in zip(costs, combo, strict=True)) <= capacity:
            best = max(best, sum(v[k] for v, k in zip(values, combo, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_dp_is_exact_on_random_instances_with_negative_costs(seed):
    rng = np.random.default_rng(seed)
    values = [np.sort(rng.uniform(-1, 0, 5))[::-1] for _ in range(5)]
    costs = [-np.sort(rng.uniform(0, 3, 5)) for _ in range(5)]  # deltas from dense: <= 0
    capacity = -0.5 * sum(-c.min() for c in costs)
    choice = solve_mckp(values, costs, capacity)
    total_cost = sum(c[k] for c, k in zip(costs, choice, strict=True))
    total_value = sum(v[k] for v, k in zip(values, choice, strict=True))
    assert total_cost <= capacity + 1e-12
    assert total_value == pytest.approx(brute_force(values, costs, capacity), abs=1e-12)
    greedy = solve_greedy(values, costs, capacity)
    assert sum(c[k] for c, k in zip(costs, greedy, strict=True)) <= capacity + 1e-12
    assert sum(v[k] for v, k in zip(values, greedy, strict=True)) <= total_value + 1e-12


def test_dp_returns_the_cheapest_choices_when_nothing_fits():
    assert solve_mckp([[0.0, -1.0], [0.0, -2.0]], [[0.0, -1.0], [0.0, -1.0]], -5.0) == [1, 1]


@pytest.mark.parametrize(("seed", "budget"), [(0, 0.5), (1, 0.4), (2, 0.6), (3, 0.35)])
def test_dp_finds_the_toy_optimum(seed, budget):
    problem = ToyProblem.make(n_slots=6, seed=seed, budget=budget)
    searcher = KnapsackSearcher(scan_points=None, sweep=(1.0, 0.95))
    trials = drive(searcher, problem)
    n_scan = 1 + 6 * 4
    assert sum(searcher.is_probe(t.policy) for t in trials) == n_scan
    solution = after_scan(searcher, trials)[0]
    optimum, _ = problem.optimum()
    assert solution.feasible
    assert solution.accuracy == pytest.approx(optimum, abs=1e-12)
    assert best_feasible(trials) == pytest.approx(optimum, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_gap_is_non_negative(seed):
    problem = ToyProblem.make(n_slots=6, seed=seed, budget=0.45)
    optimum, _ = problem.optimum()
    greedy = make_searcher("knapsack-greedy")
    assert isinstance(greedy, KnapsackSearcher)
    greedy.scan_points, greedy.sweep = None, (1.0,)
    first = after_scan(greedy, drive(greedy, problem))[0]
    gap = optimum - first.accuracy
    print(f"seed {seed}: greedy gap {gap:.5f}")
    assert first.feasible
    assert gap >= -1e-12


def test_partial_scan_interpolates_and_stays_close():
    problem = ToyProblem.make(n_slots=6, seed=5, budget=0.5)
    searcher = KnapsackSearcher(scan_points=2, sweep=(1.0, 0.95, 0.9))
    trials = drive(searcher, problem)
    assert sum(searcher.is_probe(t.policy) for t in trials) == 1 + 6 * 2
    for t in trials[1:13]:
        assert sum(r > 0 for r in t.policy.as_dict().values()) == 1  # one slot pruned, others dense
    optimum, _ = problem.optimum()
    assert 0 <= optimum - best_feasible(trials) < 0.02


def test_sweep_respects_each_budget_factor():
    problem = ToyProblem.make(n_slots=6, seed=4, budget=0.6)
    searcher = KnapsackSearcher(scan_points=None, sweep=(1.0, 0.9, 0.8, 0.7), refine=False)
    front = after_scan(searcher, drive(searcher, problem))
    assert 2 <= len(front) <= 4
    costs = [t.metrics["macs"] for t in front]
    assert all(c <= 0.6 + 1e-12 for c in costs)
    assert costs == sorted(costs, reverse=True)
    assert min(costs) <= 0.6 * 0.8 + 1e-9


def test_same_seed_same_sequence():
    problem = ToyProblem.make(seed=3)
    a = drive(KnapsackSearcher(), problem, seed=7)
    b = drive(KnapsackSearcher(), problem, seed=7)
    assert [t.policy for t in a] == [t.policy for t in b]
    assert len(a) > 13


def test_rejected_scan_falls_back_and_still_proposes_feasible_policies():
    problem = ToyProblem.make(seed=0)
    searcher = KnapsackSearcher()
    with pytest.warns(RuntimeWarning, match="scan"):
        trials = run_toy(searcher, problem, 5)
    assert searcher.fallback
    assert trials[0].state == "rejected"  # the dense scan baseline is over budget
    assert sum(t.scored for t in trials) >= 3
    assert all(t.feasible for t in trials[1:])


def test_scan_ratios_and_interpolation():
    choices = tuple(round(0.1 * i, 1) for i in range(9))
    assert scan_ratios(choices, 2) == (0.4, 0.8)
    assert scan_ratios(choices, None) == choices[1:]
    drops = interpolate_drops(choices, {0.4: 0.1, 0.8: 0.05})  # noisy: later point lower
    assert drops[0] == 0.0 and drops[4] == pytest.approx(0.1)
    assert np.all(np.diff(drops) >= 0)
    assert drops[2] == pytest.approx(0.05)


def test_measured_costs_correct_a_biased_estimate():
    problem = ToyProblem.make(n_slots=6, seed=2, budget=0.5)
    searcher = KnapsackSearcher(value="magnitude", sweep=(1.0, 0.99, 0.98, 0.97))
    ctx = dataclasses.replace(problem.context(), estimate=lambda p: 0.5 * problem.cost(p))  # 2x optimistic
    searcher.setup(ctx)
    costs = []
    for _ in range(4):
        (policy,) = searcher.ask(1)
        cost = problem.cost(policy)
        costs.append(cost)
        searcher.tell(Trial(len(costs), policy, COMPLETE, {"macs": cost, "val_accuracy": 0.5}, constraint=cost / 0.5 - 1))
    assert costs[0] <= 0.5 * 2 + 1e-9 and costs[0] > 0.5  # planned on the biased estimate: over
    assert searcher.correction() == pytest.approx(2.0)
    assert all(c <= 0.5 + 1e-9 for c in costs[1:])


def test_the_correction_comes_from_planned_trials_not_the_scan_probes():
    """A table exact near dense (the probes) but 2x optimistic for deep policies, as a latency
    table is at a tight budget: the plans after the first must meet the budget all the same."""
    problem = ToyProblem.make(n_slots=4, seed=3, budget=0.4)
    searcher = KnapsackSearcher(value="scan", sweep=(1.0, 0.99, 0.98, 0.97))
    probe_or_dense = lambda p: sum(r > 0 for _, r in p.items) <= 1  # noqa: E731
    estimate = lambda p: problem.cost(p) * (1.0 if probe_or_dense(p) else 0.5)  # noqa: E731
    searcher.setup(dataclasses.replace(problem.context(), estimate=estimate))
    costs: list[float] = []
    while len(costs) < 40:
        asked = searcher.ask(1)
        if not asked:
            break
        policy = asked[0]
        cost = problem.cost(policy)
        metrics = {"macs": cost, "val_accuracy": problem.accuracy(policy)}
        searcher.tell(Trial(len(costs), policy, COMPLETE, metrics, constraint=cost / 0.4 - 1))
        if not searcher.is_probe(policy):
            costs.append(cost)
    assert len(costs) >= 3 and costs[0] > 0.4  # planned on the optimistic table: over
    assert searcher.correction() == pytest.approx(2.0)
    assert all(c <= 0.4 + 1e-9 for c in costs[1:])


@pytest.mark.parametrize("seed", range(3))
def test_refinement_climbs_from_wrong_values_towards_the_optimum(seed):
    """Without a model or a scan the values are blind (every variable equally sensitive): the
    sweep alone lands far from the toy optimum; measuring neighbours of the best trial closes
    most of that gap, and every neighbour stays within budget on the estimate."""
    problem = ToyProblem.make(n_slots=6, seed=seed, budget=0.5)
    optimum, _ = problem.optimum()
    sweep_only = KnapsackSearcher(value="magnitude", refine=False)
    swept = drive(sweep_only, problem)
    refined_searcher = KnapsackSearcher(value="magnitude")
    refined = drive(refined_searcher, problem, cap=60)
    assert len(swept) < 20 and len(refined) >= 60  # the sweep runs out; refinement goes on
    assert [t.policy for t in refined[: len(swept)]] == [t.policy for t in swept]
    assert len({t.policy for t in refined}) == len(refined)
    gap_sweep, gap_refined = optimum - best_feasible(swept), optimum - best_feasible(refined)
    print(f"seed {seed}: gap to optimum, sweep {gap_sweep:.4f}, refined {gap_refined:.4f}")
    assert gap_refined < 0.5 * gap_sweep
    assert all(t.feasible for t in refined[len(swept):])


def test_refinement_stops_when_no_neighbour_is_left():
    problem = ToyProblem.make(n_slots=3, seed=1, budget=0.5)
    trials = drive(KnapsackSearcher(value="magnitude"), problem, cap=500)
    assert len(trials) < 500
    assert len({t.policy for t in trials}) == len(trials)
