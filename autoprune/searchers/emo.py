"""``emo``: evolutionary multi-objective search on pymoo, through its ask/tell interface.

One integer gene per variable (the index of its choice, ordered from no pruning to the most);
the budget is pymoo's inequality constraint ``cost / limit - 1 <= 0``, so constrained domination
ranks every feasible policy above every infeasible one. Under a budget the objective is the
validation error alone (``objectives=("error",)``, the default): with the cost as a second
objective (``("error", "cost")``) the population spreads along the front below the budget, which
a search for the best policy at the budget pays for (mean toy gap 0.052 against 0.023 at 30
trials, 6 seeds). The run's pick is, as for every searcher, the most accurate feasible trial.
With ``--objectives`` (``SearchContext.objectives``) the objectives are the error and each cost
objective as a fraction of dense, and the first generation is drawn anywhere under the bound.

How a generation meets the runner's ask/tell loop: ``algorithm.ask()`` gives a population; each
individual is decoded into a policy and handed out by ``ask(n)`` in order, ``n`` at a time (the
workers); when every individual of the generation has a result, ``algorithm.tell`` advances the
algorithm and the next ``ask`` breeds the next generation. No individual becomes a trial twice:

- one already measured (a duplicate child, or a trial another searcher ran: a ``--resume``
  replay, a portfolio member) is given its known result at once;
- one the cheap estimate puts over budget gets that estimate as its constraint value and never
  becomes a trial (as ``random`` discards such draws).

The first generation is drawn from the feasible box and screened like ``random``'s draws, and
seeded with the best trials already in the ledger. Reproducible from the seed: pymoo's operators
draw from the random state it seeds, our draws from the searcher's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoprune.errors import UserError
from autoprune.searchers._base import NEAR_BUDGET, Searcher, policy_key
from autoprune.searchers._pymoo import (
    ALGORITHMS,
    integer_problem,
    make_algorithm,
    row_repair,
    start,
    tell_population,
)
from autoprune.space import Policy
from autoprune.study import COMPLETE, REJECTED, Trial


@dataclass(frozen=True)
class _Result:
    """The objectives and constraint pymoo is told for one policy."""

    error: float
    cost: float  # fraction of dense
    constraint: float  # cost / limit - 1, <= 0 feasible
    costs: tuple[float, ...] = ()  # --objectives: each cost objective as a fraction of dense


class EmoSearcher(Searcher):
    """pymoo's NSGA-II (or NSGA-III) over the space's integer genes, the budget as its constraint.

    Args:
        algorithm: ``nsga2`` (default) or ``nsga3``. pymoo's MOEA/D has no constraint handling
            (every search here has a budget) and its AGE-MOEA needs numba, so neither is offered.
        pop_size: individuals per generation; None sizes it from the run's trial budget (a
            quarter of it, between 8 and 40), so a 30-trial search sees several generations.
        objectives: ``("error",)`` or ``("error", "cost")`` (cost as a fraction of dense).
        fill: under a budget, an individual the estimate puts below ``near`` of the limit is
            made less pruned up to the budget (``SearchContext.fill``), as a pymoo repair of every
            new individual; the best policies lie at the budget.
    """

    name = "emo"
    multi_objective = True  # --objectives: error and every cost objective, the budget still a constraint
    near = NEAR_BUDGET  # the first generation's band under the budget

    def __init__(self, algorithm: str = "nsga2", pop_size: int | None = None,
                 objectives: tuple[str, ...] = ("error",), fill: bool = True) -> None:
        super().__init__()
        self.fill = fill
        if objectives not in (("error",), ("error", "cost")):
            raise UserError(f"emo objectives must be ('error',) or ('error', 'cost'), got {objectives!r}")
        self.objectives = objectives
        if algorithm not in ALGORITHMS:
            raise UserError(f"unknown --algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        self.algorithm_name, self.pop_size = algorithm, pop_size

    def _setup(self) -> None:
        if self.context.objectives:  # a front: error and each cost objective (fractions of dense)
            self.objectives = ("error", *self.context.objectives)
        self._known: dict[tuple, _Result] = {}
        self._policies: dict[tuple, Policy] = {}
        self._algorithm = None
        self._pop = None  # the generation being evaluated
        self._queue: list[int] = []  # indices of its individuals still to hand out
        self._waiting: dict[tuple, list[int]] = {}  # policy key -> individuals awaiting its trial
        self._results: dict[int, _Result] = {}
        self.generations = 0

    # -- results ---------------------------------------------------------------------------------

    def _result_of(self, trial: Trial) -> _Result | None:
        ctx = self.context
        cost = trial.metrics.get(ctx.metric)
        if trial.state not in (COMPLETE, REJECTED) or cost is None:
            return None
        constraint = trial.constraint if trial.constraint is not None else float(cost) / ctx.limit - 1.0
        accuracy = trial.metrics.get("val_accuracy")
        error = 1.0 - float(accuracy) if trial.state == COMPLETE and accuracy is not None else 1.0
        costs = tuple(ctx.cost_fractions(trial) or [1.0] * len(ctx.objectives)) if ctx.objectives else ()
        return _Result(error, float(cost) / ctx.dense_cost, float(constraint), costs)

    def _tell(self, trial: Trial) -> None:
        if self.is_probe(trial.policy):
            return
        result = self._result_of(trial)
        key = policy_key(trial.policy)
        if result is None:  # a failed trial: no objectives; the individual counts as infeasible
            result = _Result(1.0, 1.0, 1.0, (1.0,) * len(self.context.objectives))
        self._known.setdefault(key, result)
        self._policies.setdefault(key, trial.policy)
        for index in self._waiting.pop(key, []):
            self._results[index] = result
        self._advance_if_complete()

    # -- generations -----------------------------------------------------------------------------

    def _build(self):
        space = self.context.space
        trials = getattr(self.context, "trials", None) or 40
        pop = self.pop_size or int(np.clip(trials // 4, 8, 40))
        problem = integer_problem(0, space.upper_bounds(), len(self.objectives), n_ieq_constr=1)
        fill = self.fill and not self.context.objectives and self.context.estimate is not None
        algorithm = make_algorithm(self.algorithm_name, pop, len(self.objectives), self._initial_population(pop),
                                   repair=row_repair(self._filled) if fill else None)
        return start(algorithm, problem, self.context.seed)  # the runner decides when the search ends

    def _filled(self, genes: np.ndarray) -> np.ndarray:
        """One individual's genes, filled up to the budget when estimated under ``near`` of it."""
        space = self.context.space
        policy = space.decode(genes)
        filled = self.context.fill(policy, self.rng, below=self.near)
        return genes if filled == policy else np.asarray(space.encode(filled), dtype=float)

    def _initial_population(self, size: int) -> np.ndarray:
        """The best ledger trials (feasible first, most accurate first), then screened draws."""
        space = self.context.space
        told = sorted(self._known.items(), key=lambda kv: (kv[1].constraint > 0, kv[1].error))
        rows = [space.encode(self._policies[key]) for key, _ in told[: size // 2]]
        if self.context.objectives:  # a front: anchor its ends with the uniform policies under the bound
            ladder = sorted({c for v in space.variables for c in v.choices})
            for ratio in np.linspace(ladder[0], ladder[-1], min(len(ladder), max(2, size // 3))):
                policy = space.uniform(float(ratio))
                estimate = self.context.estimate(policy) if self.context.estimate is not None else None
                if estimate is None or estimate <= self.context.limit:
                    rows.append(space.encode(policy))
        rows = list({tuple(r): r for r in rows}.values())
        seen = {tuple(r) for r in rows}
        # Drawn in the band just under the budget, like `random`'s: the pick lies there (a front
        # spans the space: drawn anywhere under the bound).
        draws = self.context.sample_within_budget(self.rng, size, lambda p: tuple(space.encode(p)) not in seen, 5_000,
                                                  near=0.0 if self.context.objectives else self.near)
        rows += [space.encode(p) for p in draws]
        while len(rows) < size:  # a tiny space: fill with plain draws (duplicates are removed by pymoo)
            rows.append(space.encode(space.sample(self.rng)))
        return np.array(rows[:size], dtype=float)

    def _next_generation(self) -> None:
        if self._algorithm is None:
            self._algorithm = self._build()
        pop = self._algorithm.ask()
        self._pop, self._results, self._waiting = pop, {}, {}
        self._queue = []
        space = self.context.space
        for i, x in enumerate(pop.get("X")):
            policy = space.decode(np.asarray(x, dtype=float))
            key = policy_key(policy)
            if key in self._known:
                self._results[i] = self._known[key]
                continue
            estimate = self.context.estimate(policy) if self.context.estimate is not None else None
            if estimate is not None and estimate > self.context.limit:
                self._results[i] = _Result(1.0, estimate / self.context.dense_cost, estimate / self.context.limit - 1.0,
                                           (1.0,) * len(self.context.objectives))  # infeasible: never compared
                continue
            if key in self._waiting:  # the same policy twice in one generation: one trial
                self._waiting[key].append(i)
                continue
            self._waiting[key] = [i]
            self._queue.append(i)

    def _advance_if_complete(self) -> None:
        if self._pop is None or len(self._results) < len(self._pop):
            return
        ordered = [self._results[i] for i in range(len(self._pop))]
        if self.context.objectives:
            F = np.array([[r.error, *r.costs] for r in ordered])
        else:
            F = np.array([[r.error, r.cost][: len(self.objectives)] for r in ordered])
        tell_population(self._algorithm, self._pop, F, np.array([[r.constraint] for r in ordered]))
        self._pop = None
        self.generations += 1

    # Generations in a row whose every child is known or screened out before one is proposed.
    max_idle_generations = 50

    def _ask(self, n: int) -> list[Policy]:
        space = self.context.space
        out: list[Policy] = []
        idle = 0
        while len(out) < n:
            if self._pop is None:
                if idle == self.max_idle_generations:
                    # The estimate rejects every child (it over-states costs near the floor):
                    # propose what looks cheapest, as `random` does, so measurements correct it.
                    out += self.context.sample_within_budget(self.rng, n - len(out), self.is_new, 5_000)
                    break
                self._next_generation()
                self._advance_if_complete()
                idle += 1
                continue
            if not self._queue:
                break  # the rest of this generation is out with the runner
            index = self._queue.pop(0)
            out.append(space.decode(np.asarray(self._pop.get("X")[index], dtype=float)))
        return out
