"""The ledger: every candidate from every searcher is a trial in one Optuna study.

``Ledger`` is a thin typed facade over an Optuna study. Params are the search variables' ratios
(per slot by default); the single objective is validation accuracy (maximised); the budget is an
Optuna constraint (``cost / limit - 1 <= 0`` is feasible); user attributes carry MACs, params,
measured latency, the searcher, the fidelity, the seed and the full per-slot policy. Rejected
policies (over budget, never trained) are PRUNED trials with their constraint set, so samplers
that honour constraints still learn from them, and a ``reason`` user attribute saying why
(``rejected: over budget, 0.504 of dense > 0.5 ...``; failed trials get ``failed: <error>``), which
is what ``optuna-dashboard <storage>`` and ``optuna trials`` show of them. The study is named after
the run directory (``settings.resolve_run``).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from autoprune.data import absolute_data_spec
from autoprune.errors import UserError
from autoprune.space import Policy, SearchSpace
from autoprune.storage import (  # noqa: F401 - re-exported: where callers have found them
    JOURNAL_SUFFIXES,
    _study_exists,
    default_storage,
    open_storage,
    run_study_name,
    storage_url,
    study_exists,
)

OBJECTIVE = "val_accuracy"
RESUME_KEYS = ("objectives", "target", "budget", "model", "data")  # a resumed study must keep these


def resume_value(key: str, value: Any) -> Any:
    """A ``RESUME_KEYS`` value as a resume compares it: a data directory by its absolute path.
    Studies record it absolute, and ``settings.yaml`` too, so a run started on ``imagefolder:data``
    resumes (or exports) from anywhere; one recorded relative, by earlier versions, resolves
    against the working directory."""
    return absolute_data_spec(value) if key == "data" and isinstance(value, str) else value
COMPLETE, REJECTED, FAILED, RUNNING = "complete", "rejected", "failed", "running"
_STATES = {
    TrialState.COMPLETE: COMPLETE,
    TrialState.PRUNED: REJECTED,
    TrialState.FAIL: FAILED,
    TrialState.RUNNING: RUNNING,
    TrialState.WAITING: RUNNING,
}


@dataclass(frozen=True)
class Trial:
    """A finished (or running) trial as searchers and reports see it.

    Attributes:
        number: Optuna trial number in the ledger.
        policy: the pruning policy that was scored.
        state: ``complete`` (scored), ``rejected`` (over budget, not trained), ``failed``, ``running``.
        metrics: measured values: ``val_accuracy``, ``macs``, ``params``, ``latency_ms``, timings.
        seed: the trial's seed.
        searcher: name of the searcher that proposed it.
        fidelity: ``bn``, ``kd:N`` or ``final``.
        constraint: ``cost / limit - 1`` (<= 0 is within budget), None if unknown.
        probe: a searcher's probe (a knapsack scan), which does not count against ``--trials``.
        member: for a portfolio search, the member searcher that proposed it ('' otherwise).
    """

    number: int
    policy: Policy
    state: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    searcher: str = ""
    fidelity: str = ""
    constraint: float | None = None
    probe: bool = False
    member: str = ""

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get(OBJECTIVE)
        return None if value is None else float(value)

    @property
    def feasible(self) -> bool:
        return self.constraint is not None and self.constraint <= 0.0

    @property
    def scored(self) -> bool:
        return self.state == COMPLETE and self.accuracy is not None


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space's variables: ordered floats with a step where possible."""
    out: dict[str, BaseDistribution] = {}
    for v in space.variables:
        step = v.step
        if step is not None:
            out[v.name] = FloatDistribution(v.choices[0], v.choices[-1], step=step)
        else:  # a single choice, or unevenly spaced ones
            out[v.name] = CategoricalDistribution(list(v.choices))
    return out


def process_token() -> str:
    """``host:pid:start`` of this process: who owns a running trial (see ``Ledger.fail_stale``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing): a reused
    pid has another start time, so a new process is not taken for the dead owner of a trial."""
    fields = _proc_stat(pid)
    return fields[19] if fields else ""


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # fields from the state (3rd) on; the name may hold spaces


def owner_alive(token: str) -> bool | None:
    """Whether the process named by ``token`` still runs: None when it ran on another host."""
    host, _, rest = token.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    fields = _proc_stat(pid)
    if fields is None:
        return True
    return fields[0] != "Z" and (not ticks or fields[19] == ticks)


class Ledger:
    """An Optuna study holding every trial of a search (and of earlier searches, on resume)."""

    def __init__(self, study: optuna.Study, space: SearchSpace) -> None:
        self.study = study
        self.space = space
        # --objectives: the cost metrics after accuracy, each an objective of the study (minimised)
        names = study.metric_names or []
        self.objectives: tuple[str, ...] = tuple(names[1:]) if len(study.directions) > 1 else ()
        self.distributions = distributions(space)
        self._live: dict[int, optuna.Trial] = {}
        self.stale: list[int] = []  # trials of dead processes that opening the study marked failed
        self._budget: dict[str, Any] | None = None  # the study's attrs, read at the first rejection

    @classmethod
    def open(
        cls,
        space: SearchSpace,
        *,
        storage: str,
        study_name: str,
        resume: bool,
        attrs: Mapping[str, Any] | None = None,
        objectives: tuple[str, ...] = (),
    ) -> Ledger:
        """Create the study, or load it when ``resume`` (its space must be this one).

        With ``objectives`` (cost metrics) the study is multi-objective: accuracy maximised, each
        cost minimised, named so that ``optuna-dashboard`` plots the front."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = storage
        storage = open_storage(url)
        existing = _study_exists(storage, study_name, url)
        if existing and not resume:
            raise UserError(
                f"study {study_name!r} already exists in {url}; pass --resume to continue it "
                "or choose another --run-dir/--study-name"
            )
        if resume and not existing:
            raise UserError(f"--resume: no study {study_name!r} in {url}")
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=["maximize"] + ["minimize"] * len(objectives),
            sampler=optuna.samplers.RandomSampler(seed=0),  # params are always enqueued
            load_if_exists=resume,
        )
        if resume:
            saved = study.user_attrs.get("fingerprint")
            if saved and saved != space.fingerprint:
                raise UserError(f"--resume: study {study_name!r} was made for another architecture")
            for key in RESUME_KEYS:  # trials judged against another budget or data set are not comparable
                before, now = study.user_attrs.get(key), (attrs or {}).get(key)
                if before is not None and now is not None and resume_value(key, before) != resume_value(key, now):
                    raise UserError(f"--resume: study {study_name!r} was started with {key} {before!r}, not {now!r}; "
                                    f"resume it with --{key} {before}, or start a new study")
            saved_vars = study.user_attrs.get("variables")
            if saved_vars and saved_vars != [v.name for v in space.variables]:
                raise UserError(f"--resume: study {study_name!r} searched other variables (granularity or rules changed)")
        else:
            with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([OBJECTIVE, *objectives])
            study.set_user_attr("fingerprint", space.fingerprint)
            study.set_user_attr("variables", [v.name for v in space.variables])
            for key, value in (attrs or {}).items():
                study.set_user_attr(key, value)
        ledger = cls(study, space)
        if resume:
            ledger.stale = ledger.fail_stale()
        return ledger

    # -- writing ----------------------------------------------------------------------------
    def start(self, policy: Policy, *, searcher: str, fidelity: str, probe: bool = False) -> int:
        """Record a running trial for ``policy``; returns its number.

        The trial is created RUNNING with its params in one storage call. (Enqueueing it and then
        asking, as before, let another search sharing the storage pop this process's params.)
        """
        params = self.space.variable_values(policy)
        attrs = {"searcher": searcher, "fidelity": fidelity, "policy": json.dumps(policy.as_dict()),
                 "owner": process_token()}
        if probe:
            attrs["probe"] = True
        now = datetime.datetime.now()
        template = optuna.trial.FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=now, datetime_complete=None,
            params=params, distributions={k: self.distributions[k] for k in params}, user_attrs=attrs,
            system_attrs={}, intermediate_values={}, trial_id=-1,
        )
        trial_id = self.study._storage.create_new_trial(self.study._study_id, template_trial=template)
        trial = optuna.Trial(self.study, trial_id)
        self._live[trial.number] = trial
        return trial.number

    def annotate(self, number: int, **attrs: Any) -> None:
        """Add user attributes to a running trial (its seed, say, once its number is known)."""
        for key, value in attrs.items():
            self._live[number].set_user_attr(key, value)

    def finish(self, number: int, metrics: Mapping[str, float], *, constraint: float | None, rejected: bool) -> None:
        """Close a running trial with its measured metrics."""
        trial = self._live.pop(number)
        for key, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                continue
            trial.set_user_attr(key, value)
        if constraint is not None:
            trial.set_constraint("budget", constraint)
        if rejected or OBJECTIVE not in metrics:
            # PRUNED with no value: a user attribute is what optuna-dashboard and `optuna trials` show
            if self._budget is None:
                self._budget = dict(self.study.user_attrs)
            reason = rejection_reason(constraint, self._budget) if rejected else f"not scored: no {OBJECTIVE} measured"
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=TrialState.PRUNED)
        elif self.objectives:
            missing = [m for m in self.objectives if m not in metrics]
            if missing:
                trial.set_user_attr("reason", f"not scored: no {', '.join(missing)} measured")
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, [float(metrics[OBJECTIVE]), *(float(metrics[m]) for m in self.objectives)])
        else:
            self.study.tell(trial, float(metrics[OBJECTIVE]))

    def fail(self, number: int, reason: str) -> None:
        trial = self._live.pop(number, None)
        if trial is not None:
            trial.set_user_attr("error", reason[:2000])
            trial.set_user_attr("reason", failure_reason(reason))
            self.study.tell(trial, state=TrialState.FAIL)

    def fail_running(self, reason: str = "interrupted") -> None:
        for number in list(self._live):
            self.fail(number, reason)

    def fail_stale(self) -> list[int]:
        """Mark failed the trials left RUNNING by a process on this host that is gone (killed,
        crashed, machine rebooted); returns their numbers. Trials of a live process (a search
        sharing the storage) and of other hosts are left alone: they may still finish."""
        stale = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            token = str(frozen.user_attrs.get("owner", ""))
            if token and owner_alive(token) is not False:
                continue
            who = f"pid {token.split(':')[1]} on {token.split(':')[0]}" if token else "an earlier autoprune"
            error = f"left running by a process that ended without finishing it ({who}); marked failed on resume"
            self.study._storage.set_trial_user_attr(frozen._trial_id, "error", error)
            self.study._storage.set_trial_user_attr(frozen._trial_id, "reason", failure_reason(error))
            self.study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            stale.append(frozen.number)
        return stale

    # -- reading ------------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        return [to_trial(t, self.space.fingerprint) for t in self.study.get_trials(deepcopy=False)]


_UNITS = {"macs": " MACs", "params": " params"}


def rejection_reason(constraint: float | None, study_attrs: Mapping[str, Any]) -> str:
    """Why a policy was rejected, in the budget's own terms: ``rejected: over budget, 0.504 of
    dense > 0.5 (12.40M MACs against 12.30M)``, from its constraint (``cost / limit - 1``) and the
    study's ``budget``, ``target``, ``metric``, ``limit`` and ``dense`` attributes."""
    if constraint is None:
        return "rejected: over budget"
    limit, metric = study_attrs.get("limit"), str(study_attrs.get("metric", ""))
    dense = (study_attrs.get("dense") or {}).get(metric)
    if not isinstance(limit, (int, float)) or not isinstance(dense, (int, float)) or dense <= 0:
        return f"rejected: over budget, {_above(1.0 + constraint, 1.0)} of the limit > 1"
    from autoprune.objectives import format_metric, parse_budget

    cost = (1.0 + constraint) * limit
    absolute = f"{format_metric(metric, cost)}{_UNITS.get(metric, '')} against {format_metric(metric, limit)}"
    try:
        fraction = parse_budget(study_attrs.get("budget", ""), str(study_attrs.get("target", ""))).fraction
    except UserError:
        fraction = None
    if fraction is not None:  # judged as a fraction of dense (latency: timed alongside the dense model)
        return f"rejected: over budget, {_above((1.0 + constraint) * fraction, fraction)} of dense > {fraction:g} ({absolute})"
    return f"rejected: over budget, {absolute} ({cost / dense:.3f} of dense)"


def _above(value: float, bound: float) -> str:
    """``value`` with enough decimals (3 to 6) to read above ``bound``."""
    for places in range(3, 7):
        if round(value, places) > bound:
            return f"{value:.{places}f}"
    return f"{value:.6f}"


def failure_reason(error: str) -> str:
    """``failed: <first line of the error>``, short enough for a dashboard column."""
    first = (error.strip().splitlines() or ["unknown error"])[0]
    return "failed: " + (first if len(first) <= 200 else first[:197] + "...")


def numeric_attrs(attrs: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among a trial's user attributes: what a Trial's metrics hold besides its score."""
    return {k: float(v) for k, v in attrs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def to_trial(frozen: optuna.trial.FrozenTrial, fingerprint: str) -> Trial:
    """An Optuna FrozenTrial as our Trial record."""
    attrs = frozen.user_attrs
    policy = Policy.from_dict(fingerprint, json.loads(attrs.get("policy", "{}")))
    metrics = numeric_attrs(attrs)
    if frozen.state == TrialState.COMPLETE and frozen.values:
        metrics[OBJECTIVE] = float(frozen.values[0])
    constraints = frozen.constraints if hasattr(frozen, "constraints") else {}
    return Trial(
        number=frozen.number,
        policy=policy,
        state=_STATES.get(frozen.state, FAILED),
        metrics=metrics,
        seed=int(attrs.get("seed", 0)),
        searcher=str(attrs.get("searcher", "")),
        fidelity=str(attrs.get("fidelity", "")),
        constraint=constraints.get("budget"),
        member=str(attrs.get("member", "")),
        probe=attrs.get("probe") is True,
    )
