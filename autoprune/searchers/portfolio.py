"""Portfolio search: several searchers on one ledger and one trial budget, a bandit choosing who asks.

Which searcher wins depends on the model and the budget (``BENCHMARKS.md``), and every searcher
already learns from trials it did not ask, so several can share one search. ``--searcher
portfolio`` runs the default members, ``--searcher portfolio:tpe,knapsack`` a chosen set.

Who asks next (``PortfolioSearcher.next_member``), in this order:

1. A member in its set-up phase keeps the turn: its proposals are probes (``is_probe``, e.g.
   knapsack's sensitivity scan), and the scan runs in one go so its solution comes early.
2. Entry: a member that has proposed no ordinary trial yet, in the listed order.
3. Minimum share: a member below ``min_share`` of the ordinary proposals (pending included).
4. Warm-up: a member that says it is ``warming_up`` (an RL searcher's random episodes) is asked
   at its fair share, ``1 / members``, and is not judged on those trials.
5. The bandit: the highest rate of improvement of the best feasible accuracy per second of
   search, shrunk towards the pooled rate by ``prior_trials`` trials' worth of time; ties go to
   the member that found the current best, then to the one with fewer trials, then listed order.

A trial's reward is how much it raised the best feasible accuracy told so far (from any member,
or from the ledger on resume); the first feasible trial raises it from nothing and is credited
zero (the tie-break above favours its finder). A trial is charged the seconds the ledger records
for it (``total_s``: prune, measure, fine-tune, evaluate) plus its member's ask seconds (recorded
as ``member_ask_s``); without a recorded time (the toy problem) every trial is one unit. Every
figure the allocation reads is in the ledger, so ``--resume`` continues the allocation where it
stopped.

Set-up phases and the shared budget: probes are charged to their member's set-up time (shown in
the report) but not to the trial budget, as for the member alone (the runner counts scored trials
at the run's fidelity); they are not part of the member's rate either (sunk; the rate reads its
ordinary trials). Warm-up trials are ordinary trials: they use up the trial budget and are told to
every member, but are left out of their member's rate.

Every member is told every trial, whichever member asked it, except probes: a probe is scored
without the budget at a cheaper fidelity, so it is told only to the members that would have asked
for it (``is_probe``; ``knapsack`` and ``knapsack-greedy`` share one scan). A member's duplicate of
a policy already in the search is told to it as failed, so no member waits on it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from autoprune.errors import UserError
from autoprune.searchers._base import SearchContext, Searcher, policy_key
from autoprune.space import Policy
from autoprune.study import COMPLETE, FAILED, REJECTED, Trial

# Default members, from BENCHMARKS.md (3 tasks, 3 seeds): knapsack leads MobileNetV2 at half the
# MACs (65.5% test against 63.1% for the best other); uniform ties knapsack on ResNet-20 at half
# the latency (61.3% against 61.7%) and its first proposal, the least pruning that fits, is strong
# and cheap; knapsack-greedy leads at 0.3 of the latency (29.4%, 31.1% in equal time) and reuses
# knapsack's scan; tpe, the default searcher, is the one that keeps learning past the first trials.
# uniform and tpe come first so that a short equal-time search has their trials before the scan.
DEFAULT_MEMBERS = ("uniform", "tpe", "knapsack", "knapsack-greedy")
CLOCKS = ("seconds", "trials")
MAX_ASKS_PER_POLICY = 20  # member asks per requested policy before giving up on this round


@dataclass(frozen=True)
class PortfolioConfig:
    """How a portfolio is made up and how it allocates.

    Attributes:
        members: registered searcher names, in entry order.
        min_share: fraction of the ordinary proposals each member gets at least.
        prior_trials: trials' worth of time over which a member's rate is shrunk to the pooled rate.
        exploration: weight of the bonus for members asked less (UCB1's, in units of the largest
            improvement per trial seen), so an early lucky member does not starve a learner.
        clock: ``seconds`` (recorded trial seconds plus ask seconds) or ``trials`` (one unit per
            trial: two fresh seeded runs then allocate identically whatever the machine measures).
    """

    members: tuple[str, ...] = DEFAULT_MEMBERS
    min_share: float = 0.1
    prior_trials: float = 1.0
    exploration: float = 0.3
    clock: str = "seconds"

    def __post_init__(self) -> None:
        from autoprune.searchers import searcher_names

        names = [n for n in searcher_names() if n != PortfolioSearcher.name]
        unknown = [m for m in self.members if m not in names]
        if unknown:
            raise UserError(f"portfolio: unknown member {', '.join(unknown)}; choose from {', '.join(names)}")
        if len(set(self.members)) < 2 or len(set(self.members)) != len(self.members):
            raise UserError(f"portfolio needs at least two distinct members, got {','.join(self.members) or 'none'}")
        if not 0.0 <= self.min_share <= 1.0 / len(self.members):
            raise UserError(f"portfolio: min_share must be within [0, 1/{len(self.members)}], got {self.min_share}")
        if self.prior_trials < 0 or self.exploration < 0:
            raise UserError(f"portfolio: prior_trials and exploration must be >= 0, got {self.prior_trials}, {self.exploration}")
        if self.clock not in CLOCKS:
            raise UserError(f"portfolio: clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")

    @classmethod
    def from_spec(cls, spec: str) -> PortfolioConfig:
        """``tpe,knapsack`` or ``tpe+knapsack`` (the part after ``portfolio:``) as a config with
        those members; ``+`` is for lists that are themselves comma-separated (``bench --searchers``)."""
        return cls(members=tuple(m.strip() for m in spec.replace("+", ",").split(",") if m.strip()))


@dataclass(frozen=True)
class MemberShare:
    """One member's part of the search so far (``PortfolioSearcher.shares``)."""

    name: str
    trials: int  # ordinary trials told (scored or rejected)
    scored: int
    probes: int
    seconds: float  # charged to its ordinary trials (the rate's denominator)
    setup_s: float  # charged to its probes
    gain: float  # improvements of the best feasible accuracy it made
    exhausted: bool


@dataclass
class _Member:
    """Mutable bookkeeping of one member (what the allocation reads)."""

    name: str  # its registry name, as the ledger records it
    searcher: Searcher
    index: int
    told: int = 0
    scored: int = 0
    probes: int = 0
    gain: float = 0.0
    seconds: float = 0.0
    setup_s: float = 0.0
    in_setup: bool = False
    exhausted: bool = False


@dataclass(frozen=True)
class _Proposal:
    member: str
    ask_s: float
    probe: bool
    warmup: bool


class _QuietEstimate:
    """A shared estimate that members read but do not feed: the portfolio observes each trial once
    (``TrackedEstimate`` learns its margin per observation, so k members would learn it k times)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, policy: Policy) -> float | None:
        return self._inner(policy)

    def __getattr__(self, name: str) -> Any:
        if name == "observe":
            raise AttributeError(name)
        return getattr(self._inner, name)


class PortfolioSearcher(Searcher):
    """Members asked in turn by a bandit over their rate of improvement (module docstring)."""

    name = "portfolio"
    hands_on_options = True  # make_searcher gives it every option, for its members to pick from

    def __init__(self, config: PortfolioConfig | None = None, **member_options: Any) -> None:
        """``member_options`` reach every member that takes them (``agent`` for amc and purl)."""
        from autoprune.searchers import make_searcher

        super().__init__()
        self.config = config or PortfolioConfig()
        self._members = {n: _Member(n, make_searcher(n, **member_options), i) for i, n in enumerate(self.config.members)}
        fidelities = {m.searcher.probe_fidelity for m in self._members.values()} - {None}
        if len(fidelities) > 1:
            raise UserError(f"portfolio: members score probes at different fidelities ({', '.join(sorted(fidelities))})")
        self.probe_fidelity = next(iter(fidelities), None)

    def _setup(self) -> None:
        ctx = self.context
        shared: SearchContext = ctx
        if getattr(ctx.estimate, "observe", None) is not None:
            shared = dataclasses.replace(ctx, estimate=_QuietEstimate(ctx.estimate))
        for member in self._members.values():
            member.searcher.setup(shared)  # the run's seed: first proposals are those it makes alone
        self._asked: dict[tuple, _Proposal] = {}
        self._best: float | None = None
        self._best_member = ""
        self._largest_reward = 0.0
        self.history: list[str] = []  # the member of each ordinary trial told, in order

    # -- allocation ------------------------------------------------------------------------------
    def _pending(self, name: str) -> int:
        return sum(p.member == name and not p.probe for p in self._asked.values())

    def _proposed(self, member: _Member) -> int:
        return member.told + self._pending(member.name)

    def _unit(self) -> float:
        """Mean charge of an ordinary trial so far (1 before any)."""
        told = sum(m.told for m in self._members.values())
        seconds = sum(m.seconds for m in self._members.values())
        return seconds / told if told and seconds > 0 else 1.0

    def rate(self, name: str) -> float:
        """Improvement of the best feasible accuracy per charged second, shrunk to the pooled rate."""
        members = self._members.values()
        pooled_s = sum(m.seconds for m in members)
        pooled = sum(m.gain for m in members) / pooled_s if pooled_s > 0 else 0.0
        tau = self.config.prior_trials * self._unit()
        member = self._members[name]
        if member.seconds + tau <= 0:
            return pooled
        return (member.gain + pooled * tau) / (member.seconds + tau)

    def index(self, name: str) -> float:
        """The bandit's score: ``rate`` plus an exploration bonus that shrinks as a member is asked."""
        told = sum(m.told for m in self._members.values())
        scale = self._largest_reward / self._unit()
        bonus = scale * math.sqrt(math.log(told + 1) / (self._members[name].told + 1))
        return self.rate(name) + self.config.exploration * bonus

    def next_member(self, waiting: frozenset[str] = frozenset()) -> str | None:
        """The member that gets the next ask (None when every member is exhausted or ``waiting``)."""
        active = [m for m in self._members.values() if not m.exhausted and m.name not in waiting]
        if not active:
            return None
        for rule in (lambda m: m.in_setup, lambda m: self._proposed(m) == 0):
            chosen = [m for m in active if rule(m)]
            if chosen:
                return chosen[0].name
        total = sum(self._proposed(m) for m in self._members.values()) + 1
        starved = [m for m in active if self._proposed(m) < self.config.min_share * total]
        warming = [m for m in active if getattr(m.searcher, "warming_up", False)]
        warming_behind = [m for m in warming if self._proposed(m) < total / len(self._members)]
        for group in (starved, warming_behind):
            if group:
                return min(group, key=lambda m: (self._proposed(m), m.index)).name
        judged = [m for m in active if all(m is not w for w in warming)] or active
        best = max(judged, key=lambda m: (self.index(m.name), m.name == self._best_member,
                                          -self._proposed(m), -m.index))
        return best.name

    # -- ask ---------------------------------------------------------------------------------------
    def _ask(self, n: int) -> list[Policy]:
        out: list[Policy] = []
        waiting: set[str] = set()  # members that propose nothing until trials they asked are told
        for _ in range(MAX_ASKS_PER_POLICY * n):
            if len(out) >= n:
                break
            name = self.next_member(frozenset(waiting))
            if name is None:
                break
            member = self._members[name]
            warmup = bool(getattr(member.searcher, "warming_up", False))
            tick = time.perf_counter()
            got = member.searcher.ask(n - len(out) if member.in_setup else 1)
            ask_s = round((time.perf_counter() - tick) / max(len(got), 1), 4)
            if not got and any(p.member == name for p in self._asked.values()):
                waiting.add(name)  # a generation or a scan still out: not exhausted
                continue
            if not got:
                member.exhausted = True
                member.in_setup = False
                continue
            for policy in got:
                if not self.is_new(policy) or policy in out:
                    member.searcher.tell(Trial(-1, policy, FAILED, {}, searcher=name))
                    continue
                probe = member.searcher.is_probe(policy)
                member.in_setup = probe
                self._asked[policy_key(policy)] = _Proposal(name, ask_s, probe, warmup and not probe)
                out.append(policy)
        return out

    def is_probe(self, policy: Policy) -> bool:
        proposal = self._asked.get(policy_key(policy))
        if proposal is not None:
            return proposal.probe
        return any(m.searcher.is_probe(policy) for m in self._members.values())

    def trial_attrs(self, policy: Policy) -> dict[str, Any]:
        """What the ledger records with a proposal: its member, its ask seconds, a warm-up mark."""
        proposal = self._asked.get(policy_key(policy))
        if proposal is None:
            return {}
        attrs: dict[str, Any] = {"member": proposal.member, "member_ask_s": proposal.ask_s}
        if proposal.warmup:
            attrs["member_warmup"] = 1
        return attrs

    # -- tell --------------------------------------------------------------------------------------
    def _tell(self, trial: Trial) -> None:
        proposal = self._asked.pop(policy_key(trial.policy), None)
        name = proposal.member if proposal is not None else trial.member
        probe = self._is_probe_trial(trial, proposal)
        for member in self._members.values():
            if not probe or member.searcher.is_probe(trial.policy):
                member.searcher.tell(trial)
        if trial.state not in (COMPLETE, REJECTED):
            return  # failed: no recorded time, and not replayed on resume, so not counted
        member = self._members.get(name)
        ask_s = proposal.ask_s if proposal is not None else float(trial.metrics.get("member_ask_s", 0.0))
        charge = self._charge(trial, ask_s)
        if probe:
            if member is not None:
                member.probes += 1
                member.setup_s += charge
            return
        reward = 0.0
        if trial.scored and trial.feasible:
            accuracy = float(trial.accuracy or 0.0)
            if self._best is not None:
                reward = max(0.0, accuracy - self._best)
                self._largest_reward = max(self._largest_reward, reward)
            if self._best is None or accuracy > self._best:
                self._best, self._best_member = accuracy, name
        if member is None:
            return
        warmup = proposal.warmup if proposal is not None else bool(trial.metrics.get("member_warmup"))
        member.told += 1
        member.scored += int(trial.scored)
        self.history.append(name)
        if not warmup:
            member.gain += reward
            member.seconds += charge

    def _is_probe_trial(self, trial: Trial, proposal: _Proposal | None) -> bool:
        if proposal is not None:
            return proposal.probe
        if not any(m.searcher.is_probe(trial.policy) for m in self._members.values()):
            return False
        if self.probe_fidelity is not None:
            return trial.fidelity == self.probe_fidelity
        return trial.constraint is None  # scored without the budget

    def _charge(self, trial: Trial, ask_s: float) -> float:
        """Seconds the trial cost its member (see the module docstring for the units)."""
        if self.config.clock == "trials":
            return 1.0
        total = trial.metrics.get("total_s")
        return float(total) + ask_s if total is not None else 1.0

    # -- reading -----------------------------------------------------------------------------------
    @property
    def members(self) -> dict[str, Searcher]:
        return {n: m.searcher for n, m in self._members.items()}

    @property
    def best_member(self) -> str:
        """The member that proposed the best feasible trial told so far ('' if none or foreign)."""
        return self._best_member

    def shares(self) -> tuple[MemberShare, ...]:
        return tuple(
            MemberShare(n, m.told, m.scored, m.probes, m.seconds, m.setup_s, m.gain, m.exhausted)
            for n, m in self._members.items()
        )
