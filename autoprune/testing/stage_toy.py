"""A toy problem whose accuracy separates by stage, for EMO-PMS's divide and conquer.

Slots fall into stages (``Slot.stage``); the accuracy loss is a sum of per-stage terms, each
coupling the slots of its stage: ``loss_s = sum_i w_i r_i**2 + v_s * (mean_i r_i)**2``, so no
slot can be decided alone but each stage can. Cost is additive as in ``ToyProblem``. A stage's
closed-form loss is the toy's stage scorer (``stage_scorer``), what EMO-PMS's feature
reconstruction approximates on a real network; the optimum is found by enumerating the space.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoprune.searchers import SearchContext
from autoprune.space import Policy, SearchSpace, Slot
from autoprune.testing.toy import ToyProblem


@dataclass(frozen=True)
class StageToy(ToyProblem):
    """``ToyProblem`` with a stage index per slot and a coupling weight per stage."""

    stages: tuple[int, ...] = ()
    coupling: tuple[float, ...] = ()
    channels: int = 64  # few channels in steps of ``round_to`` make several ratios one width
    round_to: int = 1

    @classmethod
    def make_staged(cls, sizes: Sequence[int] = (3, 3, 2), seed: int = 0, budget: float = 0.5) -> StageToy:
        rng = np.random.default_rng(seed)
        n = int(sum(sizes))
        return cls(
            weights=tuple(rng.uniform(0.02, 0.3, n).round(4)), costs=tuple(rng.uniform(1, 10, n).round(3)),
            budget=budget, stages=tuple(s for s, size in enumerate(sizes) for _ in range(size)),
            coupling=tuple(rng.uniform(0.05, 0.4, len(sizes)).round(4)),
        )

    def space(self) -> SearchSpace:
        slots = [Slot(f"slot{i}", self.channels, self.choices, self.round_to, f"stage{s}")
                 for i, s in enumerate(self.stages)]
        return SearchSpace(slots, fingerprint="stage-toy")

    def _ratios(self, policy: Policy) -> np.ndarray:
        return np.array([policy[f"slot{i}"] for i in range(len(self.weights))])

    def stage_losses(self, ratios: np.ndarray) -> np.ndarray:
        """Per-stage loss of rows of ratios (shape ``(..., n_slots)`` -> ``(..., n_stages)``)."""
        stages = np.array(self.stages)
        out = []
        for s, v in enumerate(self.coupling):
            r = ratios[..., stages == s]
            w = np.array(self.weights)[stages == s]
            out.append((w * r * r).sum(-1) + v * r.mean(-1) ** 2)
        return np.stack(out, -1)

    def accuracy(self, policy: Policy) -> float:
        return 1.0 - float(self.stage_losses(self._ratios(policy)).sum())

    def stage_scorer(self, ctx: SearchContext, subnet, policies: Sequence[Policy]) -> list[float]:
        """The closed-form loss of ``subnet``'s stage(s) in each policy: EMO-PMS's pluggable scorer."""
        stage_names = {ctx.space.slot(name).stage for name in subnet.slots(ctx.space)}
        mine = [int(name.removeprefix("stage")) for name in sorted(stage_names)]
        return [float(self.stage_losses(self._ratios(p))[mine].sum()) for p in policies]

    def optimum(self) -> tuple[float, Policy]:
        """Best feasible accuracy and its policy, by enumerating every policy (vectorised)."""
        rows = np.array(list(itertools.product(self.choices, repeat=len(self.weights))))
        costs = np.array(self.costs)
        cost = (costs * (1 - rows)).sum(1) / costs.sum()
        accuracy = 1.0 - self.stage_losses(rows).sum(1)
        accuracy[cost > self.budget] = -np.inf
        best = int(np.argmax(accuracy))
        space = self.space()
        return float(accuracy[best]), space.policy({f"slot{i}": r for i, r in enumerate(rows[best])})
