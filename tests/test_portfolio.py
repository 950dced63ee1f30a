"""Portfolio search on the toy problem, driven by the real loop and ledger: allocation, telling,
set-up phases, determinism and resume."""

from __future__ import annotations

import warnings
from concurrent.futures import Future

import optuna
import pytest

from autoprune.costs import CostSettings
from autoprune.errors import UserError
from autoprune.rules import SpaceRules
from autoprune.runner import LoopConfig, replay, run_loop
from autoprune.searchers import _REGISTRY, RandomSearcher, make_searcher, register
from autoprune.searchers.portfolio import PortfolioConfig, PortfolioSearcher
from autoprune.study import COMPLETE, Ledger, Trial
from autoprune.testing.toy import ToyProblem, best_feasible
from autoprune.trial import ScoringConfig, TrialOutcome, TrialRequest


class ToyExecutor:
    """Scores a policy on the toy problem at once; probes (no limit) are scored unconstrained."""

    def __init__(self, problem: ToyProblem) -> None:
        self.problem = problem

    def submit(self, fn, recipe, request: TrialRequest) -> Future:
        p, policy = self.problem, request.policy
        constraint = p.cost(policy) / p.budget - 1.0 if request.limit is not None else None
        rejected = constraint is not None and constraint > 0
        metrics = {"macs": p.cost(policy)} if rejected else {"val_accuracy": p.accuracy(policy), "macs": p.cost(policy)}
        future: Future = Future()
        future.set_result(TrialOutcome(request.number, metrics, rejected, constraint, {}))
        return future


def new_ledger(problem: ToyProblem) -> Ledger:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return Ledger(optuna.create_study(direction="maximize"), problem.space())


def search(searcher, problem: ToyProblem, trials: int, seed: int = 0, ledger: Ledger | None = None, batch: int = 1,
           on_trial=None):
    """``trials`` scored trials with the runner's loop; returns the searcher and the ledger."""
    ledger = ledger or new_ledger(problem)
    searcher = make_searcher(searcher) if isinstance(searcher, str) else searcher
    space = problem.space()
    searcher.setup(problem.context(seed))
    told = replay(searcher, ledger)
    template = TrialRequest(number=-1, policy=space.dense(), seed=0, fidelity="kd:1", target="macs",
                            limit=problem.budget, rules=SpaceRules(), cost=CostSettings((1, 8, 8)), scoring=ScoringConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # knapsack's fallback notes
        scored_before = sum(t.scored and t.fidelity == template.fidelity for t in ledger.trials()) if told else 0
        run_loop(None, template, searcher, ledger, ToyExecutor(problem), LoopConfig(trials=trials - scored_before, batch=batch, seed=seed),
                 on_trial=on_trial)
    return searcher, ledger


def gap(optimum: float, ledger: Ledger) -> float:
    return optimum - best_feasible([t for t in ledger.trials() if t.feasible])


def test_the_strong_member_gets_most_trials_and_the_gap_is_no_worse_than_alone():
    # knapsack solves the additive toy problem; random search is far behind it at 12 trials.
    # The weak member is listed first, so the strong one must earn its trials.
    trials, seeds, portfolio_gaps, alone_gaps, random_gaps = 12, range(5), [], [], []
    for seed in seeds:
        problem = ToyProblem.make(n_slots=6, seed=seed)
        optimum = problem.optimum()[0]  # by enumeration: compute it once
        portfolio, ledger = search("portfolio:random,knapsack", problem, trials, seed)
        _, alone = search("knapsack", problem, trials, seed)
        random_gaps.append(gap(optimum, search("random", problem, trials, seed)[1]))
        share = portfolio.history.count("knapsack") / len(portfolio.history)
        members = [t.member for t in ledger.trials() if not portfolio.is_probe(t.policy)]
        assert members.count("knapsack") / len(members) == pytest.approx(share)  # the ledger says the same
        portfolio_gaps.append(gap(optimum, ledger))
        alone_gaps.append(gap(optimum, alone))
        print(f"seed {seed}: knapsack share {share:.2f}, gap {portfolio_gaps[-1]:.4f} (alone {alone_gaps[-1]:.4f})")
        assert share >= 0.6
    assert sum(portfolio_gaps) <= sum(alone_gaps) + 1e-12
    assert sum(portfolio_gaps) < 0.5 * sum(random_gaps)  # the weak member really is weak


def test_reward_is_improvement_per_second():
    """Two members make the same improvement; the one whose trial cost less time goes next."""
    problem = ToyProblem.make(seed=1)
    space = problem.space()

    def told(cost_a: float, cost_b: float) -> str | None:
        portfolio = make_searcher("portfolio:random,qmc")
        portfolio.setup(problem.context(0))
        for number, (member, accuracy, seconds) in enumerate(
                [("random", 0.5, 1.0), ("qmc", 0.6, 1.0), ("random", 0.7, cost_a), ("qmc", 0.8, cost_b)]):
            policy = space.policy({"slot0": (0.2, 0.4, 0.6, 0.8)[number]})
            metrics = {"val_accuracy": accuracy, "macs": 0.4, "total_s": seconds}
            portfolio.tell(Trial(number, policy, COMPLETE, metrics, constraint=-0.1, member=member))
        return portfolio.next_member()

    assert told(1.0, 20.0) == "random"  # same 0.1 gains each; qmc's took 20 s
    assert told(20.0, 1.0) == "qmc"


def test_seeded_runs_repeat_exactly():
    problem = ToyProblem.make(seed=3)
    runs = [search("portfolio", problem, 10, seed=7)[1].trials() for _ in range(2)]
    assert [(t.policy, t.member) for t in runs[0]] == [(t.policy, t.member) for t in runs[1]]
    assert {t.member for t in runs[0]} == set(PortfolioConfig().members)


def test_resume_continues_the_allocation():
    problem = ToyProblem.make(seed=2)
    whole, whole_ledger = search("portfolio:uniform,knapsack", problem, 12, seed=1)
    first, ledger = search("portfolio:uniform,knapsack", problem, 6, seed=1)
    resumed = make_searcher("portfolio:uniform,knapsack")
    resumed.setup(problem.context(1))
    replay(resumed, ledger)
    def state(portfolio):
        return [(s.name, s.trials, s.scored, s.probes, s.seconds, s.setup_s, s.gain) for s in portfolio.shares()]

    assert state(resumed) == state(first) and resumed.history == first.history
    resumed, ledger = search("portfolio:uniform,knapsack", problem, 12, seed=1, ledger=ledger)
    # both members decide from the ledger alone, so the resumed search is the uninterrupted one
    assert [(t.policy, t.member) for t in ledger.trials()] == [(t.policy, t.member) for t in whole_ledger.trials()]
    assert resumed.history == whole.history


def test_every_member_is_told_every_trial_and_a_probe_only_to_the_members_that_asked_for_it():
    problem = ToyProblem.make(seed=4)
    portfolio, ledger = search("portfolio:tpe,knapsack,knapsack-greedy", problem, 10, seed=0)
    trials = [t for t in ledger.trials() if t.state in ("complete", "rejected")]
    probes = {t.number for t in trials if portfolio.is_probe(t.policy)}
    assert len(probes) == 1 + 6 * 2  # one scan (dense + 2 ratios per slot), shared by both knapsacks
    assert {t.member for t in trials if t.number in probes} == {"knapsack"}
    members = portfolio.members
    tpe_told = {t.number for t in members["tpe"].told if t.number >= 0}  # -1: a duplicate, told as failed
    assert tpe_told == {t.number for t in trials} - probes
    assert {t.number for t in members["knapsack-greedy"].told} >= probes
    greedy = [t for t in trials if t.member == "knapsack-greedy"]
    assert greedy and all(t.feasible for t in greedy)  # it went straight to its solution


def test_the_scan_runs_in_one_go_at_its_members_entry():
    problem = ToyProblem.make(seed=5)
    portfolio, ledger = search("portfolio:random,knapsack", problem, 5, seed=0)
    members = [t.member for t in ledger.trials()]
    assert members[0] == "random"
    first_knapsack = members.index("knapsack")
    scan = [t for t in ledger.trials()[first_knapsack:] if portfolio.is_probe(t.policy)]
    assert len(scan) == 13 and all(m == "knapsack" for m in members[first_knapsack:first_knapsack + 14])
    share = next(s for s in portfolio.shares() if s.name == "knapsack")
    assert share.probes == 13 and share.setup_s == 13.0  # one unit per probe on the toy clock


def test_a_batch_of_asks_has_no_duplicates_and_a_member_for_each():
    problem = ToyProblem.make(seed=6)
    portfolio, ledger = search("portfolio:tpe,random,knapsack", problem, 12, seed=2, batch=3)
    trials = ledger.trials()
    assert len({t.policy for t in trials}) == len(trials)
    assert all(t.member in ("tpe", "random", "knapsack") for t in trials)
    assert sum(t.scored and t.fidelity == "kd:1" for t in trials) >= 12
    assert sum(portfolio.is_probe(t.policy) for t in trials) == 13  # the scan, three at a time


def test_names_and_bad_input():
    portfolio = make_searcher("portfolio:tpe, knapsack")
    assert isinstance(portfolio, PortfolioSearcher) and portfolio.config.members == ("tpe", "knapsack")
    assert make_searcher("portfolio").config.members == PortfolioConfig().members
    for bad, message in [("portfolio:tpe,annealing", "unknown member annealing"), ("portfolio:tpe", "two distinct"),
                         ("portfolio:tpe,tpe", "two distinct"), ("portfolio:portfolio,tpe", "unknown member portfolio"),
                         ("portfolio:", "two distinct")]:
        with pytest.raises(UserError, match=message) as error:
            make_searcher(bad)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="min_share"):
        PortfolioConfig(members=("tpe", "random"), min_share=0.6)
    with pytest.raises(UserError, match="clock"):
        PortfolioConfig(clock="wall")


def test_the_report_and_show_give_each_members_share_and_the_pick(tmp_path):
    from rich.console import Console

    from autoprune.commands import show_command
    from autoprune.report import member_lines, member_rows

    problem = ToyProblem.make(seed=0)
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr("fingerprint", problem.space().fingerprint)
    _, ledger = search("portfolio:random,knapsack", problem, 6, ledger=Ledger(study, problem.space()))
    trials = ledger.trials()
    best = max((t for t in trials if t.feasible and t.scored), key=lambda t: t.accuracy or 0.0)
    rows = {r.member: r for r in member_rows(trials, best.number)}
    assert set(rows) == {"random", "knapsack"} and rows[best.member].found_pick
    assert sum(r.trials for r in rows.values()) == sum(t.fidelity == "kd:1" for t in trials)
    assert rows["knapsack"].probes == 13 and rows["random"].probes == 0
    assert sum(r.trial_share for r in rows.values()) == pytest.approx(1.0)
    assert any("`knapsack`" in line for line in member_lines(list(rows.values())))
    assert member_rows([], None) == [] and member_lines([]) == []
    console = Console(record=True, width=200)
    show_command(str(tmp_path), None, console)
    text = console.export_text()
    assert "Portfolio members" in text and "knapsack" in text and "portfolio/" in text


def test_the_loop_hands_on_the_trials_as_the_ledger_gives_them_back():
    """The bench reads member shares from the trials the loop hands ``on_trial`` (the headline
    bench's portfolio seed 0 recorded none: those trials had no member, the ledger's had)."""
    problem = ToyProblem.make(seed=0)
    live = []
    _, ledger = search("portfolio:random,knapsack", problem, 6, batch=2, on_trial=lambda t, _o: live.append(t))
    stored = {t.number: t for t in ledger.trials()}
    assert {t.member for t in live} == {"random", "knapsack"}
    for trial in live:
        again = stored[trial.number]
        assert (trial.member, trial.probe, trial.state, trial.fidelity) == (again.member, again.probe, again.state, again.fidelity)
        assert trial.metrics["member_ask_s"] == again.metrics["member_ask_s"]


class WarmingRandom(RandomSearcher):
    """Random search whose first four proposals it calls a warm-up, as an RL searcher's random
    episodes before its agent learns (``amc``)."""

    name = "warming-random"

    def _setup(self) -> None:
        super()._setup()
        self.asked = 0

    @property
    def warming_up(self) -> bool:
        return self.asked < 4

    def _ask(self, n: int):
        policies = super()._ask(n)
        self.asked += len(policies)
        return policies


def test_a_warm_up_gets_a_fair_share_and_is_not_judged():
    register(WarmingRandom.name, WarmingRandom)
    try:
        problem = ToyProblem.make(seed=1)
        portfolio, ledger = search("portfolio:knapsack,warming-random", problem, 14, seed=0)
    finally:
        _REGISTRY.pop(WarmingRandom.name)
    ordinary = [t for t in ledger.trials() if not portfolio.is_probe(t.policy)]
    warm = [t for t in ordinary if t.metrics.get("member_warmup") == 1.0]
    assert len(warm) == 4 and {t.member for t in warm} == {WarmingRandom.name}
    first_eight = [t.member for t in ordinary[:8]]
    assert first_eight.count(WarmingRandom.name) >= 4  # its fair share, though knapsack's rate is far higher
    after = [t.member for t in ordinary[ordinary.index(warm[-1]) + 1:]]
    assert after.count("knapsack") > after.count(WarmingRandom.name)  # then it is judged, and loses
    share = next(s for s in portfolio.shares() if s.name == WarmingRandom.name)
    assert share.trials == len([t for t in ordinary if t.member == WarmingRandom.name])
    assert share.seconds == share.trials - 4  # one unit per trial on the toy clock, warm-up left out


def test_member_options_reach_the_members_and_bench_names_a_chosen_portfolio():
    from autoprune.bench.command import bench_searchers
    from autoprune.searchers import make_searcher, searcher_names

    portfolio = make_searcher("portfolio:amc,tpe", agent="td3")
    assert portfolio._members["amc"].searcher.config.agent == "td3"
    assert make_searcher("portfolio:amc+tpe")._members["amc"].searcher.config.agent == "ddpg"
    chosen = bench_searchers("random,portfolio:tpe+knapsack,uniform", searcher_names())
    assert chosen == ("random", "portfolio:tpe+knapsack", "uniform")
    with pytest.raises(UserError, match="nope"):
        bench_searchers("random,portfolio:tpe+nope", searcher_names())


def test_an_rl_member_says_when_it_is_warming_up():
    from autoprune.searchers import make_searcher

    amc = make_searcher("amc")
    assert amc.warming_up is False  # not set up: nothing to warm up yet
    amc.setup(ToyProblem.make(seed=0).context())
    assert amc.warming_up and amc.warmup >= 3
    amc.episodes = amc.warmup
    assert not amc.warming_up


def test_the_default_portfolio_is_built_with_the_options_the_cli_passes():
    """The CLI passes ``agent`` to every searcher; members that take none (``knapsack-greedy``,
    whose constructor forwards its keywords) must not receive it."""
    from autoprune.searchers import make_searcher

    assert make_searcher("portfolio", agent=None).name == "portfolio"
    assert make_searcher("knapsack-greedy", agent=None).name == "knapsack-greedy"
