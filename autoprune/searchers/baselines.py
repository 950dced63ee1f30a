"""Baselines every later searcher must beat: random, uniform and global ranking.

- ``random``: every variable drawn uniformly from its choices (duplicates skipped).
- ``uniform``: the same ratio everywhere, swept from the least pruning that meets the budget.
- ``global``: Torch-Pruning's global channel ranking (importance normalised within each group)
  at the global ratio that meets the budget, snapped to the space's choices, then swept upward.
"""

from __future__ import annotations

import copy

import torch

from autoprune.searchers._base import Searcher
from autoprune.space import Policy, find_classifier


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
    max_draws = 5_000

    def _ask(self, n: int) -> list[Policy]:
        return self.context.sample_within_budget(self.rng, n, self.is_new, self.max_draws)


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
    name = "uniform"

    def _candidates(self) -> list[Policy]:
        space = self.context.space
        ratios = sorted({c for v in space.variables for c in v.choices})
        return [space.uniform(r) for r in ratios]


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
