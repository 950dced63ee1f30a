"""The ledger: Optuna reads every trial with its attributes; resume rules."""

from __future__ import annotations

import optuna
import pytest
import torch

from autoprune.errors import UserError
from autoprune.models.cifar_resnet import resnet20
from autoprune.space import SearchSpace
from autoprune.study import COMPLETE, REJECTED, Ledger


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_model(resnet20(in_channels=1, width=4), torch.zeros(1, 1, 8, 8))


def test_trials_round_trip_through_optuna(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = Ledger.open(space, storage=storage, study_name="s", resume=False, attrs={"target": "macs"})
    a = ledger.start(space.uniform(0.2), searcher="random", fidelity="kd:10")
    ledger.annotate(a, seed=11)
    ledger.finish(a, {"val_accuracy": 0.9, "macs": 5.0, "latency_ms": 1.5}, constraint=-0.2, rejected=False)
    b = ledger.start(space.uniform(0.0), searcher="random", fidelity="kd:10")
    ledger.finish(b, {"macs": 9.0}, constraint=0.4, rejected=True)

    study = optuna.load_study(study_name="s", storage=storage)
    assert study.metric_names == ["val_accuracy"]
    first, second = study.trials
    assert first.value == pytest.approx(0.9) and first.user_attrs["macs"] == 5.0
    assert first.user_attrs["searcher"] == "random" and first.user_attrs["seed"] == 11
    assert first.constraints == {"budget": pytest.approx(-0.2)}
    assert set(first.params) == {v.name for v in space.variables}
    assert second.state == optuna.trial.TrialState.PRUNED

    trials = ledger.trials()
    assert [t.state for t in trials] == [COMPLETE, REJECTED]
    assert trials[0].feasible and not trials[1].feasible
    assert trials[0].policy == space.uniform(0.2)


def test_resume_rules(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    Ledger.open(space, storage=storage, study_name="s", resume=False)
    with pytest.raises(UserError, match="already exists"):
        Ledger.open(space, storage=storage, study_name="s", resume=False)
    assert Ledger.open(space, storage=storage, study_name="s", resume=True).study.study_name == "s"
    with pytest.raises(UserError, match="no study"):
        Ledger.open(space, storage=storage, study_name="other", resume=True)
    other = SearchSpace.from_model(resnet20(in_channels=1, width=8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserError, match="another architecture"):
        Ledger.open(other, storage=storage, study_name="s", resume=True)


def test_interrupted_trials_are_failed_not_lost(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = Ledger.open(space, storage=storage, study_name="s", resume=False)
    done = ledger.start(space.uniform(0.5), searcher="random", fidelity="bn")
    ledger.finish(done, {"val_accuracy": 0.5}, constraint=-0.1, rejected=False)
    ledger.start(space.uniform(0.6), searcher="random", fidelity="bn")
    ledger.fail_running("interrupted")
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
