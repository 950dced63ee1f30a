"""The command line as a user meets it: a tiny end-to-end search, apply, show, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import optuna
import pytest
import torch
import yaml

from autoprune.cli import main

TINY = ["--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2", "--trials", "3",
        "--fidelity", "kd:3", "--final-steps", "3", "--latency-batch", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    code = main(["search", "--target", "macs", "--budget", "0.6", *TINY, "--run-dir", str(run_dir), "--cache-dir", cache])
    assert code == 0
    return run_dir


def test_run_directory_holds_everything(run):
    for name in ("study.db", "policy.yaml", "model.pt", "report.md", "pareto.png", "widths.png", "summary.json", "settings.yaml"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["within_budget"]
    assert summary["scored"] == 3
    assert "batch 2" in summary["cost_settings"] and "16x16" in summary["cost_settings"]
    report = (run / "report.md").read_text()
    assert "Pareto front" in report and "Kept width" in report


def test_study_readable_by_optuna_and_named_after_the_run(run):
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{run / 'study.db'}")
    scored = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(scored) >= 4  # three search trials and the final one
    for t in scored:
        assert {"macs", "params", "searcher", "fidelity", "seed", "policy"} <= set(t.user_attrs)
        assert "budget" in t.constraints
    assert any(t.user_attrs["fidelity"] == "final" for t in scored)


def test_apply_reproduces_the_exported_widths(run, cache, tmp_path):
    out = tmp_path / "applied.pt"
    # widths only: apply's default fine-tune (600 steps) is checked in test_export.py
    assert main(["apply", "--policy", str(run / "policy.yaml"), "--out", str(out), "--cache-dir", cache,
                 "--finetune-steps", "0"]) == 0
    applied = torch.load(out, weights_only=True)
    exported = torch.load(run / "model.pt", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in applied["state_dict"].items()}
    assert shapes == {k: tuple(v.shape) for k, v in exported["state_dict"].items()}


def test_show_prints_the_front(run, capsys):
    assert main(["show", str(run)]) == 0
    assert "Pareto front" in capsys.readouterr().out


def test_resume_completes_the_total_it_is_given(run, cache):
    # --trials is the total the study holds: 3 are scored, so --trials 4 scores one more; every
    # other setting comes from the run directory's settings.yaml
    code = main(["search", "--run-dir", str(run), "--resume", "--trials", "4"])
    assert code == 0
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{run / 'study.db'}")
    assert sum(t.user_attrs.get("fidelity") == "kd:3" for t in study.trials) == 4
    assert json.loads((run / "summary.json").read_text())["scored"] == 4


def test_policy_for_another_architecture(run, cache, tmp_path, capsys):
    doc = yaml.safe_load((run / "policy.yaml").read_text())
    doc["fingerprint"] = "ffffffffffffffff"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["apply", "--policy", str(bad), "--out", str(tmp_path / "x.pt"), "--cache-dir", cache]) == 2
    assert "another architecture" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget", "0"], "must be positive"),
        (["--budget", "-1"], "not a number"),
        (["--budget", "1.0"], "must be below 1"),
        (["--target", "energy"], "unknown target"),
        (["--searcher", "nope"], "unknown searcher"),
        (["--model", "no_such_module_xyz:build"], "no_such_module_xyz"),
        (["--checkpoint", "/nonexistent/w.pt"], "w.pt"),
        (["--space", "/nonexistent/space.yaml"], "does not exist"),
        (["--study", "/nonexistent/study.yaml"], "does not exist"),
        (["--budget", "0.0001"], "cannot be met"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, cache, tmp_path, capsys):
    base = ["search", "--target", "macs", "--budget", "0.5", *TINY, "--run-dir", str(tmp_path / "r"), "--cache-dir", cache]
    code = main(base + args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0 or err.strip().splitlines()[-1].startswith("error:")


def test_corrupt_checkpoint_and_broken_study_recipe(cache, tmp_path, capsys):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"garbage")
    base = ["search", "--target", "macs", "--budget", "0.5", *TINY, "--run-dir", str(tmp_path / "r"), "--cache-dir", cache]
    assert main(base + ["--checkpoint", str(ckpt)]) == 2
    recipe = tmp_path / "study.yaml"
    recipe.write_text("target: macs\nbudgte: 0.5\n")
    assert main(["search", "--study", str(recipe)]) == 2
    assert "budgte" in capsys.readouterr().err


def test_knapsack_scan_probes_are_cheap_and_do_not_use_up_the_trials(cache, tmp_path):
    run_dir = tmp_path / "knapsack"
    code = main(["search", "--target", "macs", "--budget", "0.6", *TINY, "--searcher", "knapsack",
                 "--run-dir", str(run_dir), "--cache-dir", cache])
    assert code == 0
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    fidelities = [t.user_attrs.get("fidelity") for t in study.trials]
    probes = fidelities.count("bn")
    assert probes == 1 + 12 * 2  # dense, then each of the 12 slots at 2 ratios
    assert fidelities.count("kd:3") == 3  # the trial budget is spent on solutions
    assert json.loads((run_dir / "summary.json").read_text())["final"]["within_budget"]


def test_searchers_lists_each_with_its_family_and_whether_it_is_a_baseline(capsys):
    from autoprune.searchers import searcher_names

    assert main(["searchers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["searcher", "family", "baseline"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(searcher_names()) <= set(rows)
    baseline = {name: rows[name][lines[0].index("baseline"):].split()[0] for name in searcher_names()}
    assert {n for n, v in baseline.items() if v == "yes"} == {"random", "uniform", "global"}
    assert set(baseline.values()) == {"yes", "no"}
    assert "Optuna sampler" in rows["tpe"] and "knapsack" in rows["knapsack"]
    assert "evolutionary" in rows["emo"] and "reinforcement learning" in rows["amc"]
    assert main(["searchers", "--names"]) == 0
    assert "random" in capsys.readouterr().out.split()
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("autoprune 0.")


def test_search_help_groups_the_flags_and_says_each_default_once(capsys, monkeypatch):
    from autoprune.cli import GROUPS
    from autoprune.settings import FIELDS

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80  # the examples and description too
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(FIELDS)  # every setting in exactly one group
    for title in ("target and budget:", "model and data:", "search:", "scoring:", "execution:", "output and storage:"):
        assert f"\n{title}\n" in out
    assert "examples:\n  autoprune search" in out
    assert "[default:" not in out and "None" not in out
    blocks = re.split(r"\n  (?=--)", out.split("target and budget:")[1].split("examples:")[0])
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        block = next(b for b in blocks if b.startswith(flag + " ") or b.startswith(flag + "\n"))
        assert block.count("(default:") == (0 if name == "resume" else 1), block
    words = " ".join(out.split())
    assert "(default: the run directory's name" in words and "(default: the data's)" in words


@pytest.mark.parametrize(
    "args,message",
    [
        (["--searcher", "tpee"], "unknown searcher 'tpee'"),
        (["--searcher", "portfolio:tpe,nope"], "unknown member nope"),
        (["--agent", "ppo"], "--agent must be one of"),
        (["--executor", "slurm"], "--executor must be one of"),
        (["--criterion", "l1"], "--criterion must be one of"),
        (["--target", "energy"], "unknown target"),
        (["--granularity", "layer"], "--granularity must be one of"),
        (["--fidelity", "kd:x"], "unknown fidelity"),
        (["--rungs", "kd:30,bn"], "more steps than the one before"),
        (["--space", "cifar_resnett"], "no search space 'cifar_resnett'"),
        (["--model", "resnet200"], "unknown model 'resnet200'"),
        (["--model", "torchvision:resnet181"], "no model 'resnet181'"),
        (["--data", "digitz"], "unknown data spec 'digitz'"),
        (["--data", "cifar10"], "needs a directory"),
        (["--budget", "4ms"], "budget unit must be K, M or G"),
    ],
)
def test_unknown_names_are_refused_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    import autoprune.pipeline

    def no_work(*_a, **_k):
        raise AssertionError("work started before the names were checked")

    monkeypatch.setattr(autoprune.pipeline, "build_problem", no_work)
    monkeypatch.setattr(autoprune.pipeline, "preflight", no_work)
    code = main(["search", "--target", "macs", "--run-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_python_settings_refuse_unknown_names_too():
    from autoprune.errors import UserError
    from autoprune.settings import SearchSettings

    with pytest.raises(UserError, match="SearchSettings: key 'searcher': unknown searcher 'tpee'"):
        SearchSettings(searcher="tpee")
    live = SearchSettings(searcher="portfolio:tpe,knapsack", model="live:Net", data="live:datasets(3+1+1)")
    assert live.searcher == "portfolio:tpe,knapsack"


def _piped(argv: list[str]) -> subprocess.CompletedProcess:
    """``autoprune <argv>`` in a subprocess with stdout and stderr piped, as a script or a log sees it."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "FORCE_TERMINAL")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "autoprune.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_typo_leaves_nothing_behind_and_piped_output_reads_well(cache, tmp_path):
    run_dir = tmp_path / "piped"
    base = ["search", "--target", "macs", "--budget", "0.6", *TINY, "--run-dir", str(run_dir), "--cache-dir", cache]
    typo = _piped([*base, "--searcher", "tpee"])
    assert typo.returncode == 2 and typo.stderr.startswith("error:") and typo.stderr.count("\n") == 1, typo.stderr
    assert not run_dir.exists()
    done = _piped([*base, "--searcher", "random"])  # the corrected command, same --run-dir
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert "…" not in done.stderr and "…" not in done.stdout  # nothing cut to fit 80 columns
    # the long messages each stay on one line (rich would hard-wrap them at 80 columns)
    assert any(line.startswith("dense resnet20:width=4: val ") and line.endswith(")") and "params" in line for line in lines)
    assert any(line.startswith("budget: macs <= ") and line.endswith(" policies") for line in lines)
    progress = [line for line in lines if line.startswith("trial ")]
    assert len(progress) >= 3 and all("elapsed" in line and "scored " in line for line in progress), progress
    assert any("scored 3/3" in line for line in progress)
    assert "search: 3 trials to score" in lines
    study = optuna.load_study(study_name="piped", storage=f"sqlite:///{run_dir / 'study.db'}")
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["reason"].startswith(("rejected: over budget", "failed: "))


def test_policy_provenance_is_typed_and_absolute(run):
    text = (run / "policy.yaml").read_text()
    assert "_CachedStorage" not in text and "channels REMOVED" in text
    prov = yaml.safe_load(text)["provenance"]
    assert prov["budget"] == 0.6 and isinstance(prov["limit"], float)
    assert prov["storage"] == f"sqlite:///{(run / 'study.db').resolve()}"
    assert prov["run_dir"] == str(run.resolve()) and prov["study"] == "run"


def test_piped_progress_is_one_plain_line_per_trial():
    import io

    from autoprune.progress import SearchProgress, make_console
    from autoprune.space import Policy
    from autoprune.study import Trial

    buffer = io.StringIO()
    console = make_console(file=buffer)
    assert console.soft_wrap and not console.is_terminal
    policy = Policy.from_dict("f", {})
    with SearchProgress(console, 2, "macs") as progress:
        progress.update(Trial(0, policy, "rejected", {"macs": 6.2e6}, fidelity="kd:3", constraint=0.04), None)
        progress.update(Trial(1, policy, "complete", {"macs": 5.1e6, "val_accuracy": 0.91}, fidelity="kd:3",
                              constraint=-0.1), None)
        console.print("x " * 150)  # a long message stays on one line
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "search: 2 trials to score"
    assert lines[1].startswith("trial 0 [kd:3]: rejected (MACs 6.20M, 4.0% over the limit); scored 0/2")
    assert lines[2].startswith("trial 1 [kd:3]: val acc 0.9100 (MACs 5.10M, within budget); scored 1/2, best feasible 0.9100")
    assert "left" in lines[2] and len(lines) == 4


def test_a_recipe_may_leave_the_budgets_target_to_the_command_line(tmp_path):
    from autoprune.cli import parser, resolve_settings

    recipe = tmp_path / "macs.yaml"
    recipe.write_text("budget: 150M\ntrials: 5\n")  # MACs units: valid only with --target macs
    args = parser().parse_args(["search", "--study", str(recipe), "--target", "macs", "--run-dir", str(tmp_path / "r")])
    settings = resolve_settings(args)
    assert (settings.budget, settings.target, settings.trials, settings.study_name) == ("150M", "macs", 5, "r")


def test_a_floor_read_over_the_budget_is_read_again_before_the_run_is_refused(cache, tmp_path, monkeypatch):
    """One biased paired reading of the most pruned policy (a busy spell) must not refuse the run."""
    import autoprune.pipeline
    from autoprune.settings import SearchSettings

    calls = []

    def first_biased(model, dense, settings, rounds=3):  # a biased first reading, then the true ratio
        calls.append(rounds)
        return (1.0, 0.99) if len(calls) == 1 else (1.0, 0.5)

    monkeypatch.setattr(autoprune.pipeline, "paired_latency", first_biased)
    logged: list[str] = []
    settings = SearchSettings(target="latency", budget="0.9", model="resnet20:width=4", image_size=16, dense_epochs=2,
                              latency_batch=2, latency_repeats=3, latency_warmup=1, seed=1, cache_dir=cache,
                              run_dir=str(tmp_path / "r"))
    problem = autoprune.pipeline.build_problem(settings, log=logged.append)
    assert calls == [3, 9]
    assert problem.floor == pytest.approx(0.5 * problem.dense["latency_ms"]) and problem.floor <= problem.limit
    assert any("reading it again" in line for line in logged)


def test_the_latency_table_is_built_before_the_search_loop_not_in_its_first_ask(cache, tmp_path, monkeypatch):
    """Profiling and calibrating the table takes seconds once per device: setup, not search time."""
    import autoprune.costs.lut
    import autoprune.pipeline
    from autoprune.settings import SearchSettings

    built = []
    real = autoprune.costs.lut.build_lut
    monkeypatch.setattr(autoprune.costs.lut, "build_lut", lambda *a, **k: built.append(1) or real(*a, **k))
    # the most pruned policy read at half the dense latency: a tiny model's real floor is noise
    monkeypatch.setattr(autoprune.pipeline, "paired_latency", lambda model, dense, settings, rounds=3: (1.0, 0.5))
    for target, budget in (("latency", "0.9"), ("macs", "0.6")):
        settings = SearchSettings(target=target, budget=budget, model="resnet20:width=4", image_size=16, dense_epochs=2,
                                  latency_batch=2, latency_repeats=3, latency_warmup=1, seed=1, cache_dir=cache,
                                  run_dir=str(tmp_path / target), searcher="random")
        problem = autoprune.pipeline.build_problem(settings, log=lambda line: None)
        built.clear()
        autoprune.pipeline.make_run_searcher(problem)
        assert built == ([1] if target == "latency" else [])


def test_the_latency_table_is_read_as_a_ratio_to_dense_for_a_fraction_budget(cache, tmp_path, monkeypatch):
    """The table was profiled at another time; this run's dense reading may be 30% off it on a
    busy machine. Read as a ratio to its own dense estimate, times this run's dense latency, the
    screen agrees with how trials are judged (paired ratios) before any trial has been measured."""
    import autoprune.pipeline
    from autoprune.settings import SearchSettings

    monkeypatch.setattr(autoprune.pipeline, "paired_latency", lambda model, dense, settings, rounds=3: (1.0, 0.5))
    settings = SearchSettings(target="latency", budget="0.9", model="resnet20:width=4", image_size=16, dense_epochs=2,
                              latency_batch=2, latency_repeats=3, latency_warmup=1, seed=1, cache_dir=cache,
                              run_dir=str(tmp_path / "r"), searcher="random")
    problem = autoprune.pipeline.build_problem(settings, log=lambda line: None)
    busy = dataclasses.replace(problem, dense={**problem.dense, "latency_ms": 1.3 * problem.dense["latency_ms"]})
    quiet_estimate, busy_estimate = (autoprune.pipeline.search_context(p).estimate for p in (problem, busy))
    space = problem.space
    assert quiet_estimate(space.dense()) == pytest.approx(problem.dense["latency_ms"])
    assert busy_estimate(space.dense()) == pytest.approx(busy.dense["latency_ms"])
    pruned = space.most_pruned()
    assert busy_estimate(pruned) / busy_estimate(space.dense()) == pytest.approx(
        quiet_estimate(pruned) / quiet_estimate(space.dense()))
