"""Optuna samplers behind ask/tell: ``tpe``, ``nsga2``, ``gp``, ``cmaes`` and ``qmc``.

Each searcher keeps a private in-memory Optuna study (one objective, validation accuracy,
maximised) over ``autoprune.study.distributions(space)``. ``ask`` calls ``study.ask`` and decodes
the params into a policy; ``tell`` closes the matching Optuna trial, or, for a trial it never
asked (a ledger replayed on ``--resume``, another searcher's trials), adds it with
``study.add_trial`` so the sampler learns from every trial in the ledger.

Proposals already evaluated are told their known result and asked again; where the context has a
cheap cost estimate, proposals estimated over budget are told as rejected at once and never become
trials (as ``random`` discards such draws).

The budget is an Optuna constraint (``cost / limit - 1``, <= 0 feasible). What a rejected trial
(over budget, never trained, so no accuracy) becomes depends on what the sampler reads
(see ``docs/searchers.md``):

- ``tpe``, ``qmc``: PRUNED with its constraint, exactly as in the ledger; TPE sorts every trial
  with a positive constraint into its infeasible group, whatever its state.
- ``nsga2``, ``gp``: COMPLETE with its constraint, because both read COMPLETE trials only.
  NSGA-II's constrained domination never compares an infeasible trial's value; the GP fits its
  objective model on infeasible trials too, so they get the best accuracy told so far (a rejected
  policy prunes less than a feasible one near it, so it is at least as accurate; a low made-up
  value would push the search away from the budget boundary, where the optimum lies).
- ``cmaes``: CmaEsSampler ignores constraints, so a rejected trial is COMPLETE with the penalty
  ``-constraint``: below every accuracy, and less negative the closer it came to the budget.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from autoprune.costs.latency import thread_count
from autoprune.searchers._base import NEAR_BUDGET, Searcher, policy_key
from autoprune.searchers.baselines import uniform_start
from autoprune.space import Policy
from autoprune.study import COMPLETE, REJECTED, Trial, distributions

_CONSTRAINT = "budget"


@dataclass(frozen=True)
class _Result:
    """What the in-memory study is told about one policy."""

    state: TrialState
    value: float | list[float] | None  # a list in an --objectives search: accuracy, then cost fractions
    constraints: dict[str, float] | None


class OptunaSearcher(Searcher):
    """Base of the Optuna-backed searchers; a subclass only builds its sampler.

    The sampler is built at the first ``ask``, after the ledger has been replayed through
    ``tell``, so samplers that take a warm start at construction (CMA-ES) can use it.

    Attributes:
        infeasible: how a rejected trial is told: ``pruned``, ``constrained`` or ``penalty``.
        max_attempts: duplicate proposals per requested policy before falling back to a random
            new policy (a converged sampler keeps proposing what it has already seen).
        max_screened: proposals per requested policy the estimate may screen out before the
            same fallback (each costs a sampler ask; ``gp`` sets a lower cap, since its asks
            grow with every screened proposal it is told).
        starts_uniform: under a budget, the first proposal is ``uniform``'s first policy
            (``uniform_start``), enqueued unless the ledger has it: a learning sampler starts
            from the baseline it has to beat instead of from random draws alone.
        fills_budget: under a budget, a proposal the estimate puts below ``near`` of the limit
            is made less pruned up to the budget (``SearchContext.fill``) and the sampler is
            told the filled policy instead (it is enqueued in place of the proposal): the
            samplers then model the policies at the budget, where the best ones lie.
        near: the fraction of the limit under which a proposal is filled (``random``'s band).
    """

    name: ClassVar[str] = "optuna"
    multi_objective: ClassVar[bool] = True
    infeasible: ClassVar[str] = "constrained"
    max_attempts: ClassVar[int] = 10
    max_screened: ClassVar[int] = 50
    starts_uniform: ClassVar[bool] = True
    fills_budget: ClassVar[bool] = True
    near: ClassVar[float] = NEAR_BUDGET

    def _setup(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = self.context.space
        self.distributions: dict[str, BaseDistribution] = distributions(space)
        # --objectives: accuracy maximised, each cost (a fraction of dense) minimised
        directions = ["maximize"] + ["minimize"] * len(self.context.objectives)
        self.study = optuna.create_study(
            directions=directions, sampler=optuna.samplers.RandomSampler(seed=self.context.seed)
        )
        self._sampler_ready = False
        self._pending: dict[tuple[tuple[str, float], ...], optuna.Trial] = {}
        self._known: dict[tuple[tuple[str, float], ...], _Result] = {}
        self._best: float | None = None
        self.duplicates = 0
        self.fallbacks = 0
        self.screened = 0
        self.filled = 0
        self._start: Policy | None = None

    def make_sampler(self) -> BaseSampler:
        """The Optuna sampler, seeded from ``self.context.seed``."""
        raise NotImplementedError

    # -- ask ------------------------------------------------------------------------------------
    def _ask(self, n: int) -> list[Policy]:
        # The GP sampler's small linear algebra is several times slower with many torch threads
        # (measured 4 s against 18 s for 20 asks on two busy cores); one thread for every sampler.
        with thread_count(1):
            return self._ask_sampler(n)

    def _ask_sampler(self, n: int) -> list[Policy]:
        if len(self._seen.union(self._known)) >= self.context.space.size():
            return []  # every policy has been proposed: nothing new to ask for
        if not self._sampler_ready:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.sampler = self.make_sampler()
            self._sampler_ready = True
            self._offer_start()
        out: list[Policy] = []
        attempts = screened = 0
        while len(out) < n and attempts < self.max_attempts * n and screened < self.max_screened * n:
            trial = self.study.ask(self.distributions)
            policy = self._decode(trial.params)
            key = policy_key(policy)
            if self._settled_duplicate(trial, policy):
                attempts += 1
            elif (estimate := self._estimated_constraint(policy)) is not None and estimate > 0:
                # Over budget by the cheap estimate: the sampler learns so at once, no trial spent.
                self.screened += 1
                screened += 1
                result = self._result(Trial(-1, policy, REJECTED, {}, constraint=estimate))
                self._known[key] = result
                self._close(trial, result)
            else:
                filled = self._filled(policy)
                if filled is not policy:
                    self.study.tell(trial, state=TrialState.FAIL)
                    self.study.enqueue_trial(self._params(filled))
                    trial, policy, key = self.study.ask(self.distributions), filled, policy_key(filled)
                    self._adopt(trial)
                    if self._settled_duplicate(trial, policy):
                        attempts += 1
                        continue
                self._pending[key] = trial
                out.append(policy)
        while len(out) < n:
            policy = self._random_new()
            if policy is None:
                break
            self.fallbacks += 1
            self.study.enqueue_trial(self._params(policy))
            trial = self.study.ask(self.distributions)
            self._pending[policy_key(policy)] = trial
            out.append(policy)
        return out

    def _settled_duplicate(self, trial: optuna.Trial, policy: Policy) -> bool:
        """Close ``trial`` if ``policy`` is known, running or already proposed; True if it was.

        A duplicate teaches the sampler nothing new: a known result is told again (so its model
        sees that point again), a policy still running is told FAIL; the caller asks once more."""
        key = policy_key(policy)
        if key in self._known:
            self._close(trial, self._known[key])
        elif key in self._pending or not self.is_new(policy):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            return False
        self.duplicates += 1
        return True

    def _offer_start(self) -> None:
        """Enqueue ``uniform_start``'s policy for the sampler's next ask, unless it is known."""
        if not self.starts_uniform or self.context.objectives:
            return  # a front spans the space: no single starting policy
        start = uniform_start(self.context)
        if start is not None and self.is_new(start) and policy_key(start) not in self._known:
            self.study.enqueue_trial(self._params(start))
            self._start = start  # proposed as it is, not filled: the baseline the search must beat

    def _filled(self, policy: Policy) -> Policy:
        """``policy`` filled up to the budget when it is estimated under ``near`` of it (else itself)."""
        if not self.fills_budget or self.context.objectives or policy == self._start:
            return policy
        filled = self.context.fill(policy, self.rng, below=self.near)
        if filled == policy:
            return policy
        self.filled += 1
        return filled

    def _decode(self, params: Mapping[str, Any]) -> Policy:
        """A policy from sampled params, each snapped to its variable's nearest choice."""
        values = {}
        for var in self.context.space.variables:
            x = float(params[var.name])
            values[var.name] = min(var.choices, key=lambda c, x=x: (abs(c - x), c))
        return self.context.space.policy(values)

    def _params(self, policy: Policy) -> dict[str, float]:
        """Optuna params of a policy, snapped onto the distributions' grids."""
        return self.context.space.variable_values(self._decode(self.context.space.variable_values(policy)))

    def _estimated_constraint(self, policy: Policy) -> float | None:
        """``estimate / limit - 1`` where the context has a cheap cost estimate, else None."""
        ctx = self.context
        estimate = ctx.estimate(policy) if ctx.estimate is not None else None
        return None if estimate is None else estimate / ctx.limit - 1.0

    def _random_new(self) -> Policy | None:
        """A random policy not seen yet, estimated within budget if possible (as ``random``)."""
        def wanted(policy: Policy) -> bool:
            key = policy_key(policy)
            return self.is_new(policy) and key not in self._pending and key not in self._known

        near = self.near if self.fills_budget and not self.context.objectives else 0.0
        found = self.context.sample_within_budget(self.rng, 1, wanted, 2000, near=near)
        return found[0] if found else None

    # -- tell -----------------------------------------------------------------------------------
    def _tell(self, trial: Trial) -> None:
        key = policy_key(trial.policy)
        live = self._pending.pop(key, None)
        if trial.state not in (COMPLETE, REJECTED) or (trial.state == COMPLETE and trial.accuracy is None):
            if live is not None:
                self.study.tell(live, state=TrialState.FAIL)
            return
        if trial.scored:
            self._best = trial.accuracy if self._best is None else max(self._best, trial.accuracy or 0.0)
        result = self._result(trial)
        self._known[key] = result
        if live is not None:
            self._close(live, result)
        else:  # asked elsewhere: a warm start from the ledger or another searcher
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=result.state,
                    **({"values": result.value} if isinstance(result.value, list) else {"value": result.value}),
                    params=self._params(trial.policy),
                    distributions=self.distributions,
                    constraints=result.constraints,
                    system_attrs=self._warm_system_attrs(result),
                    user_attrs={"ledger_trial": trial.number, "searcher": trial.searcher},
                )
            )

    def _warm_system_attrs(self, result: _Result) -> dict[str, Any]:
        """Hook: sampler bookkeeping a warm-start trial needs to be read at all."""
        return {}

    def _adopt(self, live: optuna.Trial) -> None:  # noqa: B027 - an optional hook, empty by design
        """Hook: sampler bookkeeping an enqueued trial (a filled proposal) needs to be read at all."""

    def _result(self, trial: Trial) -> _Result:
        c = trial.constraint
        if self.infeasible == "penalty":
            if trial.state == REJECTED or (c is not None and c > 0):
                return _Result(TrialState.COMPLETE, -max(c or 0.0, 1e-9), None)
            return _Result(TrialState.COMPLETE, float(trial.accuracy or 0.0), None)
        constraints = None if c is None else {_CONSTRAINT: float(c)}
        if trial.state == COMPLETE:
            return _Result(TrialState.COMPLETE, self._values(trial, float(trial.accuracy or 0.0)), constraints)
        if constraints is None:  # rejected without a known cost: assume just over budget
            constraints = {_CONSTRAINT: 1e-6}
        if self.infeasible == "pruned":
            return _Result(TrialState.PRUNED, None, constraints)
        return _Result(TrialState.COMPLETE, self._values(trial, self._best if self._best is not None else 0.0), constraints)

    def _values(self, trial: Trial, accuracy: float) -> float | list[float]:
        """The value told: accuracy, or in an --objectives search accuracy and each cost as a
        fraction of dense (a policy screened by its estimate has no measured costs: told as dense,
        which constrained domination never compares, since it is infeasible)."""
        if not self.context.objectives:
            return accuracy
        return [accuracy, *(self.context.cost_fractions(trial) or [1.0] * len(self.context.objectives))]

    def _close(self, live: optuna.Trial, result: _Result) -> None:
        for name, value in (result.constraints or {}).items():
            live.set_constraint(name, value)
        if result.state == TrialState.COMPLETE:
            self.study.tell(live, result.value)
        else:
            self.study.tell(live, state=result.state)

    @property
    def n_trials(self) -> int:
        """Finished trials in the in-memory study (asked here, told by warm start, duplicates)."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class TPESearcher(OptunaSearcher):
    """Multivariate TPE with the constant liar (batches of asks do not collapse onto one point)."""

    name = "tpe"
    infeasible = "pruned"

    def make_sampler(self) -> BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.context.seed, multivariate=True, constant_liar=True, n_startup_trials=8
        )


class NSGA2Searcher(OptunaSearcher):
    """NSGA-II with constrained domination: a genetic algorithm on accuracy alone under the budget,
    or with ``--objectives`` on accuracy and costs together (non-dominated sorting and crowding).

    The population is small (8) so that a search of a few dozen trials sees several generations.
    """

    name = "nsga2"
    infeasible = "constrained"
    # One strong individual in a population of 8 pulls the next generations around itself: on the
    # toy the start took the mean gap from 0.031 to 0.038 before the fill to the budget, and gains
    # nothing with it (0.0078 both; 8 seeds, 30 trials; benchmarks/sampler_options_toy.py
    # --option starts_uniform).
    starts_uniform = False
    population_size: ClassVar[int] = 8

    def make_sampler(self) -> BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=self.context.seed, population_size=self.population_size)

    def _warm_system_attrs(self, result: _Result) -> dict[str, Any]:
        # NSGA-II only reads trials tagged with a generation (a private key of Optuna's GA base);
        # warm-start trials join generation 0 so that the first parents are chosen among them.
        if result.state != TrialState.COMPLETE:
            return {}
        return {optuna.samplers.NSGAIISampler._get_generation_key(): 0}

    def _adopt(self, live: optuna.Trial) -> None:
        # Optuna skips the sampler for a trial whose params are all fixed, and NSGA-II only counts
        # trials tagged with a generation: a filled child takes its place in the current one.
        frozen = self.study.get_trials(deepcopy=False)[live.number]
        self.study.sampler.get_trial_generation(self.study, frozen)


class GPSearcher(OptunaSearcher):
    """Gaussian-process Bayesian optimisation; constraints get their own GP (constrained EI)."""

    name = "gp"
    infeasible = "constrained"
    # Each screened proposal joins the GP's data, and an ask's cost grows with it: on ResNet-20 at
    # 0.3 of dense latency, where nearly every proposal is estimated over budget, 50 screened asks
    # per policy grew from 7-8 s to 75-99 s per requested policy within 12 policies (two runs).
    # Four screened asks, then a draw from the feasible box (which the GP is told too), keep it
    # at about two seconds (median 1.9 s over 40 policies; benchmarks/sampler_asks.py).
    max_screened = 4

    def make_sampler(self) -> BaseSampler:
        return optuna.samplers.GPSampler(seed=self.context.seed, n_startup_trials=8)


class CmaEsSearcher(OptunaSearcher):
    """CMA-ES on the ratio grid (rounded); the budget enters as a penalty.

    Plain CMA-ES beat CMA-ES with margin on the toy problem (mean gap to the optimum 0.024
    against 0.032 over 15 seeds at 40 trials), so the margin is off.

    A warm start of at least ten told trials initialises the search distribution from the best
    of them (WS-CMA-ES, ``source_trials``); otherwise it starts at the centre of the space.
    """

    name = "cmaes"
    multi_objective = False  # CmaEsSampler optimises one objective
    infeasible = "penalty"

    def make_sampler(self) -> BaseSampler:
        source = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return optuna.samplers.CmaEsSampler(
            seed=self.context.seed,
            source_trials=list(source) if len(source) >= 10 else None,
            warn_independent_sampling=False,
        )


class QMCSearcher(OptunaSearcher):
    """Scrambled Sobol points: space-filling and seeded, but it never learns from results."""

    name = "qmc"
    infeasible = "pruned"
    starts_uniform = False  # a space-filling design, not a learner: nothing to start from

    def make_sampler(self) -> BaseSampler:
        return optuna.samplers.QMCSampler(seed=self.context.seed, scramble=True, warn_independent_sampling=False)


OPTUNA_SEARCHERS: dict[str, type[OptunaSearcher]] = {
    cls.name: cls for cls in (TPESearcher, NSGA2Searcher, GPSearcher, CmaEsSearcher, QMCSearcher)
}
