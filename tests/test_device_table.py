"""A latency table profiled on a deploy device and used by a search elsewhere (`autoprune profile`,
`--latency-table`): the table's estimate of a built network equals its sum over the policy's
shapes, missing shapes are approximated and counted, bad tables are refused in one line, and the
CLI round trip (profile, search, measure) works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.costs import CostSettings
from autoprune.costs.layers import PolicyShapes, record_layers
from autoprune.costs.table import load_device_table, profile_device_table
from autoprune.errors import UserError
from autoprune.models import build_model
from autoprune.prune import apply_policy
from autoprune.rules import load_rules
from autoprune.space import SearchSpace

INPUT = (1, 16, 16)
TINY = ["--model", "resnet20:width=4", "--image-size", "16", "--latency-batch", "2", "--latency-warmup", "1",
        "--latency-repeats", "3"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet20:width=4", num_classes=10, in_channels=1).eval()
    example = torch.randn(1, *INPUT)
    space = SearchSpace.from_model(model, example, load_rules("cifar_resnet"))
    settings = CostSettings(INPUT, batch_size=2, threads=1, warmup=1, repeats=3)
    blob = profile_device_table(model, space, example, settings, model_spec="resnet20:width=4", calibration_policies=4)
    path = tmp_path_factory.mktemp("table") / "device.json"
    path.write_text(json.dumps(blob))
    return model, space, example, path, blob


def test_a_built_network_is_estimated_as_its_policy(profiled):
    """The estimate from a slimmed network's own layers is the one searchers compute from its policy:
    every layer shape the policy gives is in the table and is what the network has."""
    model, space, example, path, blob = profiled
    table = load_device_table(path)
    shapes = PolicyShapes(record_layers(model, space, example, table.batch_size), space)
    rng = np.random.default_rng(3)
    policies = [space.dense(), space.most_pruned(), *(space.sample(rng) for _ in range(6))]
    for policy in policies:
        slim, _ = apply_policy(model, space, policy, example)
        assert table.estimate(slim) == pytest.approx(table.estimate_shapes(shapes.of(policy)), rel=1e-9)
    assert table.approximated == 0
    # not "dense slower than most pruned": this tiny net's layer timings (batch 2, 3 passes) are
    # noise-sized, and a timing comparison is the benchmarks' job, not a unit test's
    assert table.estimate(model) > 0
    assert blob["calibration"]["n"] == 4 and 0 <= blob["held_out_median_error"]


def test_a_missing_shape_comes_from_its_nearest_neighbour(profiled, tmp_path):
    model, space, example, path, blob = profiled
    rows = blob["layers"]
    convs = [r for r in rows if r["kind"] == "conv" and r["cin"] > 1 and r["groups"] == 1]
    gone = max(convs, key=lambda r: r["cin"] * r["cout"])
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({**blob, "layers": [r for r in rows if r is not gone]}))
    table = load_device_table(damaged)
    from autoprune.costs.layers import LayerShape

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in gone.items() if k != "ms"}
    estimate = table.lookup(LayerShape(**fields))
    assert table.approximated == 1
    assert 0 < estimate < 100 * gone["ms"]


@pytest.mark.parametrize("content, words", [
    (None, "no such file"), ("{not json", "not a JSON file"), ('{"format": "other"}', "not a table written by"),
    ('{"format": "autoprune.device-table/1"}', "a damaged table"),
])
def test_bad_tables_are_refused_in_one_line(tmp_path, content, words):
    path = tmp_path / "table.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=words) as info:
        load_device_table(path)
    assert "\n" not in str(info.value)


def test_a_table_of_another_input_is_refused(profiled):
    table = load_device_table(profiled[3])
    with pytest.raises(UserError, match="profiled at 1x16x16 input, but this run's input is 1x8x8"):
        table.check((1, 8, 8))


def test_profile_search_and_measure_from_the_command_line(tmp_path, capsys):
    cache, table = str(tmp_path / "cache"), tmp_path / "phone.json"
    assert main(["profile", "--out", str(table), *TINY, "--calibration", "3", "--cache-dir", cache]) == 0
    printed = capsys.readouterr()
    assert "wrote" in printed.out + printed.err
    assert json.loads(table.read_text())["batch_size"] == 2
    run = tmp_path / "run"
    code = main(["search", "--latency-table", str(table), "--budget", "1000ms", "--model", "resnet20:width=4", "--image-size", "16",
                 "--dense-epochs", "1", "--trials", "2", "--fidelity", "bn", "--final-steps", "0",
                 "--run-dir", str(run), "--cache-dir", cache])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "estimated from latency table phone.json" in summary["cost_settings"]
    import autoprune

    exported = autoprune.load(run / "model.pt")
    assert summary["final"]["latency_ms"] == pytest.approx(load_device_table(table).estimate(exported), rel=1e-6)
    assert "estimated from the deploy device's latency table" in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["profile", "--measure", str(run / "model.pt"), "--table", str(table), "--latency-warmup", "1",
                 "--latency-repeats", "3"]) == 0
    printed = capsys.readouterr()
    assert "ms measured here" in printed.out + printed.err and "the table estimated" in printed.out + printed.err
    # a budget out of the table's reach is refused at once: an estimate is not read again
    code = main(["search", "--latency-table", str(table), "--budget", "0.05", "--model", "resnet20:width=4",
                 "--image-size", "16", "--dense-epochs", "1", "--run-dir", str(tmp_path / "low"), "--cache-dir", cache])
    printed = capsys.readouterr()
    said = " ".join((printed.out + printed.err).split())  # the console wraps long lines
    assert code == 2 and "cannot be met" in said and "estimated from latency table phone.json" in said
    assert "reading it again" not in said


def test_search_refuses_a_missing_table_before_any_work(tmp_path, capsys):
    code = main(["search", "--latency-table", str(tmp_path / "none.json"), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "--latency-table" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_macs_budget_with_a_table_is_estimated_in_macs(profiled, tmp_path):
    """A recipe that names a latency table (for latency budgets) searched at a MACs budget: its
    estimate must count MACs, or every policy 'fits' a limit of millions by its milliseconds and
    amc's wall and knapsack's plan never bind (found with --target macs on the bench recipe)."""
    from autoprune.pipeline import build_problem, search_context
    from autoprune.settings import SearchSettings

    *_, path, _ = profiled
    settings = SearchSettings(target="macs", budget="0.5", model="resnet20:width=4", image_size=16, dense_epochs=1,
                              latency_table=str(path), latency_batch=2, seed=0, cache_dir=str(tmp_path / "cache"),
                              run_dir=str(tmp_path / "r"), searcher="random")
    problem = build_problem(settings, log=lambda line: None)
    estimate = search_context(problem).estimate
    assert estimate(problem.space.dense()) == pytest.approx(problem.dense["macs"], rel=0.01)
    assert estimate(problem.space.most_pruned()) < 0.5 * problem.dense["macs"]
