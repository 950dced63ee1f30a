"""The report a user reads first: a small real search, its report's headline against summary.json,
policy.yaml and the ledger (study.db), and the same trial numbers and counts in `autoprune show`."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import re
from importlib.metadata import version

import pytest
import torch
import yaml

import autoprune
from autoprune.cli import main
from autoprune.commands import load_trials
from autoprune.objectives import format_metric
from autoprune.pipeline import MIN_VAL_IMAGES

VAL_IMAGES = 200  # below MIN_VAL_IMAGES: the report must warn
SEARCH = ["search", "--target", "macs", "--budget", "0.5", "--model", "resnet20:width=4", "--image-size", "16",
          "--dense-epochs", "2", "--trials", "3", "--fidelity", "bn", "--final-steps", "5", "--latency-batch", "2",
          "--latency-repeats", "5", "--latency-warmup", "1", "--threads", "1", "--val-limit", str(VAL_IMAGES),
          "--seed", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, what the search printed) of one small seeded search."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    cache = tmp_path_factory.mktemp("cache")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([*SEARCH, "--run-dir", str(run_dir), "--cache-dir", str(cache)])
    assert code == 0, out.getvalue()
    return run_dir, " ".join(out.getvalue().split())


@pytest.fixture(scope="module")
def summary(run):
    return json.loads((run[0] / "summary.json").read_text())


@pytest.fixture(scope="module")
def ledger(run):
    return load_trials(f"sqlite:///{run[0] / 'study.db'}")


def _headline(run_dir) -> str:
    """The report's lines before its table, whitespace folded."""
    text = (run_dir / "report.md").read_text()
    return " ".join(text[:text.index("| model |")].split())


def test_the_headline_gives_speedup_and_size_as_summary_json_has_them(run, summary):
    head, fin, dense, speed = _headline(run[0]), summary["final"], summary["dense"], summary["speedup"]
    assert speed["macs"] == pytest.approx(dense["macs"] / fin["macs"])
    assert speed["params"] == pytest.approx(dense["params"] / fin["params"])
    assert speed["latency"] == pytest.approx(dense["latency_ms"] / fin["latency_ms"])
    assert f"**{speed['macs']:.2f}x fewer MACs**" in head and f"**{speed['params']:.2f}x fewer parameters**" in head
    faster = f"**{speed['latency']:.2f}x faster**" if speed["latency"] >= 1 else f"**{1 / speed['latency']:.2f}x slower**"
    assert faster in head
    assert f"({format_metric('latency_ms', fin['latency_ms'])} against {format_metric('latency_ms', dense['latency_ms'])})" in head


def test_the_headline_gives_points_lost_and_the_split_sizes(run, summary):
    head, fin, pts, splits = _headline(run[0]), summary["final"], summary["points"], summary["splits"]
    assert splits["val"] == VAL_IMAGES and splits["test"] > 0 and splits["train"] > 0
    assert pts["val"] == pytest.approx(100 * (fin["val_accuracy"] - summary["dense_val_accuracy"]))
    assert pts["test"] == pytest.approx(100 * (fin["test_accuracy"] - summary["dense_test_accuracy"]))
    assert f"**{pts['val']:+.2f} points** of validation accuracy" in head
    assert f"**{pts['test']:+.2f} points** of test accuracy" in head
    assert f"val split {VAL_IMAGES} images, one image is {100 / VAL_IMAGES:.2f} points" in head
    assert f"test split {splits['test']} images, one image is {100 / splits['test']:.2f} points" in head
    # the validation split is below MIN_VAL_IMAGES: a warning, recorded in summary.json too
    assert summary["small_val_split"] and summary["min_val_images"] == MIN_VAL_IMAGES
    assert f"**Warning:** the validation split has only {VAL_IMAGES} images (fewer than {MIN_VAL_IMAGES})" in head


def test_the_headline_names_the_machine_and_versions(run, summary):
    head = _headline(run[0])
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["versions"]["torch_pruning"] == version("torch-pruning")
    assert summary["versions"]["autoprune"] == autoprune.__version__
    assert summary["versions"]["python"] == platform.python_version()
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["cpu"]
    for text in (f"Measured on {summary['machine']['cpu']} ({summary['machine']['cores']} cores", f"torch {torch.__version__}",
                 f"torch-pruning {version('torch-pruning')}", f"autoprune {autoprune.__version__}",
                 f"Python {platform.python_version()}", summary["cost_settings"]):
        assert text in head, text


def test_figures_agree_with_the_ledger_and_the_policy_file(run, summary, ledger):
    fin = summary["final"]
    final = [t for t in ledger if t.fidelity == "final"]
    assert [t.number for t in final] == [fin["trial"]]
    assert final[0].metrics["parent_trial"] == fin["search_trial"]
    picked = next(t for t in ledger if t.number == fin["search_trial"])
    assert picked.fidelity == "bn" and fin["search_val_accuracy"] == pytest.approx(picked.accuracy)
    assert fin["val_accuracy"] == pytest.approx(final[0].accuracy)
    assert fin["test_accuracy"] == pytest.approx(final[0].metrics["test_accuracy"])
    assert fin["macs"] == final[0].metrics["macs"] == fin["verified_cost"]
    # one latency of the exported model: the export reloaded and re-measured, as policy.yaml has it;
    # the final fine-tune trial's own reading is kept apart
    exported = yaml.safe_load((run[0] / "policy.yaml").read_text())["provenance"]["metrics"]
    assert fin["latency_ms"] == pytest.approx(exported["latency_ms"])
    assert fin["trial_latency_ms"] == pytest.approx(final[0].metrics["latency_ms"])
    search = [t for t in ledger if t.fidelity != "final"]
    assert summary["trials"] == len(search)
    assert summary["scored"] == sum(t.scored for t in search) == 3
    assert summary["rejected"] == sum(t.state == "rejected" for t in search)


def test_trial_numbers_and_counts_are_the_same_in_log_report_and_show(run, summary, capsys):
    run_dir, log = run
    fin = summary["final"]
    report = " ".join((run_dir / "report.md").read_text().split())
    pick = f"final fine-tune (trial {fin['trial']}) of search trial {fin['search_trial']}"
    row = (f"| {pick} | {fin['val_accuracy']:.4f} | {fin['test_accuracy']:.4f} | {format_metric('macs', fin['macs'])} | "
           f"{format_metric('params', fin['params'])} | {format_metric('latency_ms', fin['latency_ms'])} |")
    assert row in report
    assert f"{summary['scored']} scored search trials ({summary['rejected']} rejected" in report
    assert f"best feasible: search trial {fin['search_trial']}" in log
    assert main(["show", str(run_dir)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"Pareto front over {summary['scored']} scored search trials" in shown
    assert f"{summary['scored']} scored search trials, {summary['rejected']} rejected" in shown
    assert re.search(rf"final fine-tune .*\(trial {fin['trial']}\) of .*search trial {fin['search_trial']}", shown)
    latency = f"{fin['latency_ms']:.2f}"
    assert latency in shown and latency in log


def test_the_plots_and_the_residual_slots(run, summary):
    run_dir = run[0]
    for name in ("pareto.png", "widths.png"):
        assert (run_dir / name).stat().st_size > 10_000, name
    # ResNet-20: the stem and the two shortcuts each set a stage's residual stream of four layers
    residual = summary["residual_slots"]
    assert residual == {
        "conv1": ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"],
        "layer2.0.shortcut.0": ["layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2", "layer2.2.conv2"],
        "layer3.0.shortcut.0": ["layer3.0.conv2", "layer3.0.shortcut.0", "layer3.1.conv2", "layer3.2.conv2"],
    }
    assert "| `conv1` |" in (run_dir / "report.md").read_text() and "`layer1.2.conv2`" in (run_dir / "report.md").read_text()


def test_a_latency_budget_relative_to_dense_reads_as_one_latency(run, summary, ledger, tmp_path):
    """The same run re-rendered as if its budget were 0.9 of dense latency: the table, the sentence
    and the plot's budget use the export's anchored reading, and the raw reading is named apart."""
    from autoprune.report import write_report

    fin = dict(summary["final"], latency_ratio=0.42, latency_ms_now=1.5, latency_ms=0.42 * summary["dense"]["latency_ms"])
    fin["verified_cost"] = fin["latency_ms"]
    relative = dict(summary, target="latency", metric="latency_ms", budget="0.9", limit=0.9 * summary["dense"]["latency_ms"],
                    final=fin, small_val_split=False, speedup={**summary["speedup"], "latency": 1 / 0.42})
    trials = [t for t in ledger if "latency_ms" in t.metrics or t.fidelity == "final"]
    dense_widths = {"conv1": 4}
    report = write_report(tmp_path, relative, trials, None, dense_widths, {"conv1": 2})
    text = " ".join(report.read_text().split())
    assert "**2.38x faster**" in text and "Warning" not in text
    assert f"| {format_metric('latency_ms', fin['latency_ms'])} |" in text
    assert "That is 0.420 (its ratio to the dense model timed alongside it)" in text and "the raw reading at export (`latency_ms_now`) was 1.50 ms" in text
    assert (tmp_path / "pareto.png").is_file() and (tmp_path / "widths.png").is_file()
