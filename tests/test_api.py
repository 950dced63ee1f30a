"""The Python API as a user meets it: the README's example, the same trials as the CLI, live
objects and hooks, and bad input refused in one line before any work."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import autoprune
from autoprune.cli import main
from autoprune.data.datasets import from_datasets
from autoprune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(image_size=16, trials=3, fidelity="kd:3", final_steps=3, latency_batch=2, seed=1)
TINY_FLAGS = ["--image-size", "16", "--trials", "3", "--fidelity", "kd:3", "--final-steps", "3",
              "--latency-batch", "2", "--seed", "1"]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## In Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_example_runs_as_written(tmp_path):
    (tmp_path / "example.py").write_text(readme_example())
    env = {**os.environ, "AUTOPRUNE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    test_accuracy = float(done.stdout.splitlines()[-1].split()[0])  # the example's own print
    assert test_accuracy > 0.8  # the dense net tests at about 0.92; half its MACs keep most of it
    run = tmp_path / "runs" / "digits-api"
    assert {"model.pt", "policy.yaml", "report.md", "summary.json", "study.db"} <= {p.name for p in run.iterdir()}
    assert (tmp_path / "pruned.onnx").stat().st_size > 0


def search_trials(study):
    return [(t.number, t.params, t.values, t.user_attrs.get("fidelity")) for t in study.get_trials()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_the_cli_and_the_api_give_the_same_trials_for_the_same_seed(tmp_path, cache):
    import optuna

    from autoprune.task import TaskRecipe, load_task

    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    assert main(["search", "--target", "macs", "--budget", "0.6", "--model", "resnet20:width=4", "--dense-epochs", "2",
                 *TINY_FLAGS, "--run-dir", str(cli_dir), "--cache-dir", cache]) == 0
    # the same dense weights, handed over as a live model: the API's own path, not the CLI's
    dense = load_task(TaskRecipe(model="resnet20:width=4", data="digits", image_size=16, seed=1, cache_dir=cache,
                                 dense_epochs=2)).model
    result = autoprune.search(dense, "digits", target="macs", budget=0.6, run_dir=str(api_dir), cache_dir=cache,
                              verbose=False, **TINY)
    cli_study = optuna.load_study(study_name=None, storage=f"sqlite:///{cli_dir / 'study.db'}")
    assert search_trials(result.study) == search_trials(cli_study)
    assert [t.state.name for t in result.study.get_trials()] == ["COMPLETE"] * 4
    cli_summary = (cli_dir / "summary.json").read_text()
    assert f'"test_accuracy": {result.summary["final"]["test_accuracy"]}' in cli_summary
    # the result's model is the exported one: same outputs as the file reloaded
    images = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(result.model(images), autoprune.load(api_dir / "model.pt", dense_model=dense)(images))
    assert result.within_budget and result.exit_status == 0


def test_the_cli_search_is_the_apis_function(monkeypatch, tmp_path):
    from autoprune import search_run

    seen = []

    class Done:
        exit_status = 0

    monkeypatch.setattr(search_run, "run_search", lambda settings, console, command, **kw: seen.append(settings) or Done())
    assert main(["search", "--target", "macs", "--budget", "0.5", "--run-dir", str(tmp_path / "r")]) == 0
    assert len(seen) == 1 and seen[0].target == "macs"


def digits_datasets(n_train: int = 400):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images, labels = torch.tensor(x / 16, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y)
    return TensorDataset(images[:n_train], labels[:n_train]), TensorDataset(images[1500:], labels[1500:])


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_evaluate_and_finetune_hooks_score_every_trial(tmp_path):
    calls = {"evaluate": 0, "finetune": []}

    def evaluate(model):
        calls["evaluate"] += 1
        return 0.25

    def finetune(student, teacher, steps):
        assert student is not teacher and not teacher.training
        calls["finetune"].append(steps)

    original = small_net()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    result = autoprune.search(original, digits_datasets(), target="macs", budget=0.7, trials=2, fidelity="kd:4",
                              final_steps=6, evaluate=evaluate, finetune=finetune, run_dir=str(tmp_path / "r"),
                              verbose=False)
    assert result.study.study_name == "r"  # named after its run directory, as the CLI's are
    scored = [t for t in result.study.get_trials() if t.state.name == "COMPLETE"]
    assert {t.values[0] for t in scored} == {0.25}  # the user's score is what the search maximised
    assert calls["finetune"] == [4, 4, 6] and calls["evaluate"] >= 4  # dense, two trials, the final one
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())  # the user's model untouched
    # the process's long-lived objects are out of the collector's view once a trial has run, so the
    # full collection after each trial's pruning scans only what trials create (trial._freeze_long_lived)
    assert gc.get_freeze_count() > 0


def test_a_live_model_on_a_worker_executor_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="executor='inline' only"):
        autoprune.search(small_net(), digits_datasets(), target="macs", budget=0.5, executor="processes",
                         run_dir=str(tmp_path / "r"), verbose=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="unknown key 'trails'"):
        autoprune.search(small_net(), digits_datasets(), trails=3, verbose=False)


def test_a_model_that_does_not_fit_the_data_is_one_line(tmp_path):
    wrong = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(UserError, match="does not run on the data's images"):
        autoprune.search(wrong, digits_datasets(), target="macs", run_dir=str(tmp_path / "r"), verbose=False)


def test_datasets_become_splits_and_normalised_images_are_refused():
    train, test = digits_datasets(300)
    splits = from_datasets((train, test), seed=0)
    assert len(splits.train) + len(splits.val) == 300 and len(splits.test) == len(test)
    assert splits.train.images.dtype == torch.uint8 and splits.num_classes == 10
    again = from_datasets({"train": train, "val": test, "test": test})
    assert len(again.val) == len(test)
    normalised = TensorDataset(train.tensors[0] * 4 - 2, train.tensors[1])
    with pytest.raises(UserError, match="not \\[0, 1\\]; give un-normalised images"):
        from_datasets((normalised, test))
    with pytest.raises(UserError, match="keys train and test"):
        from_datasets({"train": train})


def test_apply_reapplies_a_policy_to_a_live_model(tmp_path):
    train, test = digits_datasets()
    result = autoprune.search(small_net(), (train, test), target="macs", budget=0.6, trials=2, fidelity="bn",
                              final_steps=2, run_dir=str(tmp_path / "r"), verbose=False)
    slimmed = autoprune.apply(small_net(), tmp_path / "r" / "policy.yaml", (train, test), finetune_steps=0)

    def widths(model):
        return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

    assert widths(slimmed) == widths(result.model) and widths(slimmed) != [8, 16]
