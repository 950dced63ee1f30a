"""Knapsack / layer-adaptive DP: one ratio per variable maximising total value under the budget.

Two phases (Aflalo et al. 2020; HALP, Shen et al. 2022; Xu et al. 2023):

1. Values. ``value="scan"`` (default): a sensitivity scan proposed as probe trials scored at a
   cheap fidelity (adaptive BN: the scan of a 12-slot ResNet-20 is 25 probes, more than a small
   trial budget), the dense policy then one variable pruned at a time at ``scan_points`` ratios
   (others dense); a choice's
   value is minus its accuracy drop, linearly interpolated between scanned ratios. Without trials:
   ``value="magnitude"`` or ``"bn"``, the share of the group's importance (Torch-Pruning's
   normalised group importance on the dense weights) that the removed channels carry.
2. Costs and solve. A choice's cost is the change of the target metric (``ctx.estimate``: LUT latency
   or analytic MACs/params; ``ctx.cost_of`` when there is no estimate) when only that variable moves
   from a base policy; deltas can be negative. ``knapsack`` solves the multiple-choice knapsack
   exactly by DP over a discretised cost (see ``solve_mckp``), ``knapsack-greedy`` by marginal
   value/cost. Costs are not additive (a conv shrinks with both its input and output slot), so the
   solution is re-linearised around itself and the capacity tightened until the estimate fits.
   ask() then emits the solution and a sweep of budgets ``limit * sweep`` as a front.
3. Refinement (``refine=True``, what the trial budget has left after the sweep): the knapsack's
   values come from cheap probes and assume drops add up, so the best *measured* planned trial
   is not always the solver's first answer. Its neighbours (one variable a step less pruned,
   another the fewest steps more pruned that bring the estimate back within budget, or a step less
   pruned alone where the budget has room) are proposed in order of the knapsack's value, best
   first, moving on to the next best measured trial when a trial's neighbours are spent.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoprune.searchers._base import Searcher, policy_key
from autoprune.searchers.mckp import solve_greedy, solve_mckp
from autoprune.space import Policy, SearchSpace
from autoprune.study import COMPLETE, REJECTED, Trial

VALUE_SOURCES = ("scan", "magnitude", "bn")
SOLVERS = ("dp", "greedy")
DEFAULT_SWEEP = (*(round(1.0 - 0.02 * i, 2) for i in range(15)), 1.02, 1.04)


# -- values ------------------------------------------------------------------------------------------
def scan_ratios(choices: Sequence[float], points: int | None) -> tuple[float, ...]:
    """The non-zero ratios a scan measures: all of them, or ``points`` evenly spaced ending at the max."""
    nonzero = [c for c in choices if c > 0]
    if points is None or points >= len(nonzero):
        return tuple(nonzero)
    idx = sorted({int(round(len(nonzero) * (i + 1) / points)) - 1 for i in range(points)})
    return tuple(nonzero[i] for i in idx)


def interpolate_drops(choices: Sequence[float], measured: dict[float, float]) -> np.ndarray:
    """Accuracy drop at every choice: piecewise linear through (0, 0) and the measured points, made
    non-decreasing in the ratio (pruning more never helps in the model), constant past the last."""
    xs = [0.0] + sorted(measured)
    ys = np.maximum.accumulate([0.0] + [max(0.0, measured[r]) for r in xs[1:]])
    return np.interp(np.asarray(choices, dtype=float), xs, ys)


def importance_drops(model, example_inputs, space: SearchSpace, criterion: str) -> list[np.ndarray]:
    """Per variable and choice: share of each slot's normalised group importance that is removed
    (the lowest-scored channels go first, as in ``apply_policy``), summed over the variable's slots."""
    import torch

    from autoprune.graph import build_graph
    from autoprune.prune import importance

    model = copy.deepcopy(model).eval()
    graph = build_graph(model, example_inputs)
    modules = dict(model.named_modules())
    scorer = importance(criterion)
    shares: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for slot in space.slots:
            root = modules[slot.name]
            group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, list(range(slot.channels)))
            scores = scorer(group)
            if scores is None:
                scores = root.weight.detach().flatten(1).norm(dim=1)
            s = np.sort(np.abs(scores.double().numpy()))
            shares[slot.name] = np.concatenate([[0.0], np.cumsum(s)]) / max(float(s.sum()), 1e-12)
    drops = []
    for var in space.variables:
        drops.append(np.array([
            sum(shares[n][space.slot(n).channels - space.slot(n).kept(r)] for n in var.slots) for r in var.choices
        ]))
    return drops


# -- additivity -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdditivityReport:
    """How well the sum of single-variable drops predicts the joint drop of random policies."""

    predicted: tuple[float, ...]
    actual: tuple[float, ...]
    pearson: float
    spearman: float
    mae: float
    dense_accuracy: float


def additivity(
    score: Callable[[Policy], float], space: SearchSpace, rng: np.random.Generator, *, n_random: int = 30,
    ratios: Sequence[float] | None = None, progress: Callable[[str], None] | None = None,
) -> AdditivityReport:
    """Score the dense policy, every single-variable policy at ``ratios`` (default: every non-zero
    choice) and ``n_random`` random policies, then compare the sum of single drops with the joint
    drop. A random policy prunes each variable with probability q ~ U(0.1, 0.6), at a ratio drawn
    from ``ratios``, so the joint drops span small to large instead of all saturating.
    """
    from scipy import stats

    dense = score(space.dense())
    single: list[dict[float, float]] = []
    for i, var in enumerate(space.variables):
        rs = [r for r in (ratios or var.choices) if r > 0 and r in var.choices]
        single.append({r: dense - score(space.policy({var.name: r})) for r in rs})
        if progress:
            progress(f"singles {i + 1}/{len(space.variables)}")
    predicted, actual = [], []
    for i in range(n_random):
        q = rng.uniform(0.1, 0.6)
        values = {
            var.name: float(rng.choice(list(single[j]))) if single[j] and rng.random() < q else 0.0
            for j, var in enumerate(space.variables)
        }
        predicted.append(sum(single[j].get(values[var.name], 0.0) for j, var in enumerate(space.variables)))
        actual.append(dense - score(space.policy(values)))
        if progress and (i + 1) % 10 == 0:
            progress(f"random {i + 1}/{n_random}")
    p, a = np.asarray(predicted), np.asarray(actual)
    return AdditivityReport(
        tuple(predicted), tuple(actual), float(stats.pearsonr(p, a)[0]), float(stats.spearmanr(p, a)[0]),
        float(np.mean(np.abs(p - a))), float(dense),
    )


# -- the searcher -------------------------------------------------------------------------------------
class KnapsackSearcher(Searcher):
    """Sensitivity scan (or channel importance), then an exact multiple-choice knapsack and a sweep.

    Args:
        value: ``scan`` (trials), ``magnitude`` or ``bn`` (channel importance, no trials).
        solver: ``dp`` (exact, discretised) or ``greedy`` (marginal value per cost).
        scan_points: ratios scanned per variable (None: every choice), interpolated in between.
        sweep: budget factors proposed after the solution, in order (``limit * f``).
        resolution: DP cost units of the capacity (refined automatically, see ``solve_mckp``).
        relinearize: extra solves around the previous solution (non-additive costs).
        probe_fidelity: fidelity of the scan's probes (default ``bn``, adaptive-BN only: cheap, and
            not counted against the run's trial budget; None scores them like every trial).
        refine: after the sweep, propose neighbours of the best measured trials (phase 3) until
            the run's trial budget is spent; False stops after the sweep.
    """

    name = "knapsack"

    def __init__(
        self, value: str = "scan", solver: str = "dp", *, scan_points: int | None = 2,
        sweep: Sequence[float] = DEFAULT_SWEEP, resolution: int = 2000, relinearize: int = 2,
        probe_fidelity: str | None = "bn", refine: bool = True,
    ) -> None:
        super().__init__()
        self.probe_fidelity = probe_fidelity
        if value not in VALUE_SOURCES:
            raise ValueError(f"value must be one of {VALUE_SOURCES}, got {value!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.value, self.solver, self.scan_points = value, solver, scan_points
        self.sweep, self.resolution, self.relinearize = tuple(sweep), resolution, relinearize
        self.refine = refine

    def _setup(self) -> None:
        space = self.context.space
        self._scan: dict[tuple, tuple[int, float, Policy]] = {}
        if self.value == "scan":
            self._scan[policy_key(space.dense())] = (-1, 0.0, space.dense())
            for j, var in enumerate(space.variables):
                for r in scan_ratios(var.choices, self.scan_points):
                    policy = space.policy({var.name: r})
                    self._scan[policy_key(policy)] = (j, r, policy)
        self._scanned: dict[tuple, float] = {}
        self._scan_out: set[tuple] = set()  # scan policies asked and not yet told
        self._scan_rejected = False
        self._drops: list[np.ndarray] | None = None
        self._costs: dict[tuple, float] = {}
        self._front = list(self.sweep)
        self._measured: list[float] = []  # measured / estimated cost of told trials
        self.fallback = ""

    def is_probe(self, policy: Policy) -> bool:
        """A scan policy: it must be scored even though it is over budget (one variable pruned)."""
        return policy_key(policy) in self._scan

    def _tell(self, trial: Trial) -> None:
        ctx = self.context
        measured = trial.metrics.get(ctx.metric)
        # Only planned trials: the table is accurate near dense (where the scan probes are) and
        # optimistic at deep budgets, so probes would pull the median to 1 where it matters least.
        planned = not self.is_probe(trial.policy)
        if ctx.estimate is not None and measured and planned and trial.state in (COMPLETE, REJECTED):
            estimated = self._cost(trial.policy)
            if estimated > 0:
                self._measured.append(float(measured) / estimated)
        key = policy_key(trial.policy)
        if key not in self._scan:
            return
        self._scan_out.discard(key)
        if trial.state == COMPLETE and trial.accuracy is not None:
            self._scanned[key] = trial.accuracy
        elif trial.state == REJECTED:
            self._scan_rejected = True

    # -- asking --------------------------------------------------------------------------------
    def _ask(self, n: int) -> list[Policy]:
        out: list[Policy] = []
        if not self._scan_rejected:
            out = [p for key, (_, _, p) in self._scan.items() if key not in self._scanned and self.is_new(p)][:n]
            if out:
                self._scan_out.update(policy_key(p) for p in out)
                return out
        if self._scan_out and self._drops is None:
            return []  # the values come from the whole scan: wait for the trials still out
        while len(out) < n and self._front:
            policy = self.plan(self.context.limit * self._front.pop(0) / self.correction())
            if self.is_new(policy) and policy not in out:
                out.append(policy)
        if len(out) < n and not self._front and self.refine:
            out += [p for p in self.neighbours() if p not in out][: n - len(out)]
        return out

    def neighbours(self) -> list[Policy]:
        """Unseen policies next to the best measured planned trial that has any (phase 3), within
        the corrected budget on the estimate, most valuable first by the knapsack's values."""
        space = self.context.space
        drops = self.drops()
        limit = self.context.limit / self.correction()
        measured = sorted(
            (t for t in self.told if t.feasible and t.accuracy is not None and not self.is_probe(t.policy)),
            key=lambda t: -t.accuracy,
        )
        for trial in measured:
            found = self._neighbours_of(space.variable_values(trial.policy), limit, drops)
            if found:
                return found
        return []

    def _neighbours_of(self, base: dict[str, float], limit: float, drops: list[np.ndarray]) -> list[Policy]:
        space = self.context.space
        if any(base.get(v.name) not in v.choices for v in space.variables):
            return []  # a trial from another space (a warm start): not a point of this grid
        index = {v.name: v.choices.index(base[v.name]) for v in space.variables}
        found: dict[tuple, tuple[float, float, Policy]] = {}

        def offer(values: dict[str, float]) -> bool:
            policy = space.policy(values)
            cost = self._cost(policy)
            if cost > limit:
                return False
            if self.is_new(policy):
                found[policy_key(policy)] = (self._value_of(values, drops), cost, policy)
            return True

        for up in space.variables:
            if index[up.name] == 0:
                continue
            lighter = {**base, up.name: up.choices[index[up.name] - 1]}
            offer(lighter)
            for down in space.variables:
                if down.name == up.name:
                    continue
                for k in range(index[down.name] + 1, len(down.choices)):
                    if offer({**lighter, down.name: down.choices[k]}):
                        break  # the fewest steps down that fit again
        return [p for _, _, p in sorted(found.values(), key=lambda t: (-t[0], -t[1]))]

    def correction(self) -> float:
        """Median of measured / estimated cost over told planned trials (1 within 5%, else 2 decimals).

        The estimate (a LUT calibrated once) can drift from the runner's measurements (load on
        the machine, a stale table, per-layer overheads it leaves out that weigh most in a deeply
        pruned network); the budget handed to the solver is divided by this factor.
        """
        if not self._measured:
            return 1.0
        factor = float(np.median(self._measured))
        return 1.0 if abs(factor - 1.0) <= 0.05 else round(factor, 2)

    def drops(self) -> list[np.ndarray]:
        """Accuracy drop (in the value source's units) per variable and choice; computed once."""
        if self._drops is not None:
            return self._drops
        ctx = self.context
        space = ctx.space
        dense_key = policy_key(space.dense())
        scanned_any = any(j >= 0 and k in self._scanned for k, (j, _, _) in self._scan.items())
        if self.value == "scan" and (self._scan_rejected or dense_key not in self._scanned or not scanned_any):
            self.fallback = "the scan policies were not scored (over budget?); values from channel magnitude"
            warnings.warn(f"knapsack: {self.fallback}", RuntimeWarning, stacklevel=2)
        if self.value == "scan" and not self.fallback:
            base = self._scanned[dense_key]
            measured: list[dict[float, float]] = [{} for _ in space.variables]
            for key, (j, r, _) in self._scan.items():
                if j >= 0 and key in self._scanned:
                    measured[j][r] = base - self._scanned[key]
            drops = [interpolate_drops(v.choices, m) if m else None for v, m in zip(space.variables, measured, strict=True)]
            known = [d for d in drops if d is not None]
            # a variable whose scan trials all failed gets the mean curve of the others
            mean = np.mean([np.interp(np.linspace(0, 1, 9), np.linspace(0, 1, len(d)), d) for d in known], axis=0)
            self._drops = [
                d if d is not None else np.interp(np.linspace(0, 1, len(v.choices)), np.linspace(0, 1, 9), mean)
                for v, d in zip(space.variables, drops, strict=True)
            ]
        elif ctx.model is None or ctx.example_inputs is None:  # nothing known: equal sensitivity
            self.fallback = self.fallback or "no dense model in the context"
            self._drops = [np.asarray(v.choices, dtype=float) for v in space.variables]
        else:
            criterion = self.value if self.value != "scan" else "magnitude"
            self._drops = importance_drops(ctx.model, ctx.example_inputs, space, criterion)
        return self._drops

    # -- solving ---------------------------------------------------------------------------------
    def _cost(self, policy: Policy) -> float:
        key = policy_key(policy)
        if key not in self._costs:
            ctx = self.context
            # The untracked estimate: costs are cached, and ``correction`` rescales the budget instead.
            estimate = getattr(ctx.estimate, "raw", ctx.estimate)
            value = estimate(policy) if estimate is not None else None
            self._costs[key] = float(value) if value is not None else float(ctx.cost_of(policy))
        return self._costs[key]

    def _solve(self, base: dict[str, float], limit: float) -> dict[str, float]:
        """One linearised solve around ``base`` (per-variable values)."""
        space = self.context.space
        base_cost = self._cost(space.policy(base))
        costs = [
            np.array([self._cost(space.policy({**base, var.name: r})) - base_cost for r in var.choices])
            for var in space.variables
        ]
        values = [-d for d in self.drops()]
        if self.solver == "dp":
            choice = solve_mckp(values, costs, limit - base_cost, resolution=self.resolution)
        else:
            choice = solve_greedy(values, costs, limit - base_cost)
        return {var.name: var.choices[k] for var, k in zip(space.variables, choice, strict=True)}

    def plan(self, limit: float) -> Policy:
        """The most valuable policy whose estimated cost is within ``limit`` (else the cheapest seen).

        Solve linearised at the dense policy, then re-linearise around each solution
        (``relinearize`` times); while no solution fits, tighten the capacity by the overshoot.
        """
        space = self.context.space
        drops = self.drops()
        dense = {v.name: 0.0 for v in space.variables}
        rounds = self.relinearize if self.context.estimate is not None else 0
        seen: list[tuple[float, dict[str, float]]] = []
        base, target = dense, limit
        for attempt in range(rounds + 9):
            values = self._solve(base, target)
            cost = self._cost(space.policy(values))
            seen.append((cost, values))
            if attempt < rounds:  # re-linearise around this solution, at the full limit
                base, target = values, limit
            elif cost <= limit:
                break
            else:  # still over: tighten the capacity by the overshoot around the same base
                target -= cost - limit
        fits = [(self._value_of(v, drops), v) for c, v in seen if c <= limit]
        chosen = max(fits, key=lambda t: t[0])[1] if fits else min(seen, key=lambda t: t[0])[1]
        return space.policy(chosen)

    def _value_of(self, values: dict[str, float], drops: list[np.ndarray]) -> float:
        space = self.context.space
        return -float(sum(d[v.choices.index(values[v.name])] for v, d in zip(space.variables, drops, strict=True)))


class GreedyKnapsackSearcher(KnapsackSearcher):
    """``knapsack`` with the greedy solver (Aflalo et al.'s default), to compare with the exact DP."""

    name = "knapsack-greedy"

    def __init__(self, value: str = "scan", **kwargs) -> None:
        super().__init__(value, "greedy", **kwargs)
