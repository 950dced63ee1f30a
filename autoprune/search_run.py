"""The whole search of one settings record, to a run directory: ``autoprune search`` and
``autoprune.search`` both come here (``run_search``).

``autoprune.pipeline`` builds what the search needs (the problem, the searcher's context, the
ledger); this module runs it: the ask/tell loop on an executor, then the pick, the final
fine-tune, the export and the report, or for an ``--objectives`` search its front
(``autoprune.front``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune import pipeline
from autoprune.errors import UserError
from autoprune.pipeline import Problem, make_run_searcher, open_ledger, save_settings
from autoprune.settings import SearchSettings
from autoprune.space import Policy
from autoprune.task import Task


@dataclass(frozen=True)
class SearchResult:
    """What a search leaves: the slimmed, fine-tuned model (eval mode), its policy, the Optuna
    study holding every trial, the run directory, ``summary.json``'s content and the dense model
    it was pruned from (shared: copy it before changing it).

    ``exit_status`` is what ``autoprune search`` exits with: 0, or ``EXIT_OVER_BUDGET`` when the
    exported model measured over the budget (``within_budget`` False).

    An ``--objectives`` search exports nothing: ``model`` and ``policy`` are None and ``front``
    lists its points (``autoprune.export(run_dir, trial=N)`` finalises one).
    """

    model: Any
    policy: Policy | None
    study: Any
    run_dir: Path
    summary: dict[str, Any]
    exit_status: int
    dense: Any

    @property
    def within_budget(self) -> bool:
        return bool((self.summary.get("final") or {}).get("within_budget", True))

    @property
    def front(self) -> list[dict[str, Any]]:
        """The points of an ``--objectives`` search's front (``summary.json``'s ``front``)."""
        return list(self.summary.get("front") or [])


def run_search(settings: SearchSettings, console: Any, command: str, *, task: Task | None = None,
               evaluate: Callable[[Any], float] | None = None, finetune: Callable[..., Any] | None = None,
               table_to_stdout: bool = True) -> SearchResult:
    """The whole search of ``settings``, to a run directory; ``autoprune search`` and
    ``autoprune.search`` both come here. ``console`` (rich) gets the log and the progress bar; the
    final table goes to stdout for the CLI (the one output a script may want), else to ``console``."""
    from autoprune.errors import EXIT_OVER_BUDGET
    from autoprune.finalize import finalize_within_budget, write_summary
    from autoprune.model_io import load
    from autoprune.progress import SearchProgress, make_console
    from autoprune.report import write_report
    from autoprune.runner import LoopConfig, replay, run_loop, scored_search_trials
    from autoprune.summary import build_summary, over_budget, print_summary

    started = time.perf_counter()
    rungs = None
    if settings.rungs:  # multi-fidelity: parsed first, so a typo fails before any work
        from autoprune.multifidelity import (
            parse_rungs,
            planned_trials,
            replay_base,
            run_multifidelity_loop,
            top_rung_trials,
        )

        rungs = parse_rungs(settings.rungs)
    from autoprune.settings import resolve_run

    settings = resolve_run(settings)  # the run directory and the study's name, once (the CLI's too)
    check_live_executor(settings, task, evaluate, finetune)
    pipeline.preflight(settings)  # through the module, so tests can check no work starts before the names
    problem = pipeline.build_problem(settings, log=console.print, task=task, evaluate=evaluate, finetune=finetune)
    ledger = open_ledger(problem)
    if ledger.stale:
        console.print(f"resumed: trials {', '.join(map(str, ledger.stale))} were left running by a process that "
                      "ended; marked failed (their policies may be proposed again)")
    save_settings(problem)
    searcher = make_run_searcher(problem)
    told = replay_base(searcher, ledger, rungs) if rungs else replay(searcher, ledger)
    # --trials is the number of scored search trials the study holds in all: a resumed run
    # scores only the missing ones (then does whichever of the final steps is missing).
    done = scored_search_trials(ledger.trials(), rungs.base if rungs else settings.fidelity)
    remaining = max(0, settings.trials - done)
    if told:
        console.print(f"resumed: the searcher learned from {told} trials already in the study; {done} of the "
                      f"{settings.trials} search trials are scored, {remaining} to go")
    storage = settings.storage or f"{problem.run_dir / 'study.db'}"
    console.print(f"run directory: {problem.run_dir}  (watch it live: optuna-dashboard {storage})")
    executor = run_executor(problem)
    if executor.name != "inline":  # under ray the threads follow from the per-trial CPUs
        problem = dataclasses.replace(problem, scoring=dataclasses.replace(problem.scoring,
                                                                           threads=executor.threads_per_worker))
    console.print(f"executor: {executor.describe()}")
    loop = LoopConfig(trials=remaining, batch=executor.capacity, time_limit_s=settings.time_limit, seed=settings.seed)
    with executor:
        total = planned_trials(remaining, rungs) if rungs else remaining
        with SearchProgress(console, total, problem.metric) as progress:
            if rungs:
                result = run_multifidelity_loop(problem.recipe, problem.template(rungs.base), searcher, ledger, executor,
                                                loop, rungs, on_trial=progress.update)
            else:
                result = run_loop(problem.recipe, problem.template(settings.fidelity), searcher, ledger, executor, loop,
                                  on_trial=progress.update)
        if problem.objectives:  # the front is the result; export finalises any of its points
            from autoprune.front import finish_front

            return finish_front(problem, ledger, result, command, time.perf_counter() - started, console,
                                table_to_stdout)
        trials = ledger.trials()
        best, final = finalize_within_budget(problem, ledger, top_rung_trials(trials, rungs) if rungs else trials,
                                             executor, log=console.print)
    trials = ledger.trials()
    summary = build_summary(problem, result, trials, final, command, time.perf_counter() - started)
    write_summary(problem.run_dir, summary)
    kept = problem.space.kept_widths(best.policy)
    dense_widths = {s.name: s.channels for s in problem.space.slots}
    report = write_report(problem.run_dir, summary, trials, final.trial, dense_widths, kept)
    print_summary(make_console(quiet=console.quiet) if table_to_stdout else console, summary)
    console.print(f"report: {report}\npolicy: {final.policy_path}\nmodel: {final.model_path}")
    over = over_budget(summary)
    if over:
        console.print(f"error: {over}", soft_wrap=True)
    model = load(final.model_path, dense_model=problem.task.model)
    return SearchResult(model, best.policy, ledger.study, problem.run_dir, summary,
                        EXIT_OVER_BUDGET if over else 0, problem.task.model)


def run_executor(problem: Problem):
    """The executor of ``problem.settings``: Ray's per-trial request from ``--trial-cpus``,
    ``--trial-gpus`` and the devices; threads from ``--threads`` or, under Ray, from that request."""
    from autoprune.executors import default_trial_resources, make_executor

    s = problem.settings
    if s.executor != "ray":
        return make_executor(s.executor, workers=s.workers, threads_per_worker=problem.scoring.threads)
    resources = default_trial_resources(s.trial_cpus, s.trial_gpus, s.device, s.latency_device)
    return make_executor("ray", workers=s.workers, threads_per_worker=s.threads, ray_address=s.ray_address,
                         resources=resources)


def check_live_executor(settings: SearchSettings, task: Task | None, evaluate: Any, finetune: Any) -> None:
    """Refuse, before any work, live objects an executor cannot take to its workers: trials of
    ``processes`` and ``ray`` run in other processes, which rebuild the task from its specs and
    receive ``evaluate``/``finetune`` pickled (so those must be importable module-level functions)."""
    if settings.executor == "inline":
        return
    if task is not None:
        raise UserError(
            f"executor {settings.executor!r} runs trials in other processes, which rebuild the model and data from "
            "specs; a live model or datasets run with executor='inline' only. To run trials in parallel, give "
            "model='pkg.module:factory' with checkpoint='dense.pt' (or builder= with a live model) and a data "
            "spec such as 'imagefolder:DIR'"
        )
    import pickle

    for name, fn in (("evaluate", evaluate), ("finetune", finetune)):
        if fn is None:
            continue
        try:
            pickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001 - lambdas, closures, local functions
            raise UserError(f"{name}= must be an importable module-level function to reach {settings.executor!r} "
                            f"workers ({type(exc).__name__}: {exc}); define it at module level, or use "
                            "executor='inline'") from None
