"""Searchers on the toy problem: contract (determinism, no duplicates) and the baselines."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from autoprune.searchers import make_searcher, searcher_names
from autoprune.searchers._base import BOX_SLACK
from autoprune.study import COMPLETE, Trial
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


def test_the_feasible_box_holds_every_feasible_policy_and_each_bound_is_reached():
    problem = ToyProblem.make(n_slots=5, seed=3, budget=0.35)
    ctx = problem.context()
    box = ctx.feasible_box()
    space = problem.space()
    feasible = [space.encode(p) for p in map(space.decode, itertools.product(range(5), repeat=5))
                if problem.cost(p) <= problem.budget]
    assert feasible and all((x >= box).all() for x in feasible)
    assert all(any(x[i] == box[i] for x in feasible) for i in range(5))  # no bound is looser than needed
    assert dataclasses.replace(ctx, estimate=None).feasible_box() is None
    # an estimate 10x too high puts every policy over budget: the box is then the policies within
    # BOX_SLACK of the most pruned one's estimate, the region where the budget really lies
    overstated = dataclasses.replace(ctx, estimate=lambda p: 10.0 * problem.cost(p)).feasible_box()
    floor = problem.cost(space.most_pruned())
    near_floor = dataclasses.replace(ctx, limit=floor * BOX_SLACK).feasible_box()
    assert (overstated == near_floor).all() and (overstated < 4).any()


def test_random_reaches_a_budget_just_above_the_floor():
    # 12 slots at 0.24 of dense, where the most pruned policy costs 0.2: none of 20,000 uniform
    # draws of the whole space is feasible, but about one in 1,250 draws of the feasible box is.
    problem = ToyProblem.make(n_slots=12, seed=0, budget=0.24)
    searcher = make_searcher("random")
    searcher.setup(problem.context())
    policies = searcher.ask(2)
    assert len(policies) == 2 and all(problem.cost(p) <= problem.budget for p in policies)


def _overstated(problem: ToyProblem, seed: int = 0):
    """A context whose estimate puts every policy over budget (as a latency table can near the floor)."""
    return dataclasses.replace(problem.context(seed), estimate=lambda p: 10.0 * problem.cost(p),
                               cost_of=lambda p: 10.0 * problem.cost(p))


def test_a_sweep_measures_its_most_pruned_candidate_when_none_looks_feasible():
    problem = ToyProblem.make(seed=2, budget=0.55)
    searcher = make_searcher("uniform")
    searcher.setup(_overstated(problem))
    (policy,) = searcher.ask(1)
    top = max(c for v in problem.space().variables for c in v.choices)
    assert policy.mean_ratio() == pytest.approx(top)
    assert problem.cost(policy) <= problem.budget  # the estimate was wrong: it would be scored
    searcher.tell(Trial(0, policy, COMPLETE, {"val_accuracy": 0.5, "macs": problem.cost(policy)}, constraint=-0.1))
    assert searcher.ask(1) == []


def test_random_proposes_its_cheapest_looking_draws_when_none_looks_feasible():
    problem = ToyProblem.make(seed=2, budget=0.55)
    searcher = make_searcher("random")
    searcher.setup(_overstated(problem))
    (policy,) = searcher.ask(1)
    rng = np.random.default_rng(0)
    costs = sorted(problem.cost(problem.space().sample(rng)) for _ in range(200))
    assert problem.cost(policy) <= costs[2]  # among the cheapest 1.5% of draws, not any draw


def test_unknown_searcher():
    from autoprune.errors import UserError

    with pytest.raises(UserError, match="unknown searcher"):
        make_searcher("simulated-annealing")


def test_random_draws_near_the_budget():
    """`random` is a fair baseline: its draws sit in the band just under the budget, not anywhere
    under it (a third of the budget unused flatters every searcher)."""
    problem = ToyProblem.make(seed=0, budget=0.5)
    trials = run_toy(make_searcher("random"), problem, 10)
    costs = [problem.cost(t.policy) / problem.budget for t in trials]
    assert all(0.9 <= c <= 1.0 for c in costs), costs


def test_uniform_lands_close_under_a_macs_budget_on_resnet20():
    """One ratio everywhere, widths in steps of 4: 0.52 or 0.34 of dense MACs, nothing between. The
    per-slot rounding of one kept-width fraction lands within a few percent under 0.5."""
    import torch

    from autoprune.costs.analytic import count_macs_params
    from autoprune.models import build_model
    from autoprune.prune import apply_policy
    from autoprune.rules import load_rules
    from autoprune.searchers._base import SearchContext
    from autoprune.space import SearchSpace

    model = build_model("resnet20", num_classes=10, in_channels=3).eval()
    x = torch.zeros(1, 3, 32, 32)
    space = SearchSpace.from_model(model, x, load_rules("cifar_resnet"))
    dense_macs = count_macs_params(model, (3, 32, 32))[0]

    def macs(policy):
        return count_macs_params(apply_policy(model, space, policy, x)[0], (3, 32, 32))[0]

    ctx = SearchContext(space=space, target="macs", metric="macs", limit=0.5 * dense_macs, dense_cost=dense_macs,
                        seed=0, cost_of=macs, estimate=macs, model=model, example_inputs=x)
    searcher = make_searcher("uniform")
    searcher.setup(ctx)
    (first,) = searcher.ask(1)
    assert 0.46 <= macs(first) / dense_macs <= 0.5
    old = [space.uniform(r) for r in sorted({c for v in space.variables for c in v.choices})]
    assert max(macs(p) / dense_macs for p in old if macs(p) <= ctx.limit) < 0.4  # what one ratio reached


@pytest.mark.parametrize("seed", range(3))
def test_fill_brings_a_policy_to_the_budget_and_no_further(seed):
    """Filled: within the limit, no variable more pruned than before, and no single step less
    pruned still fits; the same generator seed fills the same way; no estimate, no change."""
    problem = ToyProblem.make(seed=seed, budget=0.5)
    ctx = problem.context(seed)
    space = ctx.space
    policy = space.most_pruned()
    filled = ctx.fill(policy, np.random.default_rng(seed))
    assert ctx.estimate(filled) <= ctx.limit < ctx.estimate(space.dense())
    before, after = space.variable_values(policy), space.variable_values(filled)
    assert all(after[v.name] <= before[v.name] for v in space.variables) and after != before
    for var in space.variables:
        index = var.choices.index(after[var.name])
        if index > 0:
            assert ctx.estimate(space.policy({**after, var.name: var.choices[index - 1]})) > ctx.limit
    assert ctx.fill(policy, np.random.default_rng(seed)) == filled
    assert dataclasses.replace(ctx, estimate=None).fill(policy, np.random.default_rng(seed)) == policy
