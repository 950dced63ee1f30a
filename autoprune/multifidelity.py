"""Multi-fidelity search: score many candidates cheaply, fine-tune only the promising ones.

Successive halving over fine-tune steps (``--rungs bn,kd:30,kd:100``, ``eta = 3``):

1. The searcher proposes ``trials`` policies, each scored at the first (cheapest) rung, and learns
   from those scores only: every policy has one, on one scale, so its model compares like with
   like (a ``kd:100`` accuracy is not comparable with an adaptive-BN one).
2. Then, rung by rung, the best ``ceil(n / eta)`` of the ``n`` policies scored at a rung, ranked
   by accuracy within that rung (ties: cheaper first), are scored again at the next rung. A
   promoted policy that measures over budget there (latency noise) is replaced by the next one.
3. The chosen policy comes from the highest rung reached (``top_rung_trials``).

Every (policy, rung) evaluation is its own trial in the ledger, with its fidelity recorded, and
each rung trains afresh from the pruned dense weights, so a rung's accuracy is exactly what a
single-fidelity run at that fidelity would give. Promotion waits until the first rung is done
(one synchronous bracket) rather than promoting as results arrive (ASHA, Optuna's
``SuccessiveHalvingPruner``): the searcher does not learn from higher rungs, so early promotion
gains nothing, and ASHA promotes the very first trial of each rung unconditionally. See
``docs/searchers.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from autoprune.errors import UserError
from autoprune.evaluators import parse_fidelity
from autoprune.runner import LoopConfig, LoopResult, run_loop
from autoprune.searchers import Searcher, policy_key
from autoprune.space import Policy
from autoprune.study import COMPLETE, FAILED, REJECTED, Ledger, Trial
from autoprune.task import TaskRecipe
from autoprune.trial import TrialOutcome, TrialRequest


@dataclass(frozen=True)
class Rungs:
    """Fidelities from cheapest to most expensive, and the halving factor ``eta``."""

    fidelities: tuple[str, ...]
    eta: int = 3

    @property
    def base(self) -> str:
        return self.fidelities[0]

    def __len__(self) -> int:
        return len(self.fidelities)


def parse_rungs(text: str, eta: int = 3) -> Rungs:
    """``"bn,kd:30,kd:100"`` -> Rungs; raises a UserError naming the bad part."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if len(parts) < 2:
        raise UserError(f"--rungs {text!r}: give at least two fidelities, cheapest first, e.g. bn,kd:30,kd:100")
    steps = []
    for part in parts:
        if part == "final":
            raise UserError("--rungs: 'final' is not a search rung (the chosen policy gets --final-steps anyway)")
        steps.append(parse_fidelity(part).steps)
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise UserError(f"--rungs {text!r}: each rung must fine-tune for more steps than the one before")
    if eta < 2:
        raise UserError(f"the halving factor eta must be at least 2, got {eta}")
    return Rungs(parts, eta)


def planned_trials(base_trials: int, rungs: Rungs) -> int:
    """Scored trials a search plans in all: ``n`` at the first rung, ``ceil(n / eta)`` at each next."""
    total, n = 0, base_trials
    for _ in rungs.fidelities:
        total += n
        n = math.ceil(n / rungs.eta)
    return total


def ranked(trials: Sequence[Trial], fidelity: str) -> list[Trial]:
    """Scored trials at ``fidelity``, one per policy, best first (ties: cheaper, then earlier)."""
    scored = [t for t in trials if t.fidelity == fidelity and t.scored]
    scored.sort(key=lambda t: (-(t.accuracy or 0.0), t.constraint or 0.0, t.number))
    out, seen = [], set()
    for t in scored:
        key = policy_key(t.policy)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def promotions(trials: Sequence[Trial], rungs: Rungs, rung: int) -> tuple[int, list[Policy]]:
    """How many more policies rung ``rung + 1`` needs scored, and the candidates in order.

    The quota is ``ceil(n / eta)`` of the ``n`` policies scored at ``rung``, less those already
    scored at the next rung (on resume). Candidates are the policies of ``rung``, best first,
    that the next rung has not seen yet.
    """
    below = ranked(trials, rungs.fidelities[rung])
    nxt = rungs.fidelities[rung + 1]
    # a promotion that failed (a killed run's trial, marked failed on resume) is tried again
    done = {policy_key(t.policy) for t in trials if t.fidelity == nxt and t.state != FAILED}
    scored_next = {policy_key(t.policy) for t in ranked(trials, nxt)}
    quota = math.ceil(len(below) / rungs.eta) - len(scored_next)
    candidates = [t.policy for t in below if policy_key(t.policy) not in done]
    return max(0, quota), candidates


def top_rung_trials(trials: Sequence[Trial], rungs: Rungs) -> list[Trial]:
    """The trials of the highest rung that has a scored, feasible trial (what the pick ranks)."""
    for fidelity in reversed(rungs.fidelities):
        at = [t for t in trials if t.fidelity == fidelity]
        if any(t.scored and t.feasible for t in at):
            return at
    return list(trials)


def replay_base(searcher: Searcher, ledger: Ledger, rungs: Rungs) -> int:
    """Tell the searcher the ledger's first-rung trials, and rejections at any fidelity (resume).

    A rejection is about the budget, not the fidelity, so it teaches the searcher wherever it
    happened; scores from other fidelities are on another scale and are left out.
    """
    told = 0
    for trial in ledger.trials():
        base = trial.fidelity == rungs.base and trial.state == COMPLETE
        if base or (trial.state == REJECTED and trial.fidelity != "final"):
            searcher.tell(trial)
            told += 1
    return told


class _PromotionQueue(Searcher):
    """Proposes a fixed list of policies in order; learns nothing (promotion is by rank)."""

    def __init__(self, policies: Sequence[Policy], name: str) -> None:
        super().__init__()
        self._queue = list(policies)
        self.name = name  # type: ignore[misc]  # trials keep the name of the search's searcher

    def _ask(self, n: int) -> list[Policy]:
        out, self._queue = self._queue[:n], self._queue[n:]
        return out


def run_multifidelity_loop(
    recipe: TaskRecipe,
    template: TrialRequest,
    searcher: Searcher,
    ledger: Ledger,
    executor,
    config: LoopConfig,
    rungs: Rungs,
    *,
    on_trial: Callable[[Trial, TrialOutcome | None], None] | None = None,
) -> LoopResult:
    """Search at the first rung with ``searcher`` (``config.trials`` scored), then promote.

    ``config.time_limit_s`` bounds the first rung only: the promotions that follow are bounded
    by the halving (``planned_trials``) and are what makes the pick worth having.
    """
    started = time.perf_counter()
    base = run_loop(recipe, replace(template, fidelity=rungs.base), searcher, ledger, executor, config, on_trial=on_trial)
    finished, outcomes = list(base.trials), list(base.outcomes)
    for rung in range(len(rungs) - 1):
        quota, candidates = promotions(ledger.trials(), rungs, rung)
        if quota == 0 or not candidates:
            continue
        queue = _PromotionQueue(candidates, searcher.name)
        queue.setup(searcher.context)
        phase = LoopConfig(trials=quota, batch=config.batch, max_proposals=len(candidates), seed=config.seed)
        result = run_loop(recipe, replace(template, fidelity=rungs.fidelities[rung + 1]), queue, ledger, executor,
                          phase, on_trial=on_trial)
        finished += result.trials
        outcomes += result.outcomes
    return LoopResult(tuple(finished), base.stopped, time.perf_counter() - started, tuple(outcomes))
