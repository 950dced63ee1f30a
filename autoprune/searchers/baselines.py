"""Baselines every later searcher must beat: random, uniform and global ranking.

- ``random``: every variable drawn uniformly from its choices (duplicates skipped), kept only
  when its estimated cost lies in the band just under the budget.
- ``uniform``: the same width fraction everywhere, rounded per slot to the nearest width the
  slot can take, swept finely from the least pruning that meets the budget.
- ``global``: Torch-Pruning's global channel ranking (importance normalised within each group)
  at the global ratio that meets the budget, snapped to the space's choices, then swept upward.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from autoprune.searchers._base import NEAR_BUDGET, Searcher
from autoprune.space import Policy, find_classifier
from autoprune.study import COMPLETE, REJECTED, Trial


class RandomSearcher(Searcher):
    """Uniform sampling of the space, filtered by the budget as in EagleEye.

    Where the context has a cheap cost estimate (analytic counts, the latency lookup table), draws
    the estimate puts over budget are discarded before they become trials, so random search is
    uniform over the (estimated) feasible policies; draws come from the box of choices that can
    be feasible at all (``SearchContext.feasible_box``), which does not change that distribution
    but keeps tight budgets within reach. Without one, every draw is proposed and the
    runner rejects those over budget after measuring them. When no draw looks feasible, the draws
    the estimate puts cheapest are proposed: an estimate that over-states costs near the floor
    then learns from their measurements (``TrackedEstimate``) instead of never seeing one.
    """

    name = "random"
    multi_objective = True  # with --objectives, uniform over the space under the budget (no band)
    max_draws = 5_000
    # Draws estimated under this fraction of the limit wait until the band runs dry: a baseline
    # that spends a third of the budget on nothing flatters every searcher.
    near = NEAR_BUDGET

    def _setup(self) -> None:
        self._rejected = self._scored = 0

    def _tell(self, trial: Trial) -> None:
        self._rejected += trial.state == REJECTED
        self._scored += trial.state == COMPLETE

    def _ask(self, n: int) -> list[Policy]:
        # An estimate that reads low (an untracked, stale table) puts the whole band over budget:
        # once measurements reject more draws than they score, draw anywhere under the budget.
        near = self.near if self._rejected <= self._scored + 2 and not self.context.objectives else 0.0
        return self.context.sample_within_budget(self.rng, n, self.is_new, self.max_draws, near=near)


class _SweepSearcher(Searcher):
    """Proposes a fixed list of policies, ordered least-pruned first, from the cheapest feasible one.

    When not even the most pruned candidate looks feasible (a latency estimate that over-states
    costs near the floor), that candidate is proposed alone: the runner measures it, and it is
    scored if the estimate was wrong.
    """

    def _setup(self) -> None:
        self._queue: list[Policy] | None = None

    def _candidates(self) -> list[Policy]:
        raise NotImplementedError

    def _ask(self, n: int) -> list[Policy]:
        if self._queue is None:
            candidates = _dedupe(self._candidates())
            start = _first_feasible(candidates, self.context.feasible)
            self._queue = candidates[start:] if start is not None else candidates[-1:]
        out = []
        while self._queue and len(out) < n:
            policy = self._queue.pop(0)
            if self.is_new(policy):
                out.append(policy)
        return out


class UniformSearcher(_SweepSearcher):
    """The same kept-width fraction ``1 - t`` in every slot, ``t`` swept in steps of ``step``.

    Each variable takes the choice whose kept widths come nearest ``channels * (1 - t)`` (per-slot
    rounding): with widths in steps of 4 channels, one ratio everywhere jumps from 0.52 to 0.34 of
    dense MACs on ResNet-20, while slots of different widths round at different ``t``, so the fine
    sweep lands close under the budget. Every policy it proposes is still on the space's choices.
    """

    name = "uniform"

    def _candidates(self) -> list[Policy]:
        return uniform_sweep(self.context.space)


UNIFORM_STEP = 0.0025


def uniform_sweep(space, step: float = UNIFORM_STEP) -> list[Policy]:
    """``uniform``'s candidates, least pruned first: kept fraction ``1 - t`` everywhere, per-slot
    rounding, ``t`` in steps of ``step`` (duplicates removed)."""
    top = max(c for v in space.variables for c in v.choices)
    return _dedupe([_uniform_at(space, t) for t in np.arange(0.0, top + step / 2, step)])


def _uniform_at(space, t: float) -> Policy:
    def miss(var, choice: float) -> float:
        slots = [space.slot(name) for name in var.slots]
        return sum(abs(s.kept(choice) - s.channels * (1.0 - t)) / s.channels for s in slots)

    # Ties go to the less pruned choice, so the sweep stays monotone in cost.
    return space.policy({v.name: min(v.choices, key=lambda c, v=v: (miss(v, c), c)) for v in space.variables})


def uniform_start(context) -> Policy | None:
    """The policy ``uniform`` would try first: its least pruned one within the budget by the
    cheap estimate (measured where there is none). Where the model-based Optuna samplers
    (``tpe``, ``gp``, ``cmaes``) begin, so that a search starts from the baseline it must beat; None
    without a finite budget or when no uniform policy looks feasible."""
    if not math.isfinite(context.limit):
        return None
    if context.estimate is not None:
        def within(policy: Policy) -> bool:
            estimate = context.estimate(policy)
            return estimate is not None and estimate <= context.limit
    else:
        within = context.feasible
    candidates = uniform_sweep(context.space)
    start = _first_feasible(candidates, within)
    return None if start is None else candidates[start]


class GlobalSearcher(_SweepSearcher):
    """Global ranking at a sweep of global ratios; each result snapped to the space's choices."""

    name = "global"
    sweep = 40

    def _candidates(self) -> list[Policy]:
        ctx = self.context
        if ctx.model is None or ctx.example_inputs is None:
            raise RuntimeError("the global searcher needs the dense model in its context")
        top = max(c for v in ctx.space.variables for c in v.choices)
        return [self._global_policy(top * i / self.sweep) for i in range(self.sweep + 1)]

    def _global_policy(self, ratio: float) -> Policy:
        import torch_pruning as tp

        ctx = self.context
        space = ctx.space
        assert ctx.model is not None and ctx.example_inputs is not None
        if ratio <= 0:
            return space.dense()
        model = copy.deepcopy(ctx.model).eval()
        modules = dict(model.named_modules())
        ignored = find_classifier(model, ctx.example_inputs) + [modules[n] for n in space.frozen]
        pruner = tp.pruner.BasePruner(
            model,
            ctx.example_inputs,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=ignored,
        )
        with torch.no_grad():
            pruner.step()
        values = {}
        for var in space.variables:
            kept = []
            for name in var.slots:
                m = modules[name]
                width = m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features
                kept.append(1.0 - width / space.slot(name).channels)
            mean = sum(kept) / len(kept)
            values[var.name] = min(var.choices, key=lambda c, r=mean: abs(c - r))
        return space.policy(values)


def _dedupe(policies: list[Policy]) -> list[Policy]:
    out: list[Policy] = []
    for p in policies:
        if p not in out:
            out.append(p)
    return out


def _first_feasible(candidates: list[Policy], feasible) -> int | None:
    """Index of the first feasible candidate, by bisection (cost falls as pruning grows)."""
    if not candidates or not feasible(candidates[-1]):
        return None
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo
