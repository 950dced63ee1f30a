"""The Searcher interface: searchers only propose (ask) and learn (tell); the runner owns the loop.

Lifecycle, all calls from the runner in the main process:
1. ``setup(ctx)`` once, with the space, the budget and cost oracles (``SearchContext``).
2. ``tell(trial)`` for every trial already in the ledger (resume, warm start from any searcher).
3. ``ask(n)`` for up to ``n`` policies (``n`` free workers) and ``tell`` each finished trial, in
   the order asked; with several workers the runner asks again while earlier trials are still out
   (as soon as a worker is free; ``runner.lag`` says which trials are told by then). ``ask`` returns ``[]`` when it has nothing to
   propose: while trials are out that means "wait for their results" (a generation or a scan that
   must be complete first); with none out, that the searcher is exhausted.

Searchers that own their control loop (stable-baselines3's ``learn()``) adapt to this by
proposing from an inner loop; see ``docs/searchers.md``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from autoprune.space import Policy, SearchSpace
from autoprune.study import COMPLETE, REJECTED, Trial

# How far above the most pruned policy's estimate the feasible box reaches while the estimate
# puts every policy over budget (see ``SearchContext.feasible_box``).
BOX_SLACK = 1.2
# The band under the budget where proposals should land: ``random`` draws in it first, and the
# Optuna and evolutionary searchers fill a proposal estimated below it (``SearchContext.fill``).
# EagleEye samples within 0.5% of its target; our widths come in steps of 4 channels, so the band
# is wider. A proposal far under the budget spends a trial where no good policy lies.
NEAR_BUDGET = 0.9


@dataclass(frozen=True)
class SearchContext:
    """What a searcher may know about the problem.

    Attributes:
        space: the search space.
        target: the constrained metric's target name (``latency``, ``macs``, ``params``).
        metric: its metric key (``latency_ms``, ``macs``, ``params``).
        limit: the absolute budget on ``metric``.
        dense_cost: the dense model's value of ``metric``.
        seed: the search seed; searchers draw all randomness from it.
        cost_of: builds the slimmed model of a policy and measures ``metric`` (about a second).
        estimate: a cheap prediction of ``metric`` from the policy alone, or None if none exists.
        model: the dense model (read-only: searchers copy before changing it).
        example_inputs: a batch of one input, for tracing.
        run_dir: the run directory, where a searcher may keep state to resume from (an RL agent).
        trials: the run's budget of scored trials, for searchers that schedule by it.
        objectives: the cost metrics traded against accuracy in an ``--objectives`` search
            (``("latency_ms",)``); empty when the search is for one policy under the budget.
        dense_costs: the dense model's value of every cost metric.
        calibration: ``n`` -> up to ``n`` normalised training images (a fixed, seeded subset),
            for searchers that look at features (EMO-PMS's per-stage reconstruction); None on
            problems without data (the toy).
    """

    space: SearchSpace
    target: str
    metric: str
    limit: float
    dense_cost: float
    seed: int
    cost_of: Callable[[Policy], float]
    estimate: Callable[[Policy], float | None] | None = None
    model: nn.Module | None = None
    example_inputs: torch.Tensor | None = None
    run_dir: Path | None = None
    trials: int | None = None
    calibration: Callable[[int], torch.Tensor] | None = None
    objectives: tuple[str, ...] = ()
    dense_costs: Mapping[str, float] | None = None

    def cost_fractions(self, trial: Trial) -> list[float] | None:
        """The trial's value of each cost objective as a fraction of dense (``--objectives``
        searches), or None where one was not measured (a trial that failed)."""
        dense = self.dense_costs or {self.metric: self.dense_cost}
        values = [trial.metrics.get(metric) for metric in self.objectives]
        if any(v is None for v in values):
            return None
        return [float(v) / float(dense[m]) for v, m in zip(values, self.objectives, strict=True)]

    def feasible(self, policy: Policy) -> bool:
        """Is the measured cost within budget (builds the model)?"""
        return self.cost_of(policy) <= self.limit

    def feasible_box(self) -> np.ndarray | None:
        """Per variable, the index of the least pruning any estimated-feasible policy can have.

        Costs fall as any ratio grows, so a variable below its bound is over budget whatever the
        others are: drawing each variable uniformly above its bound and screening the draws is
        still uniform over the estimated-feasible policies, but at a tight budget it hits them
        thousands of times more often (at 0.3 of dense latency on ResNet-20, not one of 20,000
        draws of the whole space was within budget). An estimate with a safety margin
        (``TrackedEstimate``) is read without it here, so a strict screen does not shrink the box.
        When even the most pruned policy is estimated over budget, the estimate is off by a scale
        it has yet to learn: the box is then the policies estimated within ``BOX_SLACK`` of the most
        pruned one, which are the ones worth measuring to learn it. None without an estimate.
        """
        if self.estimate is None:
            return None
        estimate_of = getattr(self.estimate, "loose", self.estimate)
        space = self.space
        floor = space.variable_values(space.most_pruned())
        cheapest = estimate_of(space.most_pruned())
        if cheapest is None:
            return None
        threshold = self.limit if cheapest <= self.limit else cheapest * BOX_SLACK
        bounds = []
        for var in space.variables:
            index = len(var.choices) - 1
            while index > 0:
                estimate = estimate_of(space.policy({**floor, var.name: var.choices[index - 1]}))
                if estimate is None or estimate > threshold:
                    break
                index -= 1
            bounds.append(index)
        return np.array(bounds, dtype=int)

    def sample_within_budget(
        self, rng: np.random.Generator, n: int, wanted: Callable[[Policy], bool], draws: int,
        near: float = 0.0,
    ) -> list[Policy]:
        """Up to ``n`` distinct ``wanted`` draws from the feasible box that the estimate puts
        within budget; when none of ``draws`` draws is, the ``n`` cheapest-looking ones, so that
        their measurements teach a tracking estimate (``TrackedEstimate``) its error.

        With ``near > 0`` a draw is taken at once only if its estimate is at least ``near`` of
        the limit (EagleEye samples within a band under its target); when too few draws land in
        the band, the within-budget draws estimated closest to the limit fill the rest."""
        out: list[Policy] = []
        under: list[tuple[float, Policy]] = []
        fallback: list[tuple[float, Policy]] = []
        box = self.feasible_box()
        for _ in range(draws):
            if len(out) == n:
                break
            policy = self.space.sample(rng, box)
            if policy in out or not wanted(policy):
                continue
            estimate = self.estimate(policy) if self.estimate is not None else None
            if estimate is None or near * self.limit <= estimate <= self.limit:
                out.append(policy)
            elif estimate <= self.limit:
                if all(policy != p for _, p in under):
                    under = sorted([*under, (estimate, policy)], key=lambda item: -item[0])[:n]
            elif all(policy != p for _, p in fallback):
                fallback = sorted([*fallback, (estimate, policy)], key=lambda item: item[0])[:n]
        out += [p for _, p in under][: n - len(out)]
        return out or [p for _, p in fallback]

    def fill(self, policy: Policy, rng: np.random.Generator, below: float | None = None) -> Policy:
        """``policy`` made less pruned until the estimate is at the budget: each pass visits the
        variables in a seeded random order and steps each one choice less pruned where the
        estimate stays within the limit, until no step fits. Accuracy rises as pruning falls, so
        the best policies lie at the budget, and a proposal far under it spends a trial where none
        of them lies. ``policy`` itself without an estimate, or when ``below`` is given and the
        estimate is at least that fraction of the limit (``NEAR_BUDGET`` for the searchers)."""
        if self.estimate is None:
            return policy
        if below is not None:
            estimate = self.estimate(policy)
            if estimate is None or estimate >= below * self.limit:
                return policy
        space = self.space
        values = space.variable_values(policy)
        index = {v.name: v.choices.index(values[v.name]) for v in space.variables if values[v.name] in v.choices}
        moved = True
        while moved:
            moved = False
            for k in rng.permutation(len(space.variables)):
                var = space.variables[int(k)]
                if index.get(var.name, 0) == 0:
                    continue
                lighter = {**values, var.name: var.choices[index[var.name] - 1]}
                estimate = self.estimate(space.policy(lighter))
                if estimate is not None and estimate <= self.limit:
                    values, index[var.name], moved = lighter, index[var.name] - 1, True
        return space.policy(values)


def policy_key(policy: Policy) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, round(v, 6)) for k, v in policy.items))


class Searcher(abc.ABC):
    """Base class of every search family; subclasses implement ``_setup``, ``_ask`` and ``_tell``."""

    name: ClassVar[str] = ""
    # Whether it can search a front of several objectives (``--objectives``, ``ctx.objectives``).
    multi_objective: ClassVar[bool] = False
    # Fidelity of probes (``is_probe``), e.g. ``bn``; None scores them like every other trial.
    probe_fidelity: str | None = None

    def __init__(self) -> None:
        self.ctx: SearchContext | None = None
        self.rng = np.random.default_rng(0)
        self.told: list[Trial] = []
        self._seen: set[tuple[tuple[str, float], ...]] = set()

    @property
    def context(self) -> SearchContext:
        if self.ctx is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must be called before ask/tell")
        return self.ctx

    def setup(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.rng = np.random.default_rng(ctx.seed)
        self._setup()

    def ask(self, n: int = 1) -> list[Policy]:
        """Up to ``n`` new policies; ``[]`` when there is nothing to propose before the trials out
        are told (or, with none out, nothing more at all)."""
        policies = self._ask(n)
        for p in policies:
            self._seen.add(policy_key(p))
        return policies

    def tell(self, trial: Trial) -> None:
        """Learn from one finished trial (also called to replay the ledger on resume)."""
        self.told.append(trial)
        self._seen.add(policy_key(trial.policy))
        self._observe_cost(trial)
        self._tell(trial)

    def _observe_cost(self, trial: Trial) -> None:
        """Let an estimate that tracks measurements (``TrackedEstimate``) see this trial's cost."""
        ctx = self.context
        observe = getattr(ctx.estimate, "observe", None)
        measured = trial.metrics.get(ctx.metric)
        if observe is not None and measured and trial.state in (COMPLETE, REJECTED):
            observe(trial.policy, float(measured))

    def is_probe(self, policy: Policy) -> bool:
        """True for a measurement the searcher needs scored even over budget (a sensitivity scan).

        The runner scores probes without a budget constraint, so they are never picked as the
        result; ordinary proposals over budget are rejected before training.
        """
        return False

    def trial_attrs(self, policy: Policy) -> dict[str, Any]:
        """Extra user attributes the ledger records with a proposal (a portfolio's member)."""
        return {}

    def is_new(self, policy: Policy) -> bool:
        return policy_key(policy) not in self._seen

    def _setup(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Hook: prepare after the context is known."""

    @abc.abstractmethod
    def _ask(self, n: int) -> list[Policy]: ...

    def _tell(self, trial: Trial) -> None:  # noqa: B027 - baselines ignore results
        """Hook: learn from a trial (baselines ignore results)."""
