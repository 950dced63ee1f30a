"""EMO-PMS's divide and merge steps: sub-networks of a space, their evolutionary sub-searches, and
the merge of their fronts into whole-network policies (``docs/emo-pms.md``).

- ``divide``: one sub-network per stage (``Slot.stage``), or runs of consecutive variables where
  the stages divide nothing (one stage, or one slot per stage).
- ``sub_search``: NSGA-II on one sub-network's genes (the others dense), objectives (feature
  error, cost share), scored by a pluggable stage scorer instead of trials.
- ``merge``: the K best whole-network combinations of the stages' points by summed impairment
  whose estimated cost is within the budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoprune.searchers._base import SearchContext
from autoprune.searchers._pymoo import integer_problem, make_algorithm, start, tell_population
from autoprune.space import Policy, SearchSpace


@dataclass(frozen=True)
class SubNetwork:
    """A set of consecutive variables searched together (a stage, or a run of slots)."""

    name: str
    variables: tuple[int, ...]  # indices into ``space.variables``

    def slots(self, space: SearchSpace) -> tuple[str, ...]:
        return tuple(s for i in self.variables for s in space.variables[i].slots)

    def policy(self, space: SearchSpace, genes: Sequence[int]) -> Policy:
        """The whole-network policy with this sub-network at ``genes`` and every other slot dense."""
        return space.policy({space.variables[i].name: space.variables[i].choices[int(g)]
                             for i, g in zip(self.variables, genes, strict=True)})


@dataclass(frozen=True)
class StageScore:
    """A scorer's verdict on one sub-network candidate: ``feature``, the sub-search's objective
    (how badly the pruned stage reproduces the dense features), and ``impairment``, what the merge
    adds up across stages (the network-level damage); equal where a scorer has only one."""

    feature: float
    impairment: float

    @classmethod
    def of(cls, value: Any) -> StageScore:
        if isinstance(value, StageScore):
            return value
        return cls(float(value), float(value))


# (ctx, sub-network, candidate policies) -> one score (a StageScore or a float) per policy.
StageScorer = Callable[[SearchContext, SubNetwork, Sequence[Policy]], Sequence[Any]]


def divide(space: SearchSpace, run: int) -> list[SubNetwork]:
    """Sub-networks: the stages of the space's variables, in order; where that divides nothing
    (a single stage, or each stage a single slot under ``--granularity slot``), runs of ``run``
    consecutive variables of near-equal length."""
    stages: dict[str, list[int]] = {}
    for i, var in enumerate(space.variables):
        stages.setdefault(space.slot(var.slots[0]).stage, []).append(i)
    n = len(space.variables)
    flat = len(stages) == 1 or (space.rules.granularity == "slot" and len(stages) == n)
    if not flat or n <= run:
        return [SubNetwork(name, tuple(members)) for name, members in stages.items()]
    parts = np.array_split(np.arange(n), math.ceil(n / run))
    return [SubNetwork(f"{space.variables[p[0]].name}..{space.variables[p[-1]].name}", tuple(int(i) for i in p))
            for p in parts]


@dataclass
class Archive:
    """Every candidate a sub-search scored: genes -> (score, cost share of dense), one genes per
    distinct set of kept widths (``alias`` maps the others, e.g. ratios 0.0 and 0.1 of 16 channels
    kept in steps of 4, to it: the same network, scored and merged once)."""

    subnet: SubNetwork
    points: dict[tuple[int, ...], tuple[StageScore, float]] = field(default_factory=dict)
    alias: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)
    generations: int = 0

    def widths(self, space: SearchSpace, genes: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(space.slot(name).kept(space.variables[i].choices[g])
                     for i, g in zip(self.subnet.variables, genes, strict=True) for name in space.variables[i].slots)


def corners_and_random() -> Any:
    """pymoo sampling for a first population: the least and the most pruned corner of the box,
    then uniform integer draws from the random state pymoo hands the operator."""
    from pymoo.core.sampling import Sampling

    class CornersAndRandom(Sampling):
        def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
            xl, xu = (b.astype(int) for b in problem.bounds())
            draws = random_state.integers(xl, xu + 1, size=(n_samples, problem.n_var))
            return np.vstack([xl, xu, draws])[:n_samples].astype(float)

    return CornersAndRandom()


def sub_search(ctx: SearchContext, subnet: SubNetwork, scorer: StageScorer, *, lower: np.ndarray,
               pop_size: int, generations: int, seed: int) -> Archive:
    """NSGA-II over ``subnet``'s genes from ``lower`` up (the feasible box), minimising (feature
    error, cost share); a sub-network with at most two populations' worth of candidates is
    enumerated instead (its exact front, as cheaply)."""
    space = ctx.space
    upper = space.upper_bounds()[list(subnet.variables)]
    lower = np.minimum(np.asarray(lower, dtype=int), upper)
    archive = Archive(subnet)
    size = int(np.prod(upper - lower + 1))

    canonical: dict[tuple[int, ...], tuple[int, ...]] = {}  # kept widths -> the genes scored for them

    def score(rows: np.ndarray) -> np.ndarray:
        genes = [tuple(int(g) for g in row) for row in np.asarray(rows).round().astype(int)]
        new = []
        for g in genes:
            if g not in archive.points and g not in archive.alias:
                first = canonical.setdefault(archive.widths(space, g), g)
                if first == g:
                    new.append(g)
                else:
                    archive.alias[g] = first
        new = list(dict.fromkeys(new))
        policies = [subnet.policy(space, g) for g in new]
        for g, p, s in zip(new, policies, scorer(ctx, subnet, policies), strict=True):
            archive.points[g] = (StageScore.of(s), cost_share(ctx, p))
        found = [archive.points[archive.alias.get(g, g)] for g in genes]
        return np.array([[verdict.feature, cost] for verdict, cost in found])

    if size <= 2 * pop_size:
        score(np.array(list(itertools.product(*(range(lo, hi + 1) for lo, hi in zip(lower, upper, strict=True))))))
        return archive
    algorithm = make_algorithm("nsga2", pop_size, 2, corners_and_random())
    start(algorithm, integer_problem(lower, upper, 2), seed)
    for _ in range(generations):
        pop = algorithm.ask()
        if len(pop) == 0:  # pymoo found no new child
            break
        tell_population(algorithm, pop, score(pop.get("X")))
        archive.generations += 1
    return archive


def cost_share(ctx: SearchContext, policy: Policy) -> float:
    """The policy's cost as a fraction of dense: the cheap estimate, or a measurement without one."""
    estimate = ctx.estimate(policy) if ctx.estimate is not None else None
    return float(estimate if estimate is not None else ctx.cost_of(policy)) / ctx.dense_cost


@dataclass(frozen=True)
class Merged:
    """One whole-network candidate: its policy, summed stage impairment and estimated cost share."""

    policy: Policy
    impairment: float
    cost: float


def _fewer_than_k_dominators(points: list[tuple[float, float, Any]], k: int) -> list[tuple[float, float, Any]]:
    """The points (impairment, cost, payload) that fewer than ``k`` others weakly dominate, sorted
    by impairment: a combination holding any other part has ``k`` better and cheaper ones."""
    points = sorted(points, key=lambda p: (p[0], p[1]))
    smallest: list[float] = []  # max-heap (negated) of the k smallest costs seen so far
    kept = []
    for point in points:
        if len(smallest) < k or point[1] < -smallest[0]:
            kept.append(point)
        heapq.heappush(smallest, -point[1])
        if len(smallest) > k:
            heapq.heappop(smallest)
    return kept


def _combinations(archives: Sequence[Archive], k: int) -> list[tuple[float, float, tuple]]:
    """(summed impairment, summed cost saving - 1 per part, parts) of the combinations of one point
    per sub-network that fewer than ``k`` others dominate, least impaired first."""
    combos: list[tuple[float, float, tuple]] = [(0.0, 0.0, ())]
    for archive in archives:
        points = [(s.impairment, cost - 1.0, (archive.subnet, genes)) for genes, (s, cost) in archive.points.items()]
        points = _fewer_than_k_dominators(points, k)
        combos = _fewer_than_k_dominators(
            [(a + b, ca + cb, parts + (part,)) for (a, ca, parts), (b, cb, part) in itertools.product(combos, points)], k)
    return combos


def _policy(space, parts: tuple) -> Policy:
    values: dict[str, float] = {}
    for subnet, genes in parts:
        for i, g in zip(subnet.variables, genes, strict=True):
            values[space.variables[i].name] = space.variables[i].choices[g]
    return space.policy(values)


def merge(ctx: SearchContext, archives: Sequence[Archive], k: int) -> list[Merged]:
    """The ``k`` combinations of one point per sub-network with the least summed impairment whose
    estimated cost is within the budget, in that order: the global performance-impairment ranking.

    Costs combine additively while merging (dense minus each stage's saving), which keeps exactly
    the k best combinations whenever costs are additive; the final verdict on each combination is
    the estimate of its whole policy, since savings at stage boundaries are not additive."""
    out: list[Merged] = []
    for impairment, _, parts in _combinations(archives, k):
        policy = _policy(ctx.space, parts)
        cost = cost_share(ctx, policy)
        if cost * ctx.dense_cost <= ctx.limit:
            out.append(Merged(policy, impairment, cost))
        if len(out) == k:
            break
    return out


def merge_front(ctx: SearchContext, archives: Sequence[Archive], k: int) -> list[Merged]:
    """For a front (``--objectives``): ``k`` combinations spread along the merged front of summed
    impairment against estimated cost, within the bound, cheapest first. The least impaired
    combinations (what ``merge`` keeps) are all nearly dense; a front needs every cost level."""
    combos = _combinations(archives, 4 * k)
    scored = []
    for impairment, _, parts in combos:
        policy = _policy(ctx.space, parts)
        cost = cost_share(ctx, policy)
        if cost * ctx.dense_cost <= ctx.limit:
            scored.append(Merged(policy, impairment, cost))
    scored.sort(key=lambda m: (m.cost, m.impairment))
    front: list[Merged] = []
    for m in scored:  # cheapest first: on the front if less impaired than every cheaper one
        if not front or m.impairment < front[-1].impairment:
            front.append(m)
    if len(front) <= k:
        return front
    picks = sorted({round(i) for i in np.linspace(0, len(front) - 1, k)})
    return [front[i] for i in picks]
