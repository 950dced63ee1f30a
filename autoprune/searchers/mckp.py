"""Multiple-choice knapsack solvers: exact DP over a discretised cost, and greedy by value/cost.

One choice per variable (a ratio per slot), maximise the summed value with the summed cost within a
capacity. Used by the ``knapsack`` searchers; plain numpy, no search-space types.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _dp(values: list[np.ndarray], weights: list[np.ndarray], capacity: int) -> tuple[list[int], float] | None:
    """Exact multiple-choice knapsack on integer weights: one choice per variable, max total value."""
    best = np.zeros(capacity + 1)
    picks = []
    for v, w in zip(values, weights, strict=True):
        new = np.full(capacity + 1, -np.inf)
        pick = np.full(capacity + 1, -1, dtype=int)
        for k in range(len(v)):
            wk = int(w[k])
            if wk > capacity:
                continue
            cand = np.full(capacity + 1, -np.inf)
            cand[wk:] = best[: capacity + 1 - wk] + v[k]
            better = cand > new
            new[better], pick[better] = cand[better], k
        best = new
        picks.append(pick)
    if not np.isfinite(best[capacity]):
        return None
    choice, c = [], capacity
    for w, pick in zip(reversed(weights), reversed(picks), strict=True):
        k = int(pick[c])
        choice.append(k)
        c -= int(w[k])
    return choice[::-1], float(best[capacity])


def solve_mckp(
    values: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    capacity: float,
    *,
    resolution: int = 2000,
    max_resolution: int = 64000,
) -> list[int]:
    """Choice index per variable maximising sum(values) with sum(costs) <= capacity.

    Costs may be negative: each variable's costs are offset by their minimum (and the capacity by
    the sum of minima), then discretised into ``resolution`` units of the offset capacity, rounded
    UP, so every returned solution truly fits. Rounding DOWN gives an upper bound on the optimum;
    while the two differ the resolution is quadrupled (up to ``max_resolution``), so the answer is
    the exact optimum unless some solution sits within one unit of the capacity. If nothing fits,
    the cheapest choice of every variable is returned.
    """
    v = [np.asarray(x, dtype=float) for x in values]
    c = [np.asarray(x, dtype=float) for x in costs]
    lows = [float(x.min()) for x in c]
    cap = capacity - sum(lows)
    cheapest = [int(np.lexsort((-vi, ci))[0]) for vi, ci in zip(v, c, strict=True)]
    if cap < 0:
        return cheapest
    offset = [ci - lo for ci, lo in zip(c, lows, strict=True)]
    scale = max(cap, 1e-300)
    res = resolution
    while True:
        up = _dp(v, [np.ceil(o / scale * res - 1e-9).astype(int) for o in offset], res)
        if up is None:
            return cheapest
        down = _dp(v, [np.floor(o / scale * res + 1e-9).astype(int) for o in offset], res)
        if down is None or up[1] >= down[1] - 1e-12 or res >= max_resolution:
            return up[0]
        res = min(res * 4, max_resolution)


def solve_greedy(values: Sequence[Sequence[float]], costs: Sequence[Sequence[float]], capacity: float) -> list[int]:
    """Greedy multiple-choice knapsack: start at each variable's best value, then repeatedly take
    the move that gives up the least value per unit of cost saved, until the total fits."""
    v = [np.asarray(x, dtype=float) for x in values]
    c = [np.asarray(x, dtype=float) for x in costs]
    cur = [int(np.lexsort((ci, -vi))[0]) for vi, ci in zip(v, c, strict=True)]
    total = sum(ci[k] for ci, k in zip(c, cur, strict=True))
    while total > capacity:
        best: tuple[float, float, int, int] | None = None
        for j, (vj, cj) in enumerate(zip(v, c, strict=True)):
            for k in range(len(vj)):
                saved = cj[cur[j]] - cj[k]
                if saved <= 0:
                    continue
                key = ((vj[cur[j]] - vj[k]) / saved, -saved, j, k)
                if best is None or key < best:
                    best = key
        if best is None:
            break
        _, _, j, k = best
        total -= c[j][cur[j]] - c[j][k]
        cur[j] = k
    return cur
