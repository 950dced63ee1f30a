"""``autoprune bench`` and ``autoprune train``: quick mode end to end on a tiny generated ImageFolder
tree, bad input, and the benchmark's numbers (hypervolume, trials to within 0.5 points) on
hand-made values."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

import autoprune.searchers as searchers_module
from autoprune.bench.command import bench_config, parse_overrides
from autoprune.bench.harness import RunResult
from autoprune.bench.metrics import (
    best_so_far,
    hypervolume,
    mean_curve,
    mean_sd,
    spearman,
    trials_to_within,
)
from autoprune.bench.tables import reference_accuracy, view_rows
from autoprune.bench.throughput import overhead_fraction
from autoprune.cli import main, parser
from autoprune.errors import UserError
from autoprune.searchers import Searcher, register

CLASSES = ("red", "green", "blue")


class BrokenSearcher(Searcher):
    """Fails on its first ask: the benchmark records the error and goes on."""

    name = "broken"

    def _ask(self, n):
        raise RuntimeError("this searcher always fails")


@contextlib.contextmanager
def registered_broken():
    register("broken", BrokenSearcher)
    try:
        yield
    finally:
        searchers_module._REGISTRY.pop("broken", None)


def make_tree(root, per_class: int = 8, test_per_class: int = 3) -> None:
    """A learnable ImageFolder tree: each class a noisy colour, 16 x 16 PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                img[..., c] += 180
                Image.fromarray(img).save(folder / f"{i:04d}.png")


# -- the numbers, on hand-made values ---------------------------------------------------------
def test_hypervolume_of_two_points_by_hand():
    # (acc, cost) -> (1 - acc, cost): (0.2, 0.5) and (0.5, 0.2); union of two boxes against (1, 1)
    assert hypervolume([(0.8, 0.5), (0.5, 0.2)]) == pytest.approx(0.8 * 0.5 + 0.5 * 0.8 - 0.5 * 0.5)


def test_hypervolume_ignores_dominated_and_out_of_box_points():
    base = hypervolume([(0.8, 0.5)])
    assert base == pytest.approx(0.8 * 0.5)
    assert hypervolume([(0.8, 0.5), (0.7, 0.6)]) == pytest.approx(base)  # dominated
    assert hypervolume([(0.8, 0.5), (0.9, 1.3)]) == pytest.approx(base)  # costs more than dense
    assert hypervolume([]) == 0.0


def test_best_so_far_skips_infeasible_trials():
    assert best_so_far([None, 0.5, 0.4, None, 0.7]) == [None, 0.5, 0.5, 0.5, 0.7]


def test_trials_to_within_half_a_point():
    curve = [None, 0.5, 0.5, 0.698, 0.7]
    assert trials_to_within(curve, 0.703) == 4  # 0.698 is exactly 0.5 points below
    assert trials_to_within(curve, 0.7041) == 5
    assert trials_to_within(curve, 0.71) is None
    assert trials_to_within([0.9], 0.9) == 1


def test_table_reports_trials_to_within_per_seed():
    runs = [RunResult("t", "trials", "a", 0, "s", "d", curve=[0.5, 0.9], limit=1.0, scored=2),
            RunResult("t", "trials", "a", 1, "s", "d", curve=[0.5, 0.6], limit=1.0, scored=2)]
    ref = reference_accuracy(runs)
    assert ref == 0.9
    row = view_rows(runs, ["a", "missing"], "macs", ref)
    assert len(row) == 1 and row[0][5] == "2, never"


def test_one_seed_is_given_without_a_spread_and_each_code_version_names_its_units():
    """A single seed has no standard deviation (not '± 0.00'); a report merged from several code
    versions says which searches each one ran."""
    from autoprune.bench.tables import code_note, paired_rows

    runs = [RunResult("t", view, "a", 0, "s", "d", final_test=0.8, hypervolume=0.4, code="aaa") for view in ("trials", "time")]
    runs += [RunResult("t", "trials", "a", 1, "s", "d", final_test=0.9, hypervolume=0.5, code="bbb"),
             RunResult("t", "trials", "uniform", 0, "s", "d", final_test=0.7, hypervolume=0.3, code="aaa")]
    rows = view_rows([r for r in runs if r.view == "trials"], ["a", "uniform"], "macs", None)
    assert rows[0][1] == "85.00 ± 7.07" and rows[0][4] == "0.4500 ± 0.0707"
    assert rows[1][1] == "70.00 (1 seed)" and rows[1][4] == "0.3000 (1 seed)"
    assert paired_rows([r for r in runs if r.view == "trials"], ["a", "uniform"])[0][1] == "+10.00 (1 seed)"
    (note, _) = code_note(runs)
    assert note.endswith("`aaa`: `a` seed 0, `uniform` seed 0; `bbb`: `a` seed 1.")
    assert code_note(runs[:2]) == ["Code behind these runs: `aaa`.", ""]


def test_merged_runs_plot_their_final_cost_against_their_own_limit():
    from autoprune.bench.plots import relative_cost

    # The same 0.3-of-dense budget, set from a dense latency of 27.7 ms in one bench, 22.2 in the next.
    first = RunResult("t", "trials", "a", 0, "s", "d", limit=0.3 * 27.7, final_cost=0.29 * 27.7)
    second = RunResult("t", "trials", "a", 1, "s", "d", limit=0.3 * 22.2, final_cost=0.31 * 22.2)
    assert relative_cost(first, 0.3 * 22.2, 22.2) == pytest.approx(0.29)
    assert relative_cost(second, 0.3 * 22.2, 22.2) == pytest.approx(0.31)
    absolute = RunResult("t", "trials", "a", 0, "s", "d", final_cost=5.0)  # no limit recorded
    assert relative_cost(absolute, 6.0, 20.0) == pytest.approx(0.25)
    # the table's cost column reads each run against its own limit too, not ms averaged across anchors
    assert view_rows([first, second], ["a"], "latency_ms", None)[0][2] == f"{(0.29 / 0.3 + 0.31 / 0.3) / 2:.3f}"


def test_cost_table_overhead_counts_every_worker():
    """Two trials at once: 60 s of wall time offer 120 worker-seconds; 114 s of fine-tune and
    evaluation in them leave 5% overhead (not the -90% that dividing by the wall time alone gives)."""
    from autoprune.bench.tables import cost_rows

    run = RunResult("t", "trials", "a", 0, "s", "d", scored=2, wall_s=60.0, finetune_s=110.0, evaluate_s=4.0)
    assert cost_rows([run], ["a"], workers=2)[0][-1] == "5%"
    assert cost_rows([run], ["a"], workers=1)[0][-1] == "-90%"


def test_small_statistics():
    assert mean_sd([0.5, 0.7, None]) == pytest.approx((0.6, math.sqrt(0.02), 2))
    assert mean_curve([[None, 0.5], [0.4, 0.6, 0.8]]) == pytest.approx([0.4, 0.55, 0.65])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    assert overhead_fraction(100.0, 60.0, 1) == pytest.approx(0.4)
    assert overhead_fraction(100.0, 120.0, 2) == pytest.approx(0.4)


def test_overrides_are_typed_and_checked():
    assert parse_overrides(["train_limit=null", "trials=5", "budget=0.5", "fidelity=kd:3"]) == {
        "train_limit": None, "trials": 5, "budget": "0.5", "fidelity": "kd:3"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_overrides(["no_such_key=1"])


def test_a_recipe_sets_its_own_equal_time_budget_which_quick_mode_drops(tmp_path):
    from autoprune.bench.harness import task_settings
    recipe = tmp_path / "bench_deep.yaml"
    recipe.write_text("model: resnet20\ntarget: latency\nbudget: '0.3'\ntime_limit: 60\n")
    make_tree(tmp_path, per_class=1, test_per_class=1)
    full = bench_config(parser().parse_args(["bench", "--data-root", str(tmp_path)]), "autoprune bench")
    assert task_settings(recipe, full).time_limit == 60
    quick = bench_config(parser().parse_args(["bench", "--quick", "--data-root", str(tmp_path)]), "autoprune bench")
    assert task_settings(recipe, quick).time_limit is None


# -- the command line -------------------------------------------------------------------------
def test_missing_data_root_is_one_line_exit_2(tmp_path, capsys):
    assert main(["bench", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data-root" in err and "ImageFolder" in err and "\n" not in err


def test_default_data_root_absent_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "../shared/data/cifar10" in err and "--data-root" in err and "\n" not in err


def test_missing_checkpoint_outside_quick_mode_names_the_train_command(tmp_path, capsys):
    make_tree(tmp_path / "data", per_class=1, test_per_class=1)
    recipe = tmp_path / "bench_x.yaml"
    recipe.write_text(yaml.safe_dump({"model": "resnet20", "checkpoint": str(tmp_path / "missing.pt")}))
    code = main(["bench", "--data-root", str(tmp_path / "data"), "--study", str(recipe),
                 "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "autoprune train --model resnet20" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Train a tiny dense model with `autoprune train`, then run quick mode with 2 searchers."""
    root = tmp_path_factory.mktemp("bench")
    make_tree(root / "data")
    cache = str(root / "cache")
    ckpt = root / "models" / "tiny.pt"
    train = ["train", "--model", "resnet20:width=4", "--data", f"imagefolder:{root / 'data'}", "--image-size", "16",
             "--epochs", "2", "--out", str(ckpt), "--cache-dir", cache]
    assert main(train) == 0
    recipe = root / "bench_tiny_macs.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "resnet20:width=4", "data": "imagefolder:unused", "image_size": 16, "checkpoint": str(ckpt),
        "target": "macs", "budget": "0.6", "latency_batch": 2, "seed": 0,
    }))
    out = root / "report" / "BENCHMARKS.md"
    argv = ["bench", "--quick", "--data-root", str(root / "data"), "--study", str(recipe),
            "--searchers", "random,uniform,broken", "--out", str(out), "--runs-dir", str(root / "runs"),
            # 20 s of equal time: at 5 s a loaded machine's first uniform trial could come after the cutoff
            "--cache-dir", cache, "--executors", "inline", "--time-limit", "20", "--fidelity-policies", "4",
            "--throughput-trials", "1", "--set", "trials=2", "--set", "final_steps=3", "--set", "threads=1"]
    with registered_broken():
        assert main(argv) == 0
    (run_root,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return {"root": root, "out": out, "ckpt": ckpt, "run_root": run_root, "argv": argv,
            "results": json.loads((run_root / "results.json").read_text())}


def test_train_writes_weights_and_record(bench):
    state = torch.load(bench["ckpt"], weights_only=True)
    assert "conv1.weight" in state
    record = json.loads(bench["ckpt"].with_suffix(".json").read_text())
    assert record["command"].startswith("autoprune train --model resnet20:width=4")
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_images"] == 9
    assert record["train_images"] + record["val_images"] == 24  # validation carved from train/


def test_quick_bench_writes_tables_command_and_figures(bench):
    text = bench["out"].read_text()
    assert "autoprune bench --quick" in text and "--searchers random,uniform" in text
    for heading in ("## Dense reference models", "### Same number of scored trials", "### Same wall-clock budget",
                    "#### Cost per scored trial", "#### Against the baselines", "## Fidelity of the cheap scores", "## Throughput",
                    "## How long the final fine-tune must be",
                    "## What was scaled down"):
        assert heading in text, heading
    assert "| `random` |" in text and "| `uniform` |" in text
    assert "autoprune train --model resnet20:width=4" in text  # how the dense model was made
    assert "cores" in text and "torch-pruning" in text
    figures = bench["out"].parent / "benchmarks" / "figures"
    pngs = {p.name for p in figures.glob("*.png")}
    assert {"tiny_macs_trials_front.png", "tiny_macs_time_front.png", "tiny_macs_best_so_far.png",
            "fidelity.png", "finetune_curve.png"} <= pngs
    for png in pngs:
        assert f"benchmarks/figures/{png}" in text


def test_new_searchers_join_by_default(tmp_path):
    make_tree(tmp_path, per_class=1, test_per_class=1)
    with registered_broken():
        args = parser().parse_args(["bench", "--data-root", str(tmp_path)])
        cfg = bench_config(args, "autoprune bench")
        grid = bench_config(parser().parse_args(["bench", "--data-root", str(tmp_path), "--searchers", "all"]), "b")
    assert "broken" in cfg.searchers and {"random", "uniform", "global", "tpe", "knapsack"} <= set(cfg.searchers)
    assert not {"nsga2", "gp", "cmaes", "qmc", "knapsack-greedy"} & set(cfg.searchers)  # the headline set
    assert set(grid.searchers) == set(cfg.searchers) | {"nsga2", "gp", "cmaes", "qmc", "knapsack-greedy"}
    assert cfg.seeds == 3 and len(cfg.studies) == 3 and all(p.is_file() for p in cfg.studies)


def test_a_failing_searcher_is_reported_not_fatal(bench):
    broken = [r for r in bench["results"]["runs"] if r["searcher"] == "broken"]
    assert len(broken) == 2 and all("always fails" in r["error"] and r["final_test"] is None for r in broken)
    assert "`broken` seed 0: RuntimeError: this searcher always fails" in bench["out"].read_text()


def test_every_search_is_finalised_and_its_own_study(bench):
    runs = [r for r in bench["results"]["runs"] if r["searcher"] != "broken"]
    assert {(r["view"], r["searcher"]) for r in runs} == {(v, s) for v in ("trials", "time") for s in ("random", "uniform")}
    for r in runs:
        assert r["error"] is None, r
        assert r["final_test"] is not None and r["within_budget"]
        assert len(r["points"]) == r["scored"] == len(r["curve"])
        assert r["hypervolume"] == pytest.approx(hypervolume([tuple(p) for p in r["points"]]))
    assert all(r["scored"] == 2 for r in runs if r["view"] == "trials")
    storage = f"sqlite:///{bench['run_root'] / 'studies.db'}"
    names = optuna.get_all_study_names(storage)
    assert "tiny_macs/random/seed0" in names and "tiny_macs/uniform/seed0" in names
    for searcher in ("random", "uniform"):  # both views read one search: its study holds every trial of both
        trials = optuna.load_study(study_name=f"tiny_macs/{searcher}/seed0", storage=storage).trials
        scored = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("fidelity") == "kd:3"]
        views = {r["view"]: r for r in runs if r["searcher"] == searcher}
        assert len(scored) >= max(views["trials"]["scored"], views["time"]["scored"])
        finals = [t for t in trials if t.user_attrs.get("fidelity") == "final"]
        assert 1 <= len(finals) <= 2  # one final fine-tune per distinct pick
    assert (bench["root"] / "runs" / ".gitignore").read_text().strip() == "*"


def test_fidelity_and_throughput_sections(bench):
    fid = bench["results"]["fidelity"]
    assert fid["policies"] >= 3 and set(fid["spearman"]) == {"bn vs final", "kd:3 vs final"}
    assert fid["cheap"] == ["bn", "kd:3"] and "chosen" in fid and all("kd:3" in r["seconds"] for r in fid["rows"])
    rows = bench["results"]["throughput"]
    assert [(r["executor"], r["workers"]) for r in rows] == [("inline", 1), ("inline", 2)]
    assert all(r["scored"] >= 1 and r["per_minute"] > 0 for r in rows)
    ratio = f"| {rows[1]['per_minute'] / rows[0]['per_minute']:.2f}x |"  # the 2-worker row against the 1-worker one
    throughput = bench["out"].read_text().split("## Throughput", 1)[1]
    assert "vs 1 worker" in throughput and ratio in throughput


def test_finetune_curve_gives_uniform_at_half_the_macs_each_length(bench):
    from autoprune.bench.finetune_curve import QUICK_STEPS, curve_summary

    curve = bench["results"]["finetune"]
    assert [p["steps"] for p in curve["points"]] == list(QUICK_STEPS)
    assert all(p["macs_of_dense"] <= 0.5 and 0 <= p["test_accuracy"] <= 1 for p in curve["points"])
    assert len({p["macs"] for p in curve["points"]}) == 1  # one policy at every length
    assert curve_summary(curve)["knee_steps"] in QUICK_STEPS


def test_knee_is_the_shortest_length_near_the_best():
    from autoprune.bench.finetune_curve import knee

    points = [{"steps": s, "test_accuracy": a} for s, a in ((0, 0.5), (100, 0.88), (300, 0.903), (1000, 0.905))]
    assert knee(points)["steps"] == 300 and knee(points, tolerance=3.0)["steps"] == 100 and knee([]) is None


def test_a_fidelity_study_of_another_final_length_is_not_resumed():
    # rows whose final score came after 1000 steps do not answer a study whose final is 3000 steps
    from autoprune.bench.fidelity import study_done

    study = {"fidelities": ["bn", "final"], "cheap": ["bn"], "final_steps": 1000, "policies": 30, "asked": 31}
    assert study_done(study, 30, ("bn",), 1000)
    assert not study_done(study, 30, ("bn",), 3000) and not study_done(study, 30, ("bn", "kd:10"), 1000)
    assert not study_done({**study, "policies": 12}, 30, ("bn",), 1000)


def test_rows_find_their_own_draw_when_a_policy_was_drawn_twice():
    """A policy drawn twice (a resumed study whose random draws restarted) is two rows with two
    seeds: each row is matched to its own draw, in order, not both to the first."""
    from autoprune.bench.fidelity import _numbers

    a, b = {"conv1": 0.5}, {"conv1": 0.25}
    draws = [{"policy": a, "rejected": True}, {"policy": a, "rejected": False}, {"policy": b, "rejected": False},
             {"policy": b, "rejected": True}, {"policy": a, "rejected": False}]
    rows = [{"policy": a}, {"policy": b}, {"policy": a}, {"policy": b, "number": 7}]
    assert _numbers(rows, draws) == [1, 2, 4, 7]


def test_a_fidelity_added_on_resume_is_scored_on_the_kept_policies_and_their_finals_are_kept(bench, tmp_path):
    """An earlier study without kd:3 (rows saved before they recorded their trial number): resumed
    with it, every kept policy gets its kd:3 score (from the trial seed it was drawn with, so the
    same as the full study's) and keeps its final score; no new policy is drawn."""
    import shutil

    run = tmp_path / "fewer"
    shutil.copytree(bench["run_root"], run)
    data = json.loads((run / "results.json").read_text())
    whole = data["fidelity"]
    rows = [{k: v for k, v in r.items() if k not in ("kd:3", "number")} for r in whole["rows"]]
    for row in rows:
        row["seconds"] = {k: v for k, v in row["seconds"].items() if k != "kd:3"}
    data["fidelity"] = {**whole, "fidelities": ["bn", "final"], "cheap": ["bn"], "rows": rows}
    (run / "results.json").write_text(json.dumps(data))
    argv = [a for a in bench["argv"] if a != "random,uniform,broken"]
    argv.insert(argv.index("--searchers") + 1, "random")
    argv[argv.index("--out") + 1] = str(tmp_path / "B.md")
    assert main([*argv, "--resume", str(run), "--sections", "fidelity"]) == 0
    again = json.loads((run / "results.json").read_text())["fidelity"]
    assert [r["policy"] for r in again["rows"]] == [r["policy"] for r in whole["rows"]]
    assert [r["final"] for r in again["rows"]] == [r["final"] for r in whole["rows"]]
    assert [r["kd:3"] for r in again["rows"]] == [r["kd:3"] for r in whole["rows"]]
    assert set(again["spearman"]) == {"bn vs final", "kd:3 vs final"}


def test_resumed_short_sections_keep_their_rows_and_draw_the_same_policies(bench, tmp_path):
    """A bench cut off inside the fidelity study and the fine-tune curve continues both where they stopped."""
    import shutil

    run = tmp_path / "cut"
    shutil.copytree(bench["run_root"], run)
    data = json.loads((run / "results.json").read_text())
    whole_fid, whole_curve = data["fidelity"], data["finetune"]
    first = whole_fid["rows"][0]["policy"]
    upto = next(i for i, d in enumerate(whole_fid["draws"]) if d["policy"] == first and not d["rejected"])
    data["fidelity"] = {**whole_fid, "rows": whole_fid["rows"][:1], "draws": whole_fid["draws"][:upto + 1],
                        "policies": 1, "asked": upto + 1}
    data["finetune"] = {**whole_curve, "points": whole_curve["points"][:1]}
    (run / "results.json").write_text(json.dumps(data))
    argv = [a for a in bench["argv"] if a != "random,uniform,broken"]
    argv.insert(argv.index("--searchers") + 1, "random")
    argv[argv.index("--out") + 1] = str(tmp_path / "B.md")
    assert main([*argv, "--resume", str(run), "--sections", "fidelity,finetune"]) == 0
    again = json.loads((run / "results.json").read_text())
    assert [r["policy"] for r in again["fidelity"]["rows"]] == [r["policy"] for r in whole_fid["rows"]]
    assert again["fidelity"]["rows"][0] == whole_fid["rows"][0]  # kept, not scored again
    assert [p["steps"] for p in again["finetune"]["points"]] == [p["steps"] for p in whole_curve["points"]]
    assert again["finetune"]["points"][0] == whole_curve["points"][0]



def test_a_fidelity_study_on_two_worker_processes_scores_what_the_inline_one_scored(bench, tmp_path):
    """Resumed after its first policy on two worker processes (two policies scored at once), the
    study draws the same policies, keeps them in the order drawn, and scores each exactly as the
    one-at-a-time study did (the same trial seeds, one thread each)."""
    import shutil

    run = tmp_path / "two"
    shutil.copytree(bench["run_root"], run)
    data = json.loads((run / "results.json").read_text())
    whole = data["fidelity"]
    first = whole["rows"][0]["policy"]
    upto = next(i for i, d in enumerate(whole["draws"]) if d["policy"] == first and not d["rejected"])
    data["fidelity"] = {**whole, "rows": whole["rows"][:1], "draws": whole["draws"][:upto + 1],
                        "policies": 1, "asked": upto + 1}
    (run / "results.json").write_text(json.dumps(data))
    argv = [a for a in bench["argv"] if a != "random,uniform,broken"]
    argv.insert(argv.index("--searchers") + 1, "random")
    argv[argv.index("--out") + 1] = str(tmp_path / "B.md")
    argv += ["--set", "executor=processes", "--set", "workers=2"]
    assert main([*argv, "--resume", str(run), "--sections", "fidelity"]) == 0
    again = json.loads((run / "results.json").read_text())["fidelity"]
    assert len(again["rows"]) == len(whole["rows"]) == 4
    for mine, theirs in zip(again["rows"], whole["rows"], strict=True):
        assert mine["policy"] == theirs["policy"]
        assert {f: mine[f] for f in whole["fidelities"]} == {f: theirs[f] for f in whole["fidelities"]}

def test_render_writes_the_report_again_from_results_json(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded data root is not needed to render
    before = bench["out"].read_text()
    bench["out"].unlink()
    assert main(["bench", "--render", str(bench["run_root"])]) == 0  # "broken" is no longer registered
    after = bench["out"].read_text()
    table = before[before.index("### Same number of scored trials"):before.index("#### Cost per scored trial")]
    assert table in after
    assert "## Fidelity of the cheap scores" in after and "## Throughput" in after
    draft = tmp_path / "draft" / "REPORT.md"
    assert main(["bench", "--render", str(bench["run_root"]), "--out", str(draft)]) == 0
    assert table in draft.read_text() and bench["out"].read_text() == after  # the report rendered elsewhere
    assert list((draft.parent / "benchmarks" / "figures").glob("*.png"))


def test_render_of_a_directory_without_results_is_exit_2(tmp_path, capsys):
    assert main(["bench", "--render", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_render_merges_runs_of_several_bench_commands(bench):
    from autoprune.bench.render import load_result, merge
    from autoprune.cli import parser

    with registered_broken():
        one = load_result(bench["run_root"], parser())
    other = dataclasses.replace(one, config=dataclasses.replace(one.config, command="autoprune bench --sections fidelity"),
                                runs=[], fidelity=None)
    merged = merge([one, other])
    assert len(merged.runs) == len(one.runs) and merged.fidelity == one.fidelity
    assert merged.config.command == f"autoprune bench --render {one.root} {other.root}"  # what regenerates it
    assert [t.name for t in merged.tasks] == [t.name for t in one.tasks]


def test_each_section_of_a_merged_report_names_the_command_that_made_it(bench, tmp_path):
    """A report merged from a search run and a later fidelity run: the task's tables carry the
    search's command, the fidelity table the fidelity run's, and the header lists both runs."""
    from autoprune.bench.markdown import write_markdown
    from autoprune.bench.render import load_result, merge
    from autoprune.cli import parser

    with registered_broken():
        one = load_result(bench["run_root"], parser())
    later = {**one.machine, "date": "2031-01-01 00:00 UTC"}
    fidelity_run = dataclasses.replace(one, config=dataclasses.replace(one.config, command="autoprune bench --sections fidelity",
                                                                       searchers=("tpe",), seeds=3),
                                       runs=[], machine=later, root=Path("elsewhere"))
    searches_only = dataclasses.replace(one, fidelity=None)
    merged = merge([searches_only, fidelity_run])
    (task,) = merged.tasks
    assert merged.sources[f"task:{task.name}"][0] == one.config.command
    assert merged.sources["fidelity"] == ("autoprune bench --sections fidelity", later)
    out = tmp_path / "BENCHMARKS.md"
    merged = dataclasses.replace(merged, config=dataclasses.replace(merged.config, out=out, figures_dir=tmp_path / "f"))
    text = write_markdown(merged).read_text()
    fidelity = text[text.index("## Fidelity of the cheap scores"):]
    fidelity = fidelity[:fidelity.index("\n## ")] if "\n## " in fidelity else fidelity
    assert "`autoprune bench --sections fidelity` · 2031-01-01" in fidelity and one.config.command not in fidelity
    task_part = text[text.index(f"## Task `{task.name}`"):text.index("## Fidelity of the cheap scores")]
    assert f"`{one.config.command}` · {one.machine['date']}" in task_part and "--sections fidelity" not in task_part
    assert "`tpe` seed" not in task_part  # the fidelity run's searchers and seeds ask nothing of this task
    assert "- `elsewhere` (2031-01-01 00:00 UTC" in text and "; fidelity): `autoprune bench --sections fidelity`" in text


def test_dense_weights_trained_in_two_commands_name_both_in_order():
    from autoprune.bench.markdown import training_chain

    record = {"init": {"command": "autoprune train --epochs 40 --out a.pt", "checkpoint": "models/a40.pt"}}
    assert training_chain(record, "autoprune train --init models/a40.pt --out a.pt") == (
        "`autoprune train --epochs 40 --out a.pt` (kept as `models/a40.pt`), then "
        "`autoprune train --init models/a40.pt --out a.pt`")
    assert training_chain({}, "autoprune train") == "`autoprune train`"


def test_a_task_without_finished_searches_says_so_instead_of_an_empty_section(bench, tmp_path):
    from autoprune.bench.markdown import task_section
    from autoprune.bench.render import load_result
    from autoprune.cli import parser

    with registered_broken():
        result = load_result(bench["run_root"], parser())
    (task,) = result.tasks
    assert not any("No search of this task" in line for line in task_section(result, task, tmp_path, tmp_path))
    empty = dataclasses.replace(result, runs=[])
    assert any("No search of this task finished" in line for line in task_section(empty, task, tmp_path, tmp_path))


def test_a_task_run_again_supersedes_its_earlier_searches_in_a_merge(bench):
    from autoprune.bench.render import load_result, merge
    from autoprune.cli import parser

    with registered_broken():
        first = load_result(bench["run_root"], parser())
    (task,) = {r.task for r in first.runs}
    interrupted = dataclasses.replace(first, runs=first.runs[:1], time_limits={task: 99.0})
    again = dataclasses.replace(first, config=dataclasses.replace(first.config, command="autoprune bench --study x"),
                                fidelity=None, throughput=[])
    merged = merge([interrupted, again])
    assert merged.runs == again.runs and merged.time_limits == again.time_limits  # no mix of the two
    assert merged.fidelity == interrupted.fidelity


def test_a_merged_report_asks_each_searcher_for_the_standard_seeds_not_the_most_any_reached(bench, tmp_path):
    """Extra seeds run for one searcher (to narrow its interval) are not asked of every other."""
    from autoprune.bench.command import SEEDS
    from autoprune.bench.markdown import task_section
    from autoprune.bench.render import load_result, merge
    from autoprune.cli import parser

    with registered_broken():
        first = load_result(bench["run_root"], parser())
    first = dataclasses.replace(first, config=dataclasses.replace(first.config, quick=False))
    (task,) = first.tasks
    extra = [dataclasses.replace(r, seed=seed) for r in first.runs if r.searcher == "random" for seed in range(SEEDS + 1)]
    more = dataclasses.replace(first, runs=extra, root=Path("more"),
                               config=dataclasses.replace(first.config, command="autoprune bench --searchers random --seeds 4"))
    merged = merge([first, more])
    (line,) = [x for x in task_section(merged, task, tmp_path, tmp_path) if x.startswith("Missing from this task")]
    assert "`uniform` seed 1" in line and f"`uniform` seed {SEEDS - 1}" in line
    assert f"seed {SEEDS}" not in line and "`random`" not in line


def test_a_searcher_run_again_replaces_only_its_own_searches_at_the_same_time_budget(bench):
    from autoprune.bench.render import load_result, merge
    from autoprune.cli import parser

    with registered_broken():
        first = load_result(bench["run_root"], parser())
    (task,) = {r.task for r in first.runs}
    redone = [dataclasses.replace(r, wall_s=r.wall_s + 1000) for r in first.runs if r.searcher == "uniform"]
    rerun = dataclasses.replace(first, runs=redone, root=Path("rerun"),
                                config=dataclasses.replace(first.config, command="autoprune bench --searchers uniform"))
    merged = merge([first, rerun])
    assert sorted(merged.runs, key=str) == sorted([r for r in first.runs if r.searcher != "uniform"] + redone, key=str)
    assert "--searchers uniform" in merged.sources[f"task:{task}"][0]  # the later run made the task's tables
    elsewhere = dataclasses.replace(rerun, time_limits={task: first.time_limits[task] + 5})
    with pytest.raises(UserError, match="--time-limit"):
        merge([first, elsewhere])


def test_report_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    from autoprune.bench.markdown import _relative

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path.resolve()}/benchmarks/runs/x/studies.db"
    assert _relative(url) == "sqlite:///benchmarks/runs/x/studies.db"
    assert _relative("/elsewhere/runs") == "/elsewhere/runs"


def test_an_interrupted_training_continues_to_the_same_weights(tmp_path):
    """`autoprune train` saves its state each epoch; the same command continues after a kill."""
    from autoprune.bench.dense import TrainSpec, partial_path, train_reference

    make_tree(tmp_path / "data")
    common = dict(model="resnet20:width=4", data=f"imagefolder:{tmp_path / 'data'}", epochs=3, image_size=16,
                  batch_size=8, cache_dir=str(tmp_path / "cache"), threads=1)
    whole = TrainSpec(out=tmp_path / "whole.pt", **common)
    train_reference(whole, "train", log=lambda msg: None)

    cut = TrainSpec(out=tmp_path / "cut.pt", **common)

    def stop_after_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_reference(cut, "train", log=stop_after_first_epoch)
    assert partial_path(cut.out).exists() and not cut.out.exists()
    lines: list[str] = []
    train_reference(cut, "train", log=lines.append)
    assert any("after epoch 1 of 3" in line for line in lines)
    assert not partial_path(cut.out).exists()
    a, b = torch.load(whole.out, weights_only=True), torch.load(cut.out, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_partial_training_of_other_settings_is_refused(tmp_path):
    from autoprune.bench.dense import TrainSpec, partial_path, train_reference

    make_tree(tmp_path / "data")
    spec = TrainSpec(model="resnet20:width=4", data=f"imagefolder:{tmp_path / 'data'}", out=tmp_path / "m.pt",
                     epochs=2, image_size=16, batch_size=8, cache_dir=str(tmp_path / "cache"), threads=1)

    def stop(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_reference(spec, "train", log=stop)
    before = partial_path(spec.out).read_bytes()
    with pytest.raises(UserError, match="epochs=2"):
        train_reference(dataclasses.replace(spec, epochs=5), "train", log=lambda msg: None)
    assert partial_path(spec.out).read_bytes() == before  # nothing saved is lost


def test_paired_difference_is_by_seed_with_a_bootstrap_interval():
    from autoprune.bench.metrics import paired_difference

    ahead = paired_difference({0: 0.60, 1: 0.62, 2: 0.65}, {0: 0.55, 1: 0.60, 2: 0.61})
    assert ahead.mean == pytest.approx(0.11 / 3) and ahead.pairs == 3
    assert 0 < ahead.low <= ahead.mean <= ahead.high and ahead.excludes_zero
    mixed = paired_difference({0: 0.60, 1: 0.62, 2: 0.65}, {0: 0.65, 1: 0.60, 2: 0.61})
    assert mixed.low < 0 < mixed.high and not mixed.excludes_zero
    assert (ahead.higher, mixed.higher) == (3, 2)
    # the t interval of 0.05, 0.02, 0.04: mean 0.03667, sd 0.01528, t(0.975, 2) = 4.303
    assert (ahead.t_low, ahead.t_high) == pytest.approx((0.03667 - 0.03795, 0.03667 + 0.03795), abs=1e-4)
    assert math.isnan(paired_difference({0: 0.6}, {0: 0.5}).t_low)
    two = paired_difference({0: 0.60, 1: 0.62}, {0: 0.55, 1: 0.60})
    assert two.low > 0 and not two.excludes_zero  # two seeds' range is no verdict
    assert paired_difference({0: 0.6, 1: 0.7}, {1: 0.5, 2: 0.4}).pairs == 1  # only seed 1 is paired
    assert paired_difference({0: 0.6}, {0: None}).pairs == 0
    again = paired_difference({0: 0.60, 1: 0.62, 2: 0.65}, {0: 0.55, 1: 0.60, 2: 0.61})
    assert (again.low, again.high) == (ahead.low, ahead.high)  # seeded: a report renders the same
    # with three seeds the percentile interval is the smallest to the largest difference (as the report says)
    assert (ahead.low, ahead.high) == pytest.approx((0.02, 0.05))



def test_spearman_interval_brackets_the_correlation_and_narrows_with_more_policies():
    from autoprune.bench.metrics import spearman_interval

    rng = np.random.default_rng(1)
    final = rng.normal(size=200)
    cheap = final + rng.normal(scale=0.5, size=200)  # a cheap score that ranks well, not perfectly
    wide = spearman_interval(cheap[:30].tolist(), final[:30].tolist())
    narrow = spearman_interval(cheap.tolist(), final.tolist())
    assert wide[0] <= spearman(cheap[:30].tolist(), final[:30].tolist()) <= wide[1] < 1
    assert wide[0] < narrow[0] < spearman(cheap.tolist(), final.tolist()) < narrow[1] <= wide[1] + 1e-9
    noise = spearman_interval(rng.normal(size=30).tolist(), rng.normal(size=30).tolist())
    assert noise[0] < 0 < noise[1]  # no correlation: the interval spans zero
    assert spearman_interval([1, 2, 3, 4], [2, 4, 6, 8]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in spearman_interval([1, 2], [2, 1]))  # too few pairs to correlate
    assert spearman_interval(cheap[:30].tolist(), final[:30].tolist()) == wide  # seeded

def test_paired_rows_mark_only_intervals_that_exclude_zero():
    from autoprune.bench.tables import paired_rows

    def run(searcher, seed, test):
        return RunResult("t", "trials", searcher, seed, "s", "d", final_test=test, final_cost=0.49, limit=0.5)

    runs = [run("uniform", s, 0.60 + 0.01 * s) for s in range(3)] + [run("random", s, 0.58) for s in range(3)]
    runs += [run("knapsack", s, 0.65 + 0.01 * s) for s in range(3)]
    rows = {r[0]: r for r in paired_rows(runs, ["random", "uniform", "knapsack"])}
    assert rows["`knapsack`"][1].startswith("+5.00") and "ahead" in rows["`knapsack`"][1]
    assert rows["`uniform`"][1] == "–" and "ahead" in rows["`uniform`"][2]
    assert rows["`knapsack`"][3] == "0.980, 0.980, 0.980"
    assert "(higher at 3 of 3 seeds; t [" in rows["`knapsack`"][1]
    assert "(higher at 3 of 3 seeds; t [" in rows["`knapsack`"][2]


def test_seed_counts_name_the_searchers_a_resume_gave_more_seeds():
    """A bench resumed with --seeds 4 for a few searchers: headings say which ran how many."""
    from autoprune.bench.tables import seed_counts

    def run(searcher, seed):
        return RunResult("t", "trials", searcher, seed, "s", "d", final_test=0.6)

    names = ["random", "uniform", "tpe", "emo", "global", "amc"]
    runs = [run(n, s) for n in names[:5] for s in range(3)]
    assert seed_counts(runs, names) == "3 seeds"
    runs += [run("random", 3), run("uniform", 3), run("amc", 0)]
    assert seed_counts(runs, names) == "3 seeds; 1 for `amc`; 4 for `random`, `uniform`"
    assert seed_counts([], ["random"]) == ""


def test_resume_keeps_finished_units_and_runs_only_the_missing_ones(bench, tmp_path):
    """A bench cut off after `random` finished: --resume keeps random's runs as they were, runs
    `uniform` again, and the report no longer lists anything as missing."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(bench["run_root"], copy)
    results = json.loads((copy / "results.json").read_text())
    kept = [r for r in results["runs"] if r["searcher"] == "random"]
    (copy / "results.json").write_text(json.dumps({**results, "runs": kept}))
    out = tmp_path / "B.md"
    assert main(["bench", "--render", str(copy), "--out", str(out)]) == 0
    assert "Missing from this task" in out.read_text() and "`uniform` seed 0" in out.read_text()
    argv = [a for a in bench["argv"] if a != "random,uniform,broken"]
    argv[argv.index("--searchers") + 1:argv.index("--searchers") + 1] = ["random,uniform"]
    argv[argv.index("--out") + 1] = str(out)
    assert main([*argv, "--resume", str(copy)]) == 0
    after = json.loads((copy / "results.json").read_text())["runs"]
    assert [r for r in after if r["searcher"] == "random"] == kept  # not run again
    assert {r["view"] for r in after if r["searcher"] == "uniform"} == {"trials", "time"}
    assert all(r["code"] for r in after if r["searcher"] == "uniform")
    assert "Missing from this task" not in out.read_text()
    # --redo drops a finished unit and runs it again; the others stay as they were
    marked = json.loads((copy / "results.json").read_text())
    for r in marked["runs"]:
        r["code"] = "old"
    (copy / "results.json").write_text(json.dumps(marked))
    assert main([*argv, "--resume", str(copy), "--redo", "random:0,tpe:3"]) == 0
    again = json.loads((copy / "results.json").read_text())["runs"]
    assert {r["code"] != "old" for r in again if r["searcher"] == "random"} == {True}
    assert {r["code"] for r in again if r["searcher"] == "uniform"} == {"old"}
    assert main([*argv, "--resume", str(copy), "--redo", "random"]) == 2
    assert main([*argv, "--redo", "random:0"]) == 2


def test_paper_table_gives_each_searchers_change_against_dense_beside_the_published_deltas():
    from types import SimpleNamespace

    from autoprune.bench.paper import paper_section
    from autoprune.settings import SearchSettings

    def run(searcher, seed, test, view="trials"):
        return RunResult("r20", view, searcher, seed, "s", "d", final_test=test, final_cost=20e6, limit=20.6e6)

    task = SimpleNamespace(name="r20", settings=SearchSettings(model="resnet20", target="macs", budget="0.5"),
                           dense={"test_accuracy": 0.91, "costs": {"macs": 41e6}})
    other = SimpleNamespace(name="lat", settings=SearchSettings(model="resnet20", target="latency", budget="0.5"),
                            dense={"test_accuracy": 0.91, "costs": {"macs": 41e6}})
    runs = [run("uniform", s, 0.89) for s in range(3)] + [run("tpe", s, 0.90 + 0.001 * s) for s in range(3)]
    runs += [run("tpe", 0, 0.5, view="time"), RunResult("lat", "trials", "tpe", 0, "s", "d", final_test=0.9)]
    machine = {"date": "2026-12-07 14:00 UTC", "cores": 2, "cpu": "cpu",
               "versions": {"torch": "t", "torch-pruning": "tp", "optuna": "o", "autoprune": "a"}}
    report = SimpleNamespace(tasks=[task, other], runs=runs, machine=machine,
                             config=SimpleNamespace(command="autoprune bench --study lat.yaml"),
                             sources={"task:r20": ("autoprune bench --study r20.yaml", machine)})
    lines = paper_section(report)
    text = "\n".join(lines)
    assert "_`autoprune bench --study r20.yaml` · 2026-12-07 14:00 UTC" in text  # the run that made the rows
    ours = [line for line in lines if line.startswith("| autoprune")]
    assert ours[0].startswith("| autoprune `tpe` (r20)") and "-0.90 ± 0.10 (3 seeds)" in ours[0] and "2.05x" in ours[0]
    assert "-2.00 ± 0.00 (3 seeds)" in ours[1] and "(lat)" not in text  # only the 0.5-of-MACs task
    assert "| AMC (He et al. 2018) | ResNet-56 | 92.80 → 91.90 | -0.90 | 2.00x |" in text
    assert paper_section(SimpleNamespace(tasks=[other], runs=runs, sources={})) == []


def test_a_training_continued_with_init_records_its_history_and_refuses_another_split(tmp_path):
    from autoprune.bench.dense import TrainSpec, train_reference

    make_tree(tmp_path / "data")
    common = dict(model="resnet20:width=4", data=f"imagefolder:{tmp_path / 'data'}", image_size=16, batch_size=8,
                  cache_dir=str(tmp_path / "cache"), threads=1)
    first = TrainSpec(out=tmp_path / "a.pt", epochs=1, **common)
    train_reference(first, "train a", log=lambda msg: None)
    lines: list[str] = []
    record = train_reference(TrainSpec(out=tmp_path / "b.pt", epochs=2, lr=0.05, init=str(first.out), **common),
                             "train b", log=lines.append)
    assert any("starting from" in line for line in lines)
    assert record["init"]["command"] == "train a" and record["total_epochs"] == 3
    assert record["total_train_seconds"] >= record["train_seconds"]
    with pytest.raises(UserError, match="seed 0 \\(here 1\\)"):
        train_reference(TrainSpec(out=tmp_path / "c.pt", epochs=1, seed=1, init=str(first.out), **common), "c")
    (tmp_path / "bare.pt").write_bytes(first.out.read_bytes())
    with pytest.raises(UserError, match="no training record"):
        train_reference(TrainSpec(out=tmp_path / "d.pt", epochs=1, init=str(tmp_path / "bare.pt"), **common), "d")


def test_units_run_seed_by_seed_with_random_first():
    """A bench spread over sessions compares every searcher at seed 0 before adding seeds, and
    random seed 0, which sets the equal-time budget, runs before anything else."""
    from autoprune.bench.views import unit_order

    assert unit_order(("tpe", "random", "uniform"), 2) == [
        ("random", 0), ("tpe", 0), ("uniform", 0), ("random", 1), ("tpe", 1), ("uniform", 1)]


def test_the_time_view_names_the_searches_that_shared_the_machine():
    from autoprune.bench.tables import busy_note

    quiet = RunResult("t", "time", "random", 0, "s", "d", load=2.2)
    busy = RunResult("t", "time", "random", 1, "s", "d", load=3.4)
    old = RunResult("t", "time", "tpe", 0, "s", "d")  # recorded before loads were
    assert busy_note([quiet, old], workers=2) == []
    note = " ".join(busy_note([quiet, busy, old], workers=2))
    assert "`random` seed 1 (3.4)" in note and "seed 0" not in note


def test_a_portfolio_run_keeps_each_members_share_and_the_report_shows_it():
    from types import SimpleNamespace

    from autoprune.bench.members import members_section
    from autoprune.bench.views import Anytime, view_result
    from autoprune.study import COMPLETE, REJECTED, Trial
    from autoprune.testing.toy import ToyProblem

    policy = ToyProblem.make().space().dense()
    members = ["tpe", "knapsack", "tpe", "tpe", "knapsack"]
    trials = [Trial(i, policy, REJECTED if i == 4 else COMPLETE,
                    {"macs": 0.4, "total_s": 10.0, **({} if i == 4 else {"val_accuracy": 0.5 + 0.1 * i})},
                    fidelity="bn", constraint=-0.2, member=m) for i, m in enumerate(members)]
    settings = SimpleNamespace(study_name="s", run_dir="d", fidelity="bn")
    problem = SimpleNamespace(settings=settings, limit=0.5, metric="macs", dense={"macs": 1.0})
    run = Anytime(tuple(trials), (1.0, 2.0, 3.0, 4.0, 5.0), 5.0, "", None)
    res = view_result(problem, run, view="trials", task="t", searcher="portfolio", seed=1, cutoff=5.0, reached=True)
    assert res.members["tpe"] == {"trials": 3, "scored": 3, "trial_share": 0.6, "time_share": 0.6}
    assert res.members["knapsack"]["trials"] == 2 and res.members["knapsack"]["scored"] == 1
    res.pick_member = "tpe"
    lines = members_section([res, RunResult("t", "trials", "tpe", 1, "s", "d")])
    (row,) = [line for line in lines if line.startswith("| `portfolio`")]
    assert row == "| `portfolio` | 1 | `tpe` 60% (3 scored), `knapsack` 40% (1 scored) | `tpe` 60%, `knapsack` 40% | `tpe` |"
    assert members_section([RunResult("t", "trials", "tpe", 1, "s", "d")]) == []


def test_a_latency_table_judges_every_unit_and_the_report_shows_the_reading_beside_it(bench, tmp_path):
    """With ``latency_table`` in a recipe, every unit's search, pick and export check are the
    table's estimates (one cost model whenever a unit runs); the export is also read on this
    machine, paired with the dense model, and the report shows that reading beside the estimate."""
    from autoprune.costs.table import load_device_table
    from autoprune.prune import apply_policy, load_slimmed
    from autoprune.rules import load_rules
    from autoprune.space import SearchSpace

    root = bench["root"]
    table = tmp_path / "table.json"
    assert main(["profile", "--model", "resnet20:width=4", "--data", f"imagefolder:{root / 'data'}", "--image-size", "16",
                 "--latency-batch", "64", "--latency-warmup", "1", "--latency-repeats", "3", "--calibration", "4",
                 "--cache-dir", str(root / "cache"), "--out", str(table)]) == 0
    device_table = load_device_table(str(table))
    dense_ms = device_table.estimate(build_tiny())
    # a tiny network is mostly per-layer overhead: the budget halfway between its most pruned policy and dense
    space = SearchSpace.from_model(build_tiny(), torch.zeros(1, 3, 16, 16), load_rules("cifar_resnet"))
    floor = device_table.estimate(apply_policy(build_tiny(), space, space.most_pruned(), torch.zeros(1, 3, 16, 16))[0])
    budget = round((1 + floor / dense_ms) / 2, 3)
    recipe = tmp_path / "bench_tiny_latency.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "resnet20:width=4", "data": "imagefolder:unused", "image_size": 16, "checkpoint": str(bench["ckpt"]),
        "target": "latency", "budget": str(budget), "latency_batch": 64, "latency_warmup": 1, "latency_repeats": 3,
        "latency_table": str(table), "seed": 0,
    }))
    out = tmp_path / "B.md"
    assert main(["bench", "--quick", "--data-root", str(root / "data"), "--study", str(recipe), "--searchers", "uniform",
                 "--sections", "trials,time", "--time-limit", "60", "--out", str(out),
                 "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(root / "cache"), "--set", "trials=2",
                 "--set", "final_steps=3", "--set", "threads=1"]) == 0
    (run_root,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    run, other = json.loads((run_root / "results.json").read_text())["runs"]
    if (other["final_test"], other["final_cost"]) == (run["final_test"], run["final_cost"]):  # one pick, one reading
        assert other["measured_fraction"] == run["measured_fraction"]
    assert run["error"] is None and run["within_budget"]
    model = load_slimmed(Path(run["run_dir"]) / "trials" / "model.pt", build_tiny())
    assert run["final_cost"] == pytest.approx(device_table.estimate(model))  # the table's verdict, not a reading
    assert run["limit"] == pytest.approx(budget * dense_ms)
    assert 0.0 < run["measured_fraction"] < 5.0  # read here: a ratio to dense over the budget
    text = out.read_text()
    assert "table estimate (measured here)" in text and f"(measured {run['measured_fraction']:.3f})" in text
    assert "`table.json`, profiled once" in text


def build_tiny() -> torch.nn.Module:
    from autoprune.models import build_model

    return build_model("resnet20:width=4", num_classes=3, in_channels=3)
