"""The two views of ``autoprune bench``, read from one anytime search per searcher and seed.

A search runs until it has both scored the recipe's ``trials`` and spent the equal-time budget
(``LoopConfig.min_time_s``). The *equal-trials* view is the prefix of the search up to its
``trials``-th scored trial; the *equal-time* view is the prefix of trials that finished within the
time budget. Searchers decide each proposal from what they were told before it, so a prefix is
what a search stopped at that point would have seen: one search answers both views, at about
half the cost of two. Each view's pick gets the final fine-tune; when both views pick the same
trial it is fine-tuned once.

The time budget is the loop time that ``random`` with seed 0 needed for ``trials`` scored trials
(``--time-limit`` overrides it), so ``random`` runs first.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from autoprune.bench.harness import (
    QUICK_TIME_LIMIT_S,
    BenchConfig,
    Log,
    RunResult,
    TaskSetup,
    code_version,
)
from autoprune.bench.metrics import best_so_far, hypervolume
from autoprune.study import Trial

VIEWS = ("trials", "time")
PROPOSALS_PER_TRIAL = 100  # cap on proposals (rejected ones included) per scored trial asked for


@dataclasses.dataclass(frozen=True)
class Anytime:
    """One search's trials in finishing order, each with the loop seconds at which it finished."""

    trials: tuple[Trial, ...]
    finished_s: tuple[float, ...]
    loop_s: float
    stopped: str
    error: str | None

    def prefix(self, seconds: float) -> list[Trial]:
        return [t for t, s in zip(self.trials, self.finished_s, strict=True) if s <= seconds]

    def time_to_scored(self, n: int, fidelity: str) -> float:
        """Loop seconds at which the ``n``-th trial scored at ``fidelity`` finished (the end if never)."""
        count = 0
        for t, s in zip(self.trials, self.finished_s, strict=True):
            count += t.scored and t.fidelity == fidelity
            if count >= n:
                return s
        return self.loop_s


def anytime_search(base, *, searcher: str, seed: int, trials: int, min_time: float | None, storage: str,
                   run_dir: Path, executor, task: str) -> tuple[object, object, Anytime]:
    """One search (problem, ledger, trials with finishing times); a searcher's failure is kept."""
    from autoprune.pipeline import make_run_searcher, open_ledger, save_settings
    from autoprune.runner import LoopConfig, run_loop

    settings = base.settings.replace(searcher=searcher, seed=seed, trials=trials, time_limit=None, storage=storage,
                                     study_name=f"{task}/{searcher}/seed{seed}", run_dir=str(run_dir), resume=False)
    problem = dataclasses.replace(base, settings=settings, run_dir=run_dir)
    ledger = open_ledger(problem)
    save_settings(problem)
    done: list[Trial] = []
    times: list[float] = []
    started = time.perf_counter()

    def on_trial(trial: Trial, _outcome) -> None:
        done.append(trial)
        times.append(time.perf_counter() - started)

    stopped, error = "", None
    try:
        search = make_run_searcher(problem)
        loop = LoopConfig(trials=trials, batch=executor.capacity, min_time_s=min_time, seed=seed,
                          max_proposals=PROPOSALS_PER_TRIAL * trials)
        stopped = run_loop(problem.recipe, problem.template(settings.fidelity), search, ledger, executor, loop,
                           on_trial=on_trial).stopped
    except Exception as exc:  # noqa: BLE001 - one broken searcher must not end the benchmark
        ledger.fail_running(f"searcher error: {exc}")
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return problem, ledger, Anytime(tuple(done), tuple(times), time.perf_counter() - started, stopped, error)


def view_result(problem, run: Anytime, *, view: str, task: str, searcher: str, seed: int, cutoff: float,
                reached: bool) -> RunResult:
    """The search figures of one view: the trials that finished within ``cutoff`` loop seconds."""
    from autoprune.report import member_rows, phase_medians

    s = problem.settings
    res = RunResult(task, view, searcher, seed, s.study_name, s.run_dir, limit=problem.limit, error=run.error)
    mine = run.prefix(cutoff)
    scored = [t for t in mine if t.scored and t.fidelity == s.fidelity]
    metric, dense_cost = problem.metric, problem.dense[problem.metric]
    res.scored, res.rejected = len(scored), sum(t.state == "rejected" for t in mine)
    res.probes = sum(t.scored and t.fidelity != s.fidelity for t in mine)
    res.stopped = view if reached else run.stopped
    res.wall_s = res.loop_s = min(cutoff, run.loop_s)
    res.finetune_s = sum(float(t.metrics.get("finetune_s", 0.0)) for t in scored)
    res.evaluate_s = sum(float(t.metrics.get("evaluate_s", 0.0)) for t in scored)
    res.phases = phase_medians(scored)
    res.curve = best_so_far([t.accuracy if t.feasible else None for t in scored])
    res.points = [(float(t.accuracy or 0.0), float(t.metrics[metric]) / dense_cost) for t in scored if metric in t.metrics]
    res.hypervolume = hypervolume(res.points)
    res.members = {r.member: {"trials": r.trials, "scored": r.scored, "trial_share": r.trial_share,
                              "time_share": r.time_share} for r in member_rows(mine, None)}
    return res


def finish_views(problem, ledger, run: Anytime, results: list[RunResult], executor) -> None:
    """Each view's pick, fine-tuned once per distinct trial (into ``run_dir/<view>``), and tested."""
    from autoprune.finalize import finalize, pick

    finals: dict[int, object] = {}
    readings: dict[int, float] = {}  # the views share their re-measurements: one trial, one verdict
    measured: dict[int, float | None] = {}  # and the reading of their export here
    for res in results:
        if res.error is not None:
            continue
        cutoff = res.loop_s
        try:
            best = pick(problem, run.prefix(cutoff), log=lambda _m: None, readings=readings)
            if best.number not in finals:
                here = dataclasses.replace(problem, run_dir=Path(problem.run_dir) / res.view)
                here.run_dir.mkdir(parents=True, exist_ok=True)
                finals[best.number] = finalize(here, ledger, best, executor, log=lambda _m: None)
                measured[best.number] = measured_fraction(problem, finals[best.number].model_path)
            final = finals[best.number]
        except Exception as exc:  # noqa: BLE001 - e.g. no feasible policy found
            res.error = f"{type(exc).__name__}: {exc}"
            continue
        m = final.outcome.metrics
        res.search_accuracy, res.pick_member = best.accuracy, best.member
        res.final_val, res.final_test = m.get("val_accuracy"), m.get("test_accuracy")
        res.final_cost = final.verified_cost
        res.within_budget = final.verified_cost <= problem.limit
        res.measured_fraction = measured[best.number]


def measured_fraction(problem, model_path: Path) -> float | None:
    """With a latency table and a budget relative to dense: the exported model's latency measured
    here (paired with the dense model, ``VERIFY_ROUNDS`` rounds) over the budget; else None."""
    from autoprune.costs.latency import paired_latency
    from autoprune.finalize import VERIFY_ROUNDS
    from autoprune.prune import load_slimmed

    if problem.cost.table is None or problem.metric != "latency_ms" or problem.budget.fraction is None:
        return None
    model = load_slimmed(model_path, problem.task.model)
    here = dataclasses.replace(problem.cost, table=None)
    _, ratio = paired_latency(model, problem.task.model, here, rounds=VERIFY_ROUNDS)
    return ratio / problem.budget.fraction


def forget_unfinished(storage: str, study_name: str) -> None:
    """Delete a study an interrupted bench left without a result, so its unit runs afresh."""
    import optuna

    try:
        optuna.delete_study(study_name=study_name, storage=storage)
    except KeyError:
        pass


def unit_order(searchers: tuple[str, ...], seeds: int) -> list[tuple[str, int]]:
    """(searcher, seed) units, seed by seed: a bench that takes several sessions has every searcher
    at seed 0 before any at seed 1, so a partial report compares them all. ``random`` comes first
    in each seed: its seed-0 search sets the equal-time budget of the others."""
    first = sorted(searchers, key=lambda name: name != "random")
    return [(searcher, seed) for seed in range(seeds) for searcher in first]


def run_views(cfg: BenchConfig, task: TaskSetup, storage: str, root: Path, runs: list[RunResult],
              time_limits: dict[str, float], log: Log, on_run: Callable[[], None] = lambda: None) -> None:
    """Every searcher and seed of one task, both views; ``on_run`` after each search (the harness
    saves results.json, so an interrupted bench keeps its runs)."""
    from autoprune.executors import make_executor

    problem, s = task.problem, task.settings
    views = [v for v in VIEWS if v in cfg.sections]
    if not views:
        return
    budget = cfg.time_limit if cfg.time_limit is not None else s.time_limit  # --time-limit, else the recipe's
    if budget is None and "time" not in views:
        budget = 0.0
    executor = make_executor(s.executor, workers=s.workers, threads_per_worker=problem.scoring.threads,
                             ray_address=s.ray_address)
    done = {(r.searcher, r.seed) for r in runs if r.task == task.name}
    if budget is None and task.name in time_limits:  # a resumed run keeps its equal-time budget
        budget = time_limits[task.name]
    code = code_version()
    with executor:
        for searcher, seed in unit_order(cfg.searchers, cfg.seeds):
            if (searcher, seed) in done:
                continue
            run_dir = root / task.name / f"{searcher}-s{seed}"
            forget_unfinished(storage, f"{task.name}/{searcher}/seed{seed}")
            p, ledger, run = anytime_search(problem, searcher=searcher, seed=seed, trials=s.trials, min_time=budget,
                                            storage=storage, run_dir=run_dir, executor=executor, task=task.name)
            load = os.getloadavg()[2] if hasattr(os, "getloadavg") else None
            if budget is None:  # the first search (random, seed 0) sets the equal-time budget
                budget = run.time_to_scored(s.trials, s.fidelity) if run.error is None else None
                if budget is None or budget <= 0:
                    budget = QUICK_TIME_LIMIT_S if cfg.quick else 600.0
            if "time" in views:
                time_limits[task.name] = budget
            to_trials = run.time_to_scored(s.trials, s.fidelity)
            reached_trials = sum(t.scored and t.fidelity == s.fidelity for t in run.trials) >= s.trials
            cutoffs = {"trials": (to_trials, reached_trials), "time": (budget, run.loop_s >= budget)}
            mine = [view_result(p, run, view=v, task=task.name, searcher=searcher, seed=seed,
                                cutoff=cutoffs[v][0], reached=cutoffs[v][1]) for v in views]
            finish_views(p, ledger, run, mine, executor)
            for r in mine:
                r.code, r.load = code, load
            runs.extend(mine)
            on_run()
            for r in mine:
                final = f"final test {r.final_test:.4f}" if r.final_test is not None else f"error: {r.error}"
                log(f"[{task.name} {r.view}] {searcher} seed {seed}: {r.scored} scored in {r.loop_s:.0f} s, "
                    f"HV {r.hypervolume:.4f}, {final}")
