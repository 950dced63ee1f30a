"""A toy pruning problem with closed-form accuracy and cost, and a known optimum.

Searchers are tested on it in milliseconds: accuracy falls with each slot's ratio at a slot-specific
rate (``1 - sum_i w_i * r_i**2``); cost is each slot's kept share weighted by ``c_i``. The optimum
under a budget is found by exhaustive enumeration (small spaces) so tests know the answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoprune.searchers import SearchContext, Searcher
from autoprune.space import Policy, SearchSpace, Slot
from autoprune.study import COMPLETE, REJECTED, Trial


@dataclass(frozen=True)
class ToyProblem:
    """``n_slots`` slots with ratio choices; ``budget`` is a fraction of the dense cost."""

    weights: tuple[float, ...]
    costs: tuple[float, ...]
    choices: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    budget: float = 0.5

    @classmethod
    def make(cls, n_slots: int = 6, seed: int = 0, budget: float = 0.5) -> ToyProblem:
        rng = np.random.default_rng(seed)
        return cls(tuple(rng.uniform(0.02, 0.3, n_slots).round(4)), tuple(rng.uniform(1, 10, n_slots).round(3)), budget=budget)

    def space(self) -> SearchSpace:
        slots = [Slot(f"slot{i}", 64, self.choices) for i in range(len(self.weights))]
        return SearchSpace(slots, fingerprint="toy")

    def accuracy(self, policy: Policy) -> float:
        r = [policy[f"slot{i}"] for i in range(len(self.weights))]
        return 1.0 - float(sum(w * x * x for w, x in zip(self.weights, r, strict=True)))

    def cost(self, policy: Policy) -> float:
        r = [policy[f"slot{i}"] for i in range(len(self.weights))]
        return float(sum(c * (1 - x) for c, x in zip(self.costs, r, strict=True)) / sum(self.costs))

    def context(self, seed: int = 0, *, front: bool = False) -> SearchContext:
        """The searcher's view; with ``front``, an ``--objectives accuracy,macs`` search bounded
        by the budget (a budget of 1.0: no bound)."""
        return SearchContext(
            space=self.space(), target="macs", metric="macs", limit=self.budget, dense_cost=1.0, seed=seed,
            cost_of=self.cost, estimate=self.cost, objectives=("macs",) if front else (), dense_costs={"macs": 1.0},
        )

    def true_front(self) -> list[tuple[float, float]]:
        """(accuracy, cost) of every policy no other beats on both, within the budget, by enumeration."""
        space = self.space()
        points = set()
        for values in itertools.product(self.choices, repeat=len(self.weights)):
            p = space.policy({f"slot{i}": v for i, v in enumerate(values)})
            if self.cost(p) <= self.budget:
                points.add((round(self.accuracy(p), 12), round(self.cost(p), 12)))
        ordered = sorted(points, key=lambda ac: (ac[1], -ac[0]))
        front, best = [], -np.inf
        for acc, cost in ordered:  # cheapest first: a point is on the front if it beats every cheaper one
            if acc > best:
                front.append((acc, cost))
                best = acc
        return front

    def optimum(self) -> tuple[float, Policy]:
        """Best feasible accuracy and its policy, by enumeration."""
        space = self.space()
        best: tuple[float, Policy] | None = None
        for values in itertools.product(self.choices, repeat=len(self.weights)):
            p = space.policy({f"slot{i}": v for i, v in enumerate(values)})
            if self.cost(p) <= self.budget and (best is None or self.accuracy(p) > best[0]):
                best = (self.accuracy(p), p)
        assert best is not None
        return best


def run_toy(
    searcher: Searcher, problem: ToyProblem, trials: int, *, seed: int = 0, batch: int = 1, probes: bool = False,
    front: bool = False, until: Callable[[Trial], bool] | None = None,
) -> list[Trial]:
    """Drive ``searcher`` on the toy problem like the runner does; returns every trial in order.

    With ``probes``, a searcher's probes (``is_probe``, where it has a ``probe_fidelity``) are
    scored as the runner scores them: outside the budget, at that fidelity, and not counted
    against ``trials``. Without, every proposal is a trial like any other. With ``until``, the run
    stops after the first trial it holds true for (the optimum reached).
    """
    searcher.setup(problem.context(seed, front=front))
    out: list[Trial] = []
    scored = proposals = 0
    while scored < trials and proposals < 20 * trials:
        policies = searcher.ask(min(batch, trials - scored))
        if not policies:
            break
        for policy in policies:
            proposals += 1
            cost = problem.cost(policy)
            if probes and searcher.probe_fidelity is not None and searcher.is_probe(policy):
                metrics = {"val_accuracy": problem.accuracy(policy), "macs": cost}
                trial = Trial(len(out), policy, COMPLETE, metrics, seed, searcher.name, searcher.probe_fidelity)
                out.append(trial)
                searcher.tell(trial)
                continue
            constraint = cost / problem.budget - 1.0
            if constraint > 0:
                trial = Trial(len(out), policy, REJECTED, {"macs": cost}, seed, searcher.name, "toy", constraint)
            else:
                metrics = {"val_accuracy": problem.accuracy(policy), "macs": cost}
                trial = Trial(len(out), policy, COMPLETE, metrics, seed, searcher.name, "toy", constraint)
                scored += 1
            out.append(trial)
            searcher.tell(trial)
            if until is not None and until(trial):
                return out
    return out


def best_feasible(trials: list[Trial]) -> float:
    return max((t.accuracy or 0.0 for t in trials if t.scored and t.feasible), default=0.0)
