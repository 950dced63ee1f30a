"""The pruning episode the RL searchers (``amc``, ``purl``) learn on, built from the space and the
cost estimate alone (numpy only: stable-baselines3 lives in ``_rl_agent.py``).

One step per variable of the space, in network order. The state of a step is AMC's layer
embedding: static features of the variable's layers (index, kind, in and out channels, stride,
kernel size, weight count, and its share of the dense cost), min-max normalised across the steps,
then three features of the episode so far (cost removed / dense cost, prunable cost of the
variables still to decide / dense cost, the previous step's ratio). Any space gets a state: a
variable's geometry is read from its slots' root modules when the context has the dense model,
and its costs from the estimate, so residual-coupled groups and stage variables are steps like
any other.

An action is a keep ratio in ``[1 - max ratio, 1]`` (as a number in [-1, 1]), snapped to the
variable's nearest choice, then clipped into the feasible interval: the least pruning such that
the estimate still meets the budget when every later variable takes its most pruned choice. So
every episode the agent plays ends at a policy the estimate puts within budget (NNI's
``correct_action``; AMC's "action wall").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoprune.searchers._base import SearchContext
from autoprune.space import Policy

STATIC = ("index", "kind", "in_channels", "out_channels", "stride", "kernel", "params", "cost_share")
DYNAMIC = ("removed", "rest", "previous")
FEATURES = STATIC + DYNAMIC


def min_max(table: np.ndarray) -> np.ndarray:
    """Each column scaled to [0, 1] across rows; a constant column becomes 0."""
    low, high = table.min(axis=0), table.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (table - low) / span, 0.0)


def layer_table(ctx: SearchContext, cost: Callable[[Sequence[int]], float | None]) -> np.ndarray:
    """The raw static features of every variable (rows in network order, columns ``STATIC``)."""
    from torch import nn

    space = ctx.space
    modules = dict(ctx.model.named_modules()) if ctx.model is not None else {}
    dense_idx = [0] * len(space.variables)
    dense = cost(dense_idx)
    rows = []
    for i, var in enumerate(space.variables):
        roots = [modules.get(name) for name in var.slots]
        convs = [m for m in roots if isinstance(m, nn.Conv2d)]
        linears = [m for m in roots if isinstance(m, nn.Linear)]
        out_ch = float(sum(space.slot(name).channels for name in var.slots))
        in_ch = float(sum(m.in_channels for m in convs) + sum(m.in_features for m in linears)) or out_ch
        stride = float(max((m.stride[0] for m in convs), default=1))
        kernel = float(max((m.kernel_size[0] for m in convs), default=1))
        params = float(sum(m.weight.numel() for m in convs + linears)) or out_ch
        floor = cost([len(v.choices) - 1 if j == i else 0 for j, v in enumerate(space.variables)])
        share = (dense - floor) / dense if dense and floor is not None else 0.0
        kind = 1.0 if linears and not convs else 0.0
        rows.append([float(i), kind, in_ch, out_ch, stride, kernel, params, share])
    return np.array(rows, dtype=float)


@dataclass(frozen=True)
class Episode:
    """One played episode: the observation before each step (and after the last), the effective
    action of each step (in [-1, 1], after snapping and clipping) and the choice indices."""

    observations: np.ndarray  # (steps + 1, features)
    actions: np.ndarray  # (steps,)
    indices: tuple[int, ...]
    policy: Policy


class PruningMDP:
    """The AMC episode over ``ctx.space``: states, the action wall, and a policy's replay.

    Costs come from ``ctx.estimate`` (analytic MACs/params, or the latency lookup table), cached
    by choice indices until ``forget_costs`` (a tracking estimate changes as trials are measured).
    Without an estimate the cost features are 0 and actions are not clipped.
    """

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.space = ctx.space
        self.variables = ctx.space.variables
        self.steps = len(self.variables)
        self.top = [len(v.choices) - 1 for v in self.variables]
        self._costs: dict[tuple[int, ...], float | None] = {}
        self.static = min_max(layer_table(ctx, self.cost))

    # -- costs ------------------------------------------------------------------------------
    def policy(self, indices: Sequence[int]) -> Policy:
        return self.space.policy({v.name: v.choices[int(k)] for v, k in zip(self.variables, indices, strict=True)})

    def cost(self, indices: Sequence[int]) -> float | None:
        key = tuple(int(k) for k in indices)
        if key not in self._costs:
            estimate = self.ctx.estimate
            self._costs[key] = None if estimate is None else estimate(self.policy(key))
        return self._costs[key]

    def forget_costs(self) -> None:
        self._costs.clear()

    def fits(self, indices: Sequence[int]) -> bool:
        cost = self.cost(indices)
        return cost is None or cost <= self.ctx.limit

    # -- states and actions -----------------------------------------------------------------------
    def observation(self, decided: Sequence[int]) -> np.ndarray:
        """The state before step ``len(decided)`` (the last step's row again after the episode)."""
        t = len(decided)
        rest_dense = list(decided) + [0] * (self.steps - t)
        rest_floor = list(decided) + self.top[t:]
        dense, now, floor = self.cost([0] * self.steps), self.cost(rest_dense), self.cost(rest_floor)
        removed = rest = 0.0
        if dense and now is not None and floor is not None:
            removed, rest = (dense - now) / dense, (now - floor) / dense
        previous = 0.0
        if t:
            var = self.variables[t - 1]
            previous = var.choices[decided[-1]] / var.choices[-1] if var.choices[-1] > 0 else 0.0
        dynamic = np.clip([removed, rest, previous], 0.0, 1.0)
        return np.concatenate([self.static[min(t, self.steps - 1)], dynamic]).astype(np.float32)

    def lowest_index(self, decided: Sequence[int]) -> int:
        """The least pruning step ``len(decided)`` may take so the budget stays reachable by the
        estimate with every later variable at its most pruned choice (its top choice if none is)."""
        t = len(decided)
        lo, hi = 0, self.top[t]
        if not self.fits(list(decided) + [hi] + self.top[t + 1:]):
            return hi
        while lo < hi:  # costs fall as the ratio grows: bisect for the first that fits
            mid = (lo + hi) // 2
            if self.fits(list(decided) + [mid] + self.top[t + 1:]):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def keep_range(self, t: int) -> tuple[float, float]:
        var = self.variables[t]
        return 1.0 - var.choices[-1], 1.0 - var.choices[0]

    def to_action(self, t: int, index: int) -> float:
        low, high = self.keep_range(t)
        keep = 1.0 - self.variables[t].choices[index]
        return 1.0 if high <= low else float(2.0 * (keep - low) / (high - low) - 1.0)

    def act(self, decided: Sequence[int], action: float) -> int:
        """The choice index of action ``action`` at step ``len(decided)``: snapped, then clipped."""
        t = len(decided)
        low, high = self.keep_range(t)
        keep = low + (float(np.clip(action, -1.0, 1.0)) + 1.0) / 2.0 * (high - low)
        choices = self.variables[t].choices
        index = min(range(len(choices)), key=lambda k: (abs((1.0 - choices[k]) - keep), k))
        return max(index, self.lowest_index(decided))

    def play(self, choose: Callable[[int, np.ndarray], float]) -> Episode:
        """An episode whose step ``t`` takes ``choose(t, observation)`` (clipped by the wall)."""
        decided: list[int] = []
        observations, actions = [], []
        for t in range(self.steps):
            obs = self.observation(decided)
            index = self.act(decided, choose(t, obs))
            observations.append(obs)
            actions.append(self.to_action(t, index))
            decided.append(index)
        observations.append(self.observation(decided))
        return Episode(np.stack(observations), np.array(actions, dtype=np.float32), tuple(decided), self.policy(decided))

    def replay(self, indices: Sequence[int]) -> Episode:
        """The episode that ends at ``indices`` (a policy from the ledger or another searcher),
        unclipped, so the agent can learn from any policy that was scored."""
        observations = [self.observation(list(indices[:t])) for t in range(self.steps + 1)]
        actions = [self.to_action(t, int(k)) for t, k in enumerate(indices)]
        return Episode(np.stack(observations), np.array(actions, dtype=np.float32), tuple(int(k) for k in indices),
                       self.policy(indices))

    def fill(self, decided: Sequence[int]) -> list[int]:
        """``decided`` completed by one ratio for every undecided variable: the least pruning,
        shared by all of them (each snapped to its nearest choice), that the estimate puts within
        budget; their most pruned choices where none is."""
        t = len(decided)
        if t >= self.steps:
            return list(decided)
        ratios = sorted({c for v in self.variables[t:] for c in v.choices})

        def filled(r: float) -> list[int]:
            return list(decided) + [min(range(len(v.choices)), key=lambda k, v=v: (abs(v.choices[k] - r), k))
                                    for v in self.variables[t:]]

        lo, hi = 0, len(ratios) - 1
        if not self.fits(filled(ratios[hi])):
            return list(decided) + self.top[t:]
        while lo < hi:
            mid = (lo + hi) // 2
            if self.fits(filled(ratios[mid])):
                hi = mid
            else:
                lo = mid + 1
        return filled(ratios[lo])
