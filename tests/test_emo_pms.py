"""EMO-PMS (`emo-pms`): divide by stage, per-stage pymoo sub-searches, merge by impairment."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import optuna
import pytest
import torch

from autoprune.errors import UserError
from autoprune.searchers import make_searcher, searcher_table
from autoprune.searchers._base import SearchContext
from autoprune.searchers._features import FeatureReconstruction
from autoprune.searchers._stages import Archive, StageScore, divide, merge, merge_front
from autoprune.searchers.emo import EmoSearcher
from autoprune.searchers.emo_pms import EmoPmsSearcher
from autoprune.study import COMPLETE, Trial
from autoprune.testing.stage_toy import StageToy
from autoprune.testing.toy import ToyProblem, run_toy

SEEDS = range(6)
CAP = 60  # scored trials a run may spend reaching the optimum


def _pms(problem: StageToy, **options) -> EmoPmsSearcher:
    return EmoPmsSearcher(scorer=problem.stage_scorer, log=lambda message: None, **options)


def _trials_to_optimum(searcher, problem: StageToy, seed: int) -> int | None:
    """Scored trials until the first that reaches the enumerated optimum (None: not within CAP)."""
    best = problem.optimum()[0]
    trials = run_toy(searcher, problem, CAP, seed=seed, until=lambda t: (t.accuracy or 0.0) >= best - 1e-9)
    reached = (trials[-1].accuracy or 0.0) >= best - 1e-9
    return sum(t.scored for t in trials) if reached else None


def test_registered_in_the_evolutionary_family():
    row = next(r for r in searcher_table() if r.name == "emo-pms")
    assert row.family == "evolutionary (pymoo)" and not row.baseline
    assert isinstance(make_searcher("emo-pms"), EmoPmsSearcher)


@pytest.mark.parametrize(("options", "match"), [
    ({"pop_size": 2}, "pop_size must be an integer >= 4"),
    ({"generations": 0}, "generations must be an integer >= 1"),
    ({"candidates": 0}, "candidates must be an integer >= 1"),
    ({"run": 0}, "run must be an integer >= 1"),
    ({"algorithm": "moead"}, "unknown emo-pms algorithm 'moead'"),
    ({"scorer": "features"}, "scorer must be callable"),
])
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(UserError, match=match) as info:
        EmoPmsSearcher(**options)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="steps >= 0"):
        FeatureReconstruction(steps=-1)


def test_without_data_to_score_stages_it_is_whole_network_emo():
    problem = ToyProblem.make(seed=0)
    alone = run_toy(EmoPmsSearcher(log=lambda message: None), problem, 12, seed=1)
    assert [t.policy for t in alone] == [t.policy for t in run_toy(EmoSearcher(), problem, 12, seed=1)]
    ctx = problem.context(0)
    subnet = divide(ctx.space, 4)[0]
    with pytest.raises(UserError, match="calibration images"):
        FeatureReconstruction()(ctx, subnet, [ctx.space.dense()])


def test_sub_networks_are_the_stages_or_runs_of_slots():
    staged = StageToy.make_staged((3, 3, 2)).space()
    assert [s.variables for s in divide(staged, 4)] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    flat = ToyProblem.make(n_slots=10).space()  # every slot its own stage: runs instead
    assert [s.variables for s in divide(flat, 4)] == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert [s.variables for s in divide(flat, 10)] == [tuple(range(10))]


def _enumerated_archives(problem: StageToy, ctx: SearchContext) -> list[Archive]:
    """Every candidate of every sub-network scored by the toy's exact stage loss."""
    space, archives = ctx.space, []
    for subnet in divide(space, 4):
        archive = Archive(subnet)
        for genes in itertools.product(*(range(len(space.variables[i].choices)) for i in subnet.variables)):
            policy = subnet.policy(space, genes)
            archive.points[genes] = (StageScore.of(problem.stage_scorer(ctx, subnet, [policy])[0]), problem.cost(policy))
        archives.append(archive)
    return archives


def test_merge_ranks_the_k_best_combinations_within_the_budget():
    """With every stage enumerated, the merge's list is the brute-force ranking of the space."""
    problem = StageToy.make_staged((2, 2, 1), seed=3, budget=0.45)
    ctx = problem.context(0)
    space = ctx.space
    archives = _enumerated_archives(problem, ctx)
    merged = merge(ctx, archives, 12)
    everything = [space.decode(x) for x in itertools.product(*(range(len(v.choices)) for v in space.variables))]
    ranked = sorted(1 - problem.accuracy(p) for p in everything if problem.cost(p) <= problem.budget)[:12]
    assert np.allclose([m.impairment for m in merged], ranked)
    assert merged[0].policy == problem.optimum()[1]


def test_for_a_front_the_merge_spreads_its_candidates_along_the_true_front():
    """With --objectives the merged candidates are points of the space's front at every cost level,
    not the k least impaired (all nearly dense)."""
    problem = StageToy.make_staged((2, 2, 1), seed=3, budget=1.0)
    ctx = problem.context(0, front=True)
    space = ctx.space
    archives = _enumerated_archives(problem, ctx)
    merged = merge_front(ctx, archives, 6)
    everything = [space.decode(x) for x in itertools.product(*(range(len(v.choices)) for v in space.variables))]
    points = [(1 - problem.accuracy(p), problem.cost(p)) for p in everything]
    assert len(merged) == 6 and [m.cost for m in merged] == sorted(m.cost for m in merged)
    for m in merged:  # nothing in the space is both less impaired and cheaper
        assert not any(e < m.impairment - 1e-12 and c < m.cost - 1e-12 for e, c in points)
    assert merged[0].cost < 0.3 and merged[-1].cost > 0.7  # the ends of the front, not only near dense
    assert merged != merge(ctx, archives, 6)


def test_searches_a_front_with_objectives():
    problem = StageToy.make_staged(seed=0, budget=1.0)
    searcher = _pms(problem, candidates=5)
    trials = run_toy(searcher, problem, 12, seed=0, front=True)
    assert len({t.policy for t in trials}) == 12
    assert [t.policy for t in trials[:5]] == [m.policy for m in searcher.merged]
    assert searcher._emo is not None and searcher._emo.objectives == ("error", "macs")


def test_reaches_the_optimum_in_fewer_full_evaluations_than_emo(capsys):
    """Scored trials until the enumerated optimum, per seed (None: not within CAP)."""
    rows = []
    for seed in SEEDS:
        problem = StageToy.make_staged(seed=seed)
        rows.append((seed, _trials_to_optimum(_pms(problem), problem, seed),
                     _trials_to_optimum(EmoSearcher(), problem, seed)))
    with capsys.disabled():
        print(f"\ntrials to the optimum within {CAP} (seed, emo-pms, emo): {rows}")
    pms = [CAP + 1 if p is None else p for _, p, _ in rows]
    emo = [CAP + 1 if e is None else e for _, _, e in rows]
    assert all(p <= e for p, e in zip(pms, emo, strict=True)), rows
    assert sum(p < e for p, e in zip(pms, emo, strict=True)) >= 5, rows
    assert np.median(pms) == 1, rows  # the top merged candidate is the optimum


def test_seeded_runs_repeat_exactly():
    problem = StageToy.make_staged(seed=1)
    a, b, c = (run_toy(_pms(problem, candidates=5), problem, 12, seed=s) for s in (3, 3, 4))
    assert [t.policy for t in a] == [t.policy for t in b] != [t.policy for t in c]


def test_merged_candidates_first_then_emo_seeded_with_every_trial():
    problem = StageToy.make_staged(seed=2)
    searcher = _pms(problem, candidates=3)
    trials = run_toy(searcher, problem, 10, seed=0)
    assert len(trials) == 10 and len({t.policy for t in trials}) == 10
    assert [m.policy for m in searcher.merged] == [t.policy for t in trials[:3]]
    assert searcher._emo is not None and len(searcher._emo.told) == 10
    assert searcher.trial_attrs(trials[0].policy)["emo_pms_rank"] == 0
    assert searcher.trial_attrs(trials[-1].policy) == {"emo_pms_step": "emo"}
    assert all(problem.cost(t.policy) <= problem.budget for t in trials)


def test_ratios_that_keep_the_same_widths_are_one_network():
    """8 channels in steps of 4: ratios 0 and 0.2 keep 8, the others 4, so many policies are one net."""
    problem = dataclasses.replace(StageToy.make_staged(seed=0, budget=0.8), channels=8, round_to=4)
    space = problem.space()
    searcher = _pms(problem, candidates=4)
    trials = run_toy(searcher, problem, 25, seed=0)
    networks = [tuple(space.kept_widths(t.policy).values()) for t in trials]
    assert len(trials) > 4 and len(set(networks)) == len(networks)
    assert sum(len(a.points) for a in searcher.archives) == searcher.sub_evaluations <= 2 ** 3 + 2 ** 3 + 2 ** 2


def test_foreign_trials_are_taken_and_not_proposed_again():
    problem = StageToy.make_staged(seed=0)
    best = problem.optimum()[1]
    searcher = _pms(problem)
    searcher.setup(problem.context(0))
    searcher.tell(Trial(0, best, COMPLETE, {"val_accuracy": problem.accuracy(best), "macs": problem.cost(best)},
                        searcher="tpe", constraint=problem.cost(best) / problem.budget - 1))
    asked = searcher.ask(3)
    assert searcher.merged[0].policy == best and best not in asked and len(asked) == 3


def _tiny_resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    """A ResNet-20 (width 8) whose BatchNorm statistics are those of the images, as after training."""
    from autoprune.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20:width=8", num_classes=10, in_channels=1)
    images = torch.randn(96, 1, 16, 16)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval(), images


def test_the_feature_scorer_ranks_heavy_pruning_of_a_stage_worse():
    from autoprune.space import SearchSpace

    model, images = _tiny_resnet()
    x = images[:1]
    space = SearchSpace.from_model(model, x)
    ctx = SearchContext(space=space, target="macs", metric="macs", limit=0.5, dense_cost=1.0, seed=0,
                        cost_of=lambda p: 1.0, model=model, example_inputs=x, calibration=lambda n: images[:n])
    scorer = FeatureReconstruction(steps=2, images=64)
    subnets = {s.name: s for s in divide(space, 4)}
    assert set(subnets) == {"conv1", "layer1", "layer2", "layer3"}
    layer2 = subnets["layer2"]
    # the stage removes channels from its output: it is compared through the next stage's first layers
    assert scorer.reference(ctx, layer2).points == ["layer3.0.conv1", "layer3.0.shortcut.0"]
    light, heavy = (layer2.policy(space, [space.variables[i].choices.index(r) for i in layer2.variables])
                    for r in (0.2, 0.7))
    scores = scorer(ctx, layer2, [space.dense(), light, heavy])
    assert all(np.isfinite([s.feature, s.impairment]).all() for s in scores)
    assert scores[0] == StageScore(0.0, 0.0)
    assert 0 < scores[1].feature < scores[2].feature and scores[1].impairment < scores[2].impairment
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer1 = subnets["layer1"]
    scorer(ctx, layer1, [layer1.policy(space, [4] * len(layer1.variables))])  # read-only: the dense model stays

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_cli_search_end_to_end(tmp_path):
    """The default task (digits) at test_cli's small settings; stage granularity keeps each
    sub-search to at most 9 candidates. The width-4 model has only 8 distinct networks at stage
    granularity (widths in steps of 4), 6 of them within 0.8 of dense MACs but 2 within 0.6:
    hence 0.8, so that two merged candidates and two of emo's find new networks. About 4 minutes
    on a loaded core, most of it the dense training and trials."""
    from autoprune.cli import main

    run_dir = tmp_path / "run"
    code = main(["search", "--searcher", "emo-pms", "--target", "macs", "--budget", "0.8", "--trials", "4",
                 "--granularity", "stage", "--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2",
                 "--fidelity", "kd:3", "--final-steps", "3", "--latency-batch", "2", "--seed", "1",
                 "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scored"] == 4 and summary["final"]["within_budget"]
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    steps = [t.user_attrs.get("emo_pms_step") for t in study.trials if t.user_attrs.get("fidelity") == "kd:3"]
    assert steps == ["merged", "merged", "emo", "emo"]
