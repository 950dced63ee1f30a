"""What the ledger shows in Optuna's own tools: why a trial was rejected or failed, which study a
run uses, and the storage a policy records."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml

from autoprune.errors import UserError
from autoprune.models.cifar_resnet import resnet20
from autoprune.policy_io import budget_value, load_policy, save_policy
from autoprune.settings import SearchSettings, resolve_run
from autoprune.space import SearchSpace
from autoprune.storage import run_study_name, storage_url
from autoprune.study import Ledger, rejection_reason

MACS_ATTRS = {"target": "macs", "budget": "0.5", "limit": 50e6, "metric": "macs", "dense": {"macs": 100e6}}


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_model(resnet20(in_channels=1, width=4), torch.zeros(1, 1, 8, 8))


def test_rejected_and_failed_trials_carry_a_readable_reason(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = Ledger.open(space, storage=storage, study_name="s", resume=False, attrs=MACS_ATTRS)
    over = ledger.start(space.uniform(0.1), searcher="random", fidelity="kd:10")
    ledger.finish(over, {"macs": 52e6}, constraint=0.04, rejected=True)
    ok = ledger.start(space.uniform(0.5), searcher="random", fidelity="kd:10")
    ledger.finish(ok, {"val_accuracy": 0.9, "macs": 30e6}, constraint=-0.4, rejected=False)
    broken = ledger.start(space.uniform(0.3), searcher="random", fidelity="kd:10")
    ledger.fail(broken, "RuntimeError: shapes do not match\nTraceback ...")

    rejected, scored, failed = optuna.load_study(study_name="s", storage=storage).trials
    assert rejected.state == optuna.trial.TrialState.PRUNED
    assert rejected.user_attrs["reason"] == "rejected: over budget, 0.520 of dense > 0.5 (52.00M MACs against 50.00M)"
    assert "reason" not in scored.user_attrs
    assert failed.user_attrs["reason"] == "failed: RuntimeError: shapes do not match"
    assert "Traceback" in failed.user_attrs["error"]  # the whole error stays where it was


def test_reasons_in_the_budgets_own_terms():
    latency = {"target": "latency", "budget": "4ms", "limit": 4.0, "metric": "latency_ms", "dense": {"latency_ms": 8.0}}
    assert rejection_reason(0.05, latency) == "rejected: over budget, 4.20 ms against 4.00 ms (0.525 of dense)"
    # just over the fraction: enough decimals to read above it
    assert rejection_reason(0.0004, MACS_ATTRS).startswith("rejected: over budget, 0.5002 of dense > 0.5")
    assert rejection_reason(0.1, {}) == "rejected: over budget, 1.100 of the limit > 1"


def test_the_study_is_named_after_the_run_directory(tmp_path):
    run = tmp_path / "macs-0.5-tpe-1"
    settings = resolve_run(SearchSettings(run_dir=str(run)))
    assert settings.study_name == "macs-0.5-tpe-1"
    assert resolve_run(SearchSettings(run_dir=str(run), study_name="mine")).study_name == "mine"
    fresh = resolve_run(SearchSettings(target="macs"))
    assert fresh.run_dir is not None and fresh.study_name == Path(fresh.run_dir).name
    assert fresh.run_dir.startswith("runs/macs-0.5-tpe-")


def test_resume_finds_the_study_of_a_run_made_before_studies_were_named(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    storage = f"sqlite:///{run / 'study.db'}"
    optuna.create_study(study_name="autoprune", storage=storage)  # how every run was named before
    assert run_study_name(run, None, resume=True) == "autoprune"
    assert resolve_run(SearchSettings(run_dir=str(run), resume=True)).study_name == "autoprune"
    optuna.create_study(study_name="old-run", storage=storage)  # the run's own name wins
    assert run_study_name(run, None, resume=True) == "old-run"
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=shared)
    with pytest.raises(UserError, match="holds 2 studies .* --study-name"):
        run_study_name(tmp_path / "c", shared, resume=True)
    assert run_study_name(tmp_path / "c", shared, resume=False) == "c"


def test_a_run_started_on_a_relative_data_directory_resumes_from_its_absolute_settings(space, tmp_path, monkeypatch):
    """settings.yaml records the data directory absolute; the study must compare it as the same
    data (it refused `--resume` and `export` of any run started on `imagefolder:data`)."""
    from autoprune.pipeline import check_resumable, portable_settings, resume_values

    monkeypatch.chdir(tmp_path)
    started = SearchSettings(data="imagefolder:data", target="macs", study_name="s")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    Ledger.open(space, storage=storage, study_name="s", resume=False, attrs=resume_values(started))
    assert optuna.load_study(study_name="s", storage=storage).user_attrs["data"] == f"imagefolder:{tmp_path / 'data'}"
    resumed = portable_settings(started)  # what --resume reads back from settings.yaml
    check_resumable(storage, resumed)
    Ledger.open(space, storage=storage, study_name="s", resume=True, attrs=resume_values(resumed))
    legacy = f"sqlite:///{tmp_path / 'legacy.db'}"  # recorded as given, before studies recorded it absolute
    Ledger.open(space, storage=legacy, study_name="s", resume=False, attrs={**resume_values(started), "data": "imagefolder:data"})
    check_resumable(legacy, resumed)
    Ledger.open(space, storage=legacy, study_name="s", resume=True, attrs=resume_values(resumed))
    with pytest.raises(UserError, match="was started with data"):
        check_resumable(storage, started.replace(data="imagefolder:other"))


def test_storage_is_recorded_as_a_url_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url(None, Path("runs/r")) == f"sqlite:///{tmp_path / 'runs/r/study.db'}"
    assert storage_url("sqlite:///s.db", Path("r")) == f"sqlite:///{tmp_path / 's.db'}"
    assert storage_url("studies.journal", Path("r")) == f"journal:{tmp_path / 'studies.journal'}"
    assert storage_url("journal:j.log", Path("r")) == f"journal:{tmp_path / 'j.log'}"
    assert storage_url("postgresql://me:secret@db/optuna", Path("r")) == "postgresql://me:***@db/optuna"


def test_policy_yaml_is_typed_says_what_ratios_are_and_old_files_still_load(space, tmp_path):
    assert budget_value("0.5") == 0.5 and budget_value("4ms") == "4ms"
    path = save_policy(tmp_path / "policy.yaml", space.uniform(0.25), space, budget=budget_value("0.5"))
    text = path.read_text()
    assert "fraction of its channels REMOVED" in text.split("\nratios:")[0]
    assert yaml.safe_load(text)["provenance"]["budget"] == 0.5
    policy, prov = load_policy(path)
    assert policy == space.uniform(0.25) and prov["budget"] == 0.5
    old = {"format": "autoprune.policy/1", "fingerprint": space.fingerprint,
           "ratios": dict(space.uniform(0.25).items), "provenance": {"budget": "0.5", "storage": "_CachedStorage"}}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    policy, prov = load_policy(tmp_path / "old.yaml")
    assert policy == space.uniform(0.25) and prov["budget"] == "0.5"
