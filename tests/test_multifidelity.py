"""Multi-fidelity search: rung parsing, promotion by rank within a rung, the loop on a fake scorer."""

from __future__ import annotations

import zlib
from concurrent.futures import Future

import numpy as np
import optuna
import pytest

from autoprune.costs import CostSettings
from autoprune.errors import UserError
from autoprune.multifidelity import (
    Rungs,
    parse_rungs,
    planned_trials,
    promotions,
    ranked,
    replay_base,
    run_multifidelity_loop,
    top_rung_trials,
)
from autoprune.rules import SpaceRules
from autoprune.runner import LoopConfig
from autoprune.searchers import make_searcher, policy_key
from autoprune.study import COMPLETE, REJECTED, Ledger, Trial
from autoprune.testing.toy import ToyProblem
from autoprune.trial import ScoringConfig, TrialOutcome, TrialRequest

RUNGS = Rungs(("bn", "kd:10", "kd:30"))


def test_parse_rungs():
    assert parse_rungs("bn, kd:30,kd:100") == Rungs(("bn", "kd:30", "kd:100"), 3)
    for bad, match in [("bn", "at least two"), ("bn,final", "final"), ("kd:30,kd:10", "more steps"),
                       ("bn,kd:x", "unknown fidelity"), ("bn,bn", "more steps")]:
        with pytest.raises(UserError, match=match):
            parse_rungs(bad)


def test_planned_trials_halve_by_eta():
    assert planned_trials(24, Rungs(("bn", "kd:30", "kd:100"))) == 24 + 8 + 3
    assert planned_trials(10, Rungs(("bn", "kd:100"), eta=2)) == 10 + 5


def _synthetic(problem: ToyProblem, n: int) -> list[Trial]:
    space = problem.space()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        policy = space.sample(rng)
        out.append(Trial(i, policy, COMPLETE, {"val_accuracy": 0.1 * i}, fidelity="bn", constraint=-0.5))
    return out


def test_promotion_takes_the_top_third_of_a_rung_by_rank():
    trials = _synthetic(ToyProblem.make(seed=0), 9)
    quota, candidates = promotions(trials, RUNGS, 0)
    assert quota == 3
    assert candidates[:3] == [trials[8].policy, trials[7].policy, trials[6].policy]
    # one of them already scored at the next rung (a resumed study): two more, and not it again
    done = Trial(9, trials[8].policy, COMPLETE, {"val_accuracy": 0.9}, fidelity="kd:10", constraint=-0.5)
    quota, candidates = promotions(trials + [done], RUNGS, 0)
    assert quota == 2
    assert trials[8].policy not in candidates and candidates[0] == trials[7].policy


def test_ranking_ignores_rejected_and_other_rungs_and_breaks_ties_by_cost():
    trials = _synthetic(ToyProblem.make(seed=0), 4)
    tie = Trial(10, trials[0].policy, COMPLETE, {"val_accuracy": trials[3].accuracy}, fidelity="bn", constraint=-0.9)
    other = Trial(11, trials[1].policy, COMPLETE, {"val_accuracy": 5.0}, fidelity="kd:10", constraint=-0.5)
    over = Trial(12, trials[2].policy, REJECTED, {}, fidelity="bn", constraint=0.5)
    order = ranked(trials + [tie, other, over], "bn")
    assert [t.number for t in order] == [10, 3, 2, 1]  # policy of trial 0 once, at its best


def test_top_rung_trials_is_the_highest_rung_with_a_feasible_score():
    trials = _synthetic(ToyProblem.make(seed=0), 3)
    mid = Trial(5, trials[2].policy, COMPLETE, {"val_accuracy": 0.5}, fidelity="kd:10", constraint=-0.5)
    top_rejected = Trial(6, trials[2].policy, REJECTED, {}, fidelity="kd:30", constraint=0.1)
    assert top_rung_trials(trials + [mid, top_rejected], RUNGS) == [mid]
    assert top_rung_trials(trials, RUNGS) == trials


class FakeExecutor:
    """Scores a request in the calling thread with closed-form toy accuracy; no model is built.

    The cheap rung ranks policies by a noisy proxy, each longer fine-tune by a truer accuracy,
    so promotion by rank within a rung is visible. ``over_at`` lists (policy key, fidelity) pairs
    measured over budget there (latency noise).
    """

    def __init__(self, problem: ToyProblem, over_at: set | None = None) -> None:
        self.problem = problem
        self.over_at = over_at or set()
        self.requests: list[TrialRequest] = []

    def submit(self, fn, recipe, request: TrialRequest) -> Future:
        self.requests.append(request)
        p, policy = self.problem, request.policy
        constraint = p.cost(policy) / p.budget - 1.0
        if (policy_key(policy), request.fidelity) in self.over_at:
            constraint = 0.05
        steps = 0 if request.fidelity == "bn" else int(request.fidelity[3:])
        noise = (zlib.crc32(repr(policy_key(policy)).encode()) % 1000) / 1000 * 0.3 / (1 + steps)
        metrics = {"val_accuracy": p.accuracy(policy) - noise - 0.3 / (1 + steps), "macs": p.cost(policy)}
        future: Future = Future()
        future.set_result(TrialOutcome(request.number, metrics, constraint > 0, constraint, {}))
        return future


def _loop(problem: ToyProblem, trials: int, executor: FakeExecutor, rungs: Rungs = RUNGS):
    space = problem.space()
    ledger = Ledger(optuna.create_study(direction="maximize"), space)
    searcher = make_searcher("tpe")
    searcher.setup(problem.context(0))
    template = TrialRequest(
        number=-1, policy=space.dense(), seed=0, fidelity="bn", target="macs", limit=problem.budget,
        rules=SpaceRules(), cost=CostSettings((1, 8, 8)), scoring=ScoringConfig(),
    )
    result = run_multifidelity_loop(None, template, searcher, ledger, executor, LoopConfig(trials=trials), rungs)
    return ledger, searcher, result


def test_loop_scores_the_base_rung_then_promotes_by_rank():
    problem = ToyProblem.make(seed=5)
    ledger, searcher, result = _loop(problem, 12, FakeExecutor(problem))
    trials = ledger.trials()
    by_rung = {f: [t for t in trials if t.fidelity == f and t.scored] for f in RUNGS.fidelities}
    assert [len(by_rung[f]) for f in RUNGS.fidelities] == [12, 4, 2]
    best_bn = [t.policy for t in ranked(trials, "bn")[:4]]
    assert [t.policy for t in by_rung["kd:10"]] == best_bn
    best_kd10 = [t.policy for t in ranked(trials, "kd:10")[:2]]
    assert [t.policy for t in by_rung["kd:30"]] == best_kd10
    assert {t.fidelity for t in searcher.told} == {"bn"}  # the searcher learns from the base rung only
    assert {t.searcher for t in trials} == {"tpe"}
    assert len(result.trials) == len(trials)
    assert top_rung_trials(trials, RUNGS) == [t for t in trials if t.fidelity == "kd:30"]


def test_a_promoted_policy_over_budget_at_a_higher_rung_is_replaced_by_the_next():
    problem = ToyProblem.make(seed=5)
    _, _, first = _loop(problem, 9, FakeExecutor(problem))
    bn = ranked(list(first.trials), "bn")
    over = {(policy_key(bn[0].policy), "kd:10")}
    ledger, _, _ = _loop(problem, 9, FakeExecutor(problem, over_at=over))
    trials = ledger.trials()
    kd10 = [t for t in trials if t.fidelity == "kd:10"]
    assert [t.state for t in kd10] == [REJECTED, COMPLETE, COMPLETE, COMPLETE]
    assert [t.policy for t in kd10] == [t.policy for t in bn[:4]]


def test_replay_tells_the_base_rung_and_every_rejection():
    problem = ToyProblem.make(seed=5)
    ledger, _, _ = _loop(problem, 9, FakeExecutor(problem))
    fresh = make_searcher("tpe")
    fresh.setup(problem.context(0))
    told = replay_base(fresh, ledger, RUNGS)
    trials = ledger.trials()
    expected = [t for t in trials if (t.fidelity == "bn" and t.scored) or t.state == REJECTED]
    assert told == len(expected) == len(fresh.told)
    assert all(t.fidelity == "bn" or t.state == REJECTED for t in fresh.told)
    assert fresh.n_trials == told
