"""``--objectives``: a multi-objective ledger, the front as the result, and any point exported."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

import autoprune
from autoprune.cli import main
from autoprune.errors import UserError
from autoprune.front import pareto_front, parse_at, within
from autoprune.objectives import parse_objectives
from autoprune.settings import SearchSettings
from autoprune.space import Policy
from autoprune.study import COMPLETE, REJECTED, Trial

TINY = ["--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2", "--fidelity", "bn",
        "--final-steps", "3", "--latency-batch", "2", "--latency-repeats", "3", "--latency-warmup", "1", "--seed", "1"]


def _trial(number: int, acc: float | None, macs: float, latency: float, state: str = COMPLETE) -> Trial:
    metrics = {"macs": macs, "latency_ms": latency, **({"val_accuracy": acc} if acc is not None else {})}
    return Trial(number, Policy("fp", ()), state, metrics, searcher="tpe", fidelity="bn", constraint=-0.1)


def test_objectives_are_accuracy_and_at_least_one_cost():
    assert parse_objectives("accuracy,latency") == ("latency_ms",)
    assert parse_objectives("macs, accuracy, params") == ("macs", "params")
    for bad, words in (("latency", "must be accuracy"), ("accuracy", "must be accuracy"), ("accuracy,speed", "unknown"),
                       ("accuracy,macs,macs", "twice")):
        with pytest.raises(UserError, match=words):
            parse_objectives(bad)


def test_budget_none_and_single_objective_searchers_are_refused_in_one_line():
    with pytest.raises(UserError, match="needs --objectives|needs key 'objectives'"):
        SearchSettings(budget="none")
    with pytest.raises(UserError, match="knapsack searches one objective"):
        SearchSettings(objectives="accuracy,macs", searcher="knapsack")
    with pytest.raises(UserError, match="cmaes searches one objective"):
        SearchSettings(objectives="accuracy,macs", searcher="cmaes")
    settings = SearchSettings(objectives="accuracy,macs")
    assert settings.budget_text == "none" and settings.effective_target == "macs"
    assert SearchSettings(objectives="accuracy,macs", budget="0.5").effective_target == "latency"  # the target's
    assert SearchSettings().budget_text == "0.5"


def test_the_front_is_the_non_dominated_scored_trials_over_every_cost():
    trials = [_trial(0, 0.9, 10, 5), _trial(1, 0.8, 5, 6), _trial(2, 0.7, 6, 7), _trial(3, 0.95, 20, 9),
              _trial(4, None, 1, 1, REJECTED)]
    assert [t.number for t in pareto_front(trials, ["macs"])] == [1, 0, 3]  # 2 is beaten by 1
    assert [t.number for t in pareto_front(trials, ["macs", "latency_ms"])] == [1, 0, 3]
    assert [t.number for t in pareto_front(trials, ["latency_ms"])] == [0, 3]
    assert [t.number for t in within(trials, "macs", 10)] == [0, 1, 2]


def test_at_takes_a_metric_and_a_budget():
    assert parse_at("latency=3ms") == ("latency", "3ms")
    assert parse_at("macs=0.4") == ("macs", "0.4")
    for bad in ("latency", "speed=3", "latency=3M", "macs="):
        with pytest.raises(UserError, match="--at|unit"):
            parse_at(bad)


@pytest.fixture(scope="module")
def front_run(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    run_dir = tmp_path_factory.mktemp("runs") / "front"
    code = main(["search", "--objectives", "accuracy,macs", "--searcher", "random", "--trials", "5", *TINY,
                 "--run-dir", str(run_dir), "--cache-dir", cache])
    assert code == 0
    return run_dir, cache


def test_a_front_search_keeps_a_multi_objective_study_and_reports_its_front(front_run):
    run_dir, _ = front_run
    assert not (run_dir / "model.pt").exists()  # a front exports nothing by itself
    for name in ("study.db", "summary.json", "report.md", "front.png", "settings.yaml"):
        assert (run_dir / name).is_file(), name
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_accuracy", "macs"]  # what optuna-dashboard labels its front with
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 5 and all(t.values[1] == t.user_attrs["macs"] for t in done)
    summary = json.loads((run_dir / "summary.json").read_text())
    front = summary["front"]
    assert front and summary["budget"] == "none" and summary["objectives"] == ["val_accuracy", "macs"]
    best_trials = {t.number for t in study.best_trials}  # Optuna's own front agrees with ours
    assert {row["trial"] for row in front} == best_trials
    report = (run_dir / "report.md").read_text()
    assert f"--trial {front[0]['trial']}" in report and "front.png" in report
    assert 0.0 < summary["hypervolume"]["macs"] < 1.0


def test_export_finalises_a_point_of_the_front(front_run, tmp_path):
    run_dir, cache = front_run
    summary = json.loads((run_dir / "summary.json").read_text())
    point = summary["front"][0]
    out = tmp_path / "point.pt"
    assert main(["export", str(run_dir), "--trial", str(point["trial"]), "--out", str(out), "--cache-dir", cache]) == 0
    where = run_dir / "points" / f"trial-{point['trial']}"
    for name in ("model.pt", "policy.yaml", "summary.json", "report.md"):
        assert (where / name).is_file(), name
    final = json.loads((where / "summary.json").read_text())["final"]
    assert final["search_trial"] == point["trial"] and final["macs"] == pytest.approx(point["macs"])
    model = autoprune.load(out)
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)
    # --at: the most accurate scored trial within the bound, as a fraction of dense
    dense_macs = summary["dense"]["macs"]
    bound = sorted(row["macs"] for row in summary["front"])[len(summary["front"]) // 2] / dense_macs + 1e-6
    assert main(["export", str(run_dir), "--at", f"macs={bound:.6f}", "--format", "torch", "--out",
                 str(tmp_path / "at.pt"), "--cache-dir", cache]) == 0
    inside = [row for row in summary["front"] if row["macs"] <= bound * dense_macs]
    best = max(inside, key=lambda row: row["val_accuracy"])
    assert (run_dir / "points" / f"trial-{best['trial']}" / "model.pt").is_file()


def test_export_points_are_refused_in_one_line(front_run, capsys):
    run_dir, cache = front_run
    assert main(["export", str(run_dir), "--trial", "999", "--cache-dir", cache]) == 2
    assert "not a scored search trial" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--at", "macs=0.01", "--cache-dir", cache]) == 2
    assert "no scored trial" in capsys.readouterr().err
    assert main(["export", "--policy", "p.yaml", "--trial", "1"]) == 2


def test_resuming_with_other_objectives_is_refused(front_run, capsys):
    run_dir, cache = front_run
    code = main(["search", "--objectives", "accuracy,params", "--searcher", "random", "--trials", "6", *TINY,
                 "--run-dir", str(run_dir), "--cache-dir", cache, "--resume"])
    assert code == 2
    assert "objectives" in capsys.readouterr().err
