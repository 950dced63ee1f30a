"""The RL searchers (amc, purl) on stable-baselines3: learning on the toy problem, the action wall,
determinism, resume, purl's probes, AMC's state on a real network, and the missing extra."""

from __future__ import annotations

import dataclasses
import itertools
import sys

import numpy as np
import pytest
import torch

from autoprune.errors import UserError
from autoprune.searchers import make_searcher, searcher_names
from autoprune.searchers._rl import FEATURES, PruningMDP
from autoprune.searchers.amc import AMCConfig, AMCSearcher
from autoprune.searchers.purl import PuRLSearcher
from autoprune.study import COMPLETE, Trial
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy

pytestmark = pytest.mark.rl

# A small agent so the tests take seconds; AMC's own sizes are the defaults.
SMALL = AMCConfig(hidden=32, updates_per_step=2)


def small(name: str = "amc", **changes) -> AMCSearcher:
    config = dataclasses.replace(SMALL, **changes)
    return AMCSearcher(config) if name == "amc" else PuRLSearcher(config)


def test_registered_by_name():
    assert {"amc", "purl"} <= set(searcher_names())
    assert make_searcher("amc", agent="td3").config.agent == "td3"
    assert make_searcher("random", agent="td3").name == "random"  # options a searcher lacks are ignored


def test_unknown_agent_is_a_user_error():
    with pytest.raises(UserError, match="unknown --agent 'ppo'"):
        AMCSearcher(agent="ppo")


def test_amc_beats_random_at_equal_trials():
    trials, amc, rnd = 30, [], []
    for seed in range(5):
        problem = ToyProblem.make(seed=seed)
        optimum = problem.optimum()[0]
        amc.append(optimum - best_feasible(run_toy(small(episodes=trials), problem, trials, seed=seed)))
        rnd.append(optimum - best_feasible(run_toy(make_searcher("random"), problem, trials, seed=seed)))
    assert np.mean(amc) < np.mean(rnd), (amc, rnd)


@pytest.mark.parametrize("agent", ["ddpg", "td3", "sac"])
def test_every_policy_meets_the_budget_by_its_estimate(agent):
    # a tight budget, and an estimate that is not the true cost: the wall must follow the estimate
    problem = ToyProblem.make(n_slots=5, seed=3, budget=0.35)
    estimate = lambda p: 1.1 * problem.cost(p)  # noqa: E731
    ctx = dataclasses.replace(problem.context(1), estimate=estimate, limit=problem.budget)
    searcher = small(agent=agent, episodes=12)
    searcher.setup(ctx)
    proposed = []
    for number in range(12):
        (policy,) = searcher.ask(1)
        proposed.append(policy)
        metrics = {"val_accuracy": problem.accuracy(policy), "macs": problem.cost(policy)}
        searcher.tell(Trial(number, policy, COMPLETE, metrics, constraint=problem.cost(policy) / problem.budget - 1))
    assert searcher.agent.updates > 0  # the agent learnt, beyond its warm-up
    assert all(estimate(p) <= problem.budget for p in proposed)
    assert len(set(proposed)) == len(proposed)


def test_the_wall_allows_exactly_the_actions_that_can_still_meet_the_budget():
    problem = ToyProblem.make(n_slots=4, seed=5, budget=0.4)
    mdp = PruningMDP(problem.context())
    top = [len(v.choices) - 1 for v in mdp.variables]
    for decided in itertools.product(range(5), repeat=2):
        low = mdp.lowest_index(list(decided))
        reachable = [k for k in range(5) if mdp.fits([*decided, k, *top[3:]])]
        assert low == (min(reachable) if reachable else top[2])
        assert mdp.act(list(decided), 1.0) == low  # "keep everything" is clipped to the wall


@pytest.mark.parametrize("name", ["amc", "purl"])
def test_same_seed_same_trials(name):
    problem = ToyProblem.make(seed=2)
    a = run_toy(small(name, episodes=10), problem, 10, seed=4, probes=True)
    b = run_toy(small(name, episodes=10), problem, 10, seed=4, probes=True)
    c = run_toy(small(name, episodes=10), problem, 10, seed=5, probes=True)
    assert [t.policy for t in a] == [t.policy for t in b]
    assert [t.policy for t in a] != [t.policy for t in c]


def _drive(searcher: AMCSearcher, problem: ToyProblem, ctx, start: int, stop: int, told: list[Trial]) -> list[Trial]:
    """Set up on ``ctx``, replay ``told`` (as the runner does on --resume), then run trials start..stop."""
    searcher.setup(ctx)
    for trial in told:
        searcher.tell(trial)
    out = []
    for number in range(start, stop):
        (policy,) = searcher.ask(1)
        metrics = {"val_accuracy": problem.accuracy(policy), "macs": problem.cost(policy)}
        trial = Trial(number, policy, COMPLETE, metrics, constraint=problem.cost(policy) / problem.budget - 1)
        searcher.tell(trial)
        out.append(trial)
    return out


def test_resume_continues_the_agent(tmp_path):
    problem = ToyProblem.make(seed=1)
    ctx = dataclasses.replace(problem.context(3), run_dir=tmp_path / "run")
    first = small(episodes=14)
    before = _drive(first, problem, ctx, 0, 8, [])
    steps, updates = first.agent.steps, first.agent.updates
    assert steps == 8 * 6 and updates > 0
    assert (tmp_path / "run" / "agent" / "agent.zip").is_file() and (tmp_path / "run" / "agent" / "replay.pkl").is_file()

    resumed = small(episodes=14)
    after = _drive(resumed, problem, ctx, 8, 14, before)
    assert resumed.agent.steps == 14 * 6  # the replayed trials were not learnt twice: the count carries on
    assert resumed.agent.updates > updates
    uninterrupted = _drive(small(episodes=14), problem, problem.context(3), 0, 14, [])
    assert [t.policy for t in before + after] == [t.policy for t in uninterrupted]


def test_a_resumed_run_refuses_another_agent(tmp_path):
    problem = ToyProblem.make(seed=1)
    ctx = dataclasses.replace(problem.context(0), run_dir=tmp_path)
    _drive(small(episodes=4), problem, ctx, 0, 2, [])
    with pytest.raises(UserError, match="--agent ddpg"):
        small(agent="td3").setup(ctx)


def test_amc_learns_from_trials_it_did_not_propose():
    problem = ToyProblem.make(seed=0)
    searcher = small()
    searcher.setup(problem.context())
    trials = run_toy(make_searcher("random"), problem, 5)
    for t in trials:
        searcher.tell(t)
    assert searcher.agent.steps == 5 * 6 and searcher.episodes == 5
    assert all(p not in {t.policy for t in trials} for p in searcher.ask(3))


def test_workers_get_distinct_episodes():
    problem = ToyProblem.make(seed=0)
    trials = run_toy(small(episodes=12), problem, 12, batch=4)
    assert len({t.policy for t in trials}) == len(trials) == 12


def test_purl_probes_are_not_counted_against_trials():
    problem = ToyProblem.make(seed=0)
    searcher = small("purl", episodes=6)
    trials = run_toy(searcher, problem, 6, probes=True)
    probes = [t for t in trials if t.fidelity == "bn"]
    full = [t for t in trials if t.fidelity != "bn"]
    assert len(full) == 6 and all(t.feasible for t in full)
    assert 6 <= len(probes) <= 6 * 5  # up to one per step but the last; repeated probes are scored once
    assert all(searcher.is_probe(t.policy) and not searcher.is_probe(f.policy) for t in probes for f in full)
    assert len({t.policy for t in trials}) == len(trials)
    # every probe fills the undecided variables to the budget: a network at the budget, like the trial
    assert all(problem.cost(t.policy) <= problem.budget for t in probes)
    assert searcher.agent.steps == 6 * 6


def test_the_probe_fidelity_reaches_the_searchers_that_probe(tmp_path, capsys):
    from autoprune.cli import main
    from autoprune.searchers import make_searcher

    assert make_searcher("purl").probe_fidelity == "bn"  # PuRL's own choice
    assert make_searcher("purl", probe_fidelity="kd:30").probe_fidelity == "kd:30"
    assert make_searcher("knapsack", probe_fidelity="kd:30").probe_fidelity == "kd:30"
    assert make_searcher("portfolio:purl,tpe", probe_fidelity="kd:30").probe_fidelity == "kd:30"
    assert main(["search", "--probe-fidelity", "kd:x", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--probe-fidelity" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_purl_rewards_sum_to_the_episode_reward():
    problem = ToyProblem.make(seed=0)
    searcher = small("purl")
    searcher.setup(problem.context())
    queue = []  # the first episode: its probes (up to one per step but the last), then its trial
    while not queue or searcher.is_probe(queue[-1]):
        queue += searcher.ask(1)
    assert 1 <= len(queue) - 1 <= 5
    for number, policy in enumerate(queue):
        searcher.tell(Trial(number, policy, COMPLETE, {"val_accuracy": problem.accuracy(policy)},
                            fidelity="bn" if searcher.is_probe(policy) else "kd:1",
                            constraint=None if searcher.is_probe(policy) else -0.01))
    rewards = searcher.agent.raw[: searcher.agent.steps]
    assert rewards.sum() == pytest.approx(problem.accuracy(queue[-1]))
    assert rewards[0] == pytest.approx(problem.accuracy(queue[0]))  # the first step's own signal


def test_amc_state_on_a_residual_network():
    from autoprune.costs.layers import AnalyticEstimate, record_layers
    from autoprune.models.cifar_resnet import resnet20
    from autoprune.searchers import SearchContext
    from autoprune.space import SearchSpace

    torch.manual_seed(0)
    model = resnet20(in_channels=1, width=8).eval()
    x = torch.randn(1, 1, 16, 16)
    space = SearchSpace.from_model(model, x)
    layers = record_layers(model, space, x, 1)
    dense = AnalyticEstimate(layers, space, "macs", 0.0).count(space.dense())
    estimate = AnalyticEstimate(layers, space, "macs", dense)
    ctx = SearchContext(space, "macs", "macs", 0.5 * dense, dense, 0, cost_of=estimate, estimate=estimate,
                        model=model, example_inputs=x)
    mdp = PruningMDP(ctx)
    assert mdp.steps == len(space.variables) == 12  # residual-coupled groups are steps like any other
    static = mdp.static
    assert static.shape == (12, len(FEATURES) - 3) and (static >= 0).all() and (static <= 1).all()
    for feature in ("in_channels", "out_channels", "stride", "params", "cost_share"):
        assert np.ptp(static[:, FEATURES.index(feature)]) == pytest.approx(1.0), feature  # read from the network
    searcher = small(episodes=6)
    searcher.setup(ctx)
    for number in range(6):
        (policy,) = searcher.ask(1)
        assert estimate(policy) <= 0.5 * dense
        searcher.tell(Trial(number, policy, COMPLETE, {"val_accuracy": 0.5, "macs": estimate(policy)}, constraint=-0.1))


def test_missing_stable_baselines3_is_one_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    monkeypatch.delitem(sys.modules, "autoprune.searchers._rl_agent", raising=False)
    searcher = AMCSearcher()
    with pytest.raises(UserError, match=r"pip install -e '\.\[rl\]'"):
        searcher.setup(ToyProblem.make().context())


# -- end to end, from the command line, on a tiny version of the default task -------------------------
# Marked slow: each trains a tiny dense model and searches (minutes on two busy cores; -m slow runs them).
TINY = ["--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2", "--fidelity", "kd:3",
        "--final-steps", "3", "--latency-batch", "2", "--seed", "1", "--target", "macs", "--budget", "0.6"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _ledger(run_dir):
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")  # the only study
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow
def test_amc_from_the_command_line_and_resumed(tmp_path, cache):
    import json

    from autoprune.cli import main

    run_dir = tmp_path / "amc"
    assert main(["search", *TINY, "--searcher", "amc", "--trials", "3", "--run-dir", str(run_dir), "--cache-dir", cache]) == 0
    state = json.loads((run_dir / "agent" / "state.json").read_text())
    search = [t for t in _ledger(run_dir) if t.user_attrs["fidelity"] == "kd:3"]
    assert len(search) == 3 and {t.user_attrs["searcher"] for t in search} == {"amc"}
    assert sorted(state["learned"]) == sorted(t.number for t in search)  # every episode learnt is a ledger trial
    assert main(["search", *TINY, "--searcher", "amc", "--trials", "4", "--run-dir", str(run_dir), "--cache-dir", cache,
                 "--resume"]) == 0
    resumed = json.loads((run_dir / "agent" / "state.json").read_text())
    search = [t for t in _ledger(run_dir) if t.user_attrs["fidelity"] == "kd:3"]
    assert len(search) >= 4 and sorted(resumed["learned"]) == sorted(t.number for t in search)
    assert resumed["episodes"] == len(search) and resumed["played"] == len(search)  # the agent carried on
    assert (run_dir / "policy.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["bn", "kd:1"])
def test_purl_from_the_command_line(tmp_path, cache, probe):
    from autoprune.cli import main

    run_dir = tmp_path / "purl"  # one variable per stage: 4 steps, so at most 3 probes an episode
    assert main(["search", *TINY, "--searcher", "purl", "--trials", "2", "--granularity", "stage", "--run-dir",
                 str(run_dir), "--cache-dir", cache, *(["--probe-fidelity", probe] if probe != "bn" else [])]) == 0
    trials = _ledger(run_dir)
    probes = [t for t in trials if t.user_attrs["fidelity"] == probe]
    search = [t for t in trials if t.user_attrs["fidelity"] == "kd:3"]
    assert len(search) == 2  # the probes did not use up the trial budget
    assert probes and all(t.user_attrs["searcher"] == "purl" for t in probes + search)
    assert all(not t.constraints for t in probes) and all(t.constraints for t in search)
