"""What each CLI subcommand does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autoprune.errors import UserError
from autoprune.settings import SearchSettings


def search_command(settings: SearchSettings, console: Console, command: str) -> int:
    from autoprune.executors import make_executor
    from autoprune.finalize import finalize, pick, write_summary
    from autoprune.pipeline import build_problem, make_run_searcher, open_ledger, save_settings
    from autoprune.progress import SearchProgress
    from autoprune.report import write_report
    from autoprune.runner import LoopConfig, replay, run_loop

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
    problem = build_problem(settings, log=console.print)
    ledger = open_ledger(problem)
    save_settings(problem)
    searcher = make_run_searcher(problem)
    told = replay_base(searcher, ledger, rungs) if rungs else replay(searcher, ledger)
    if told:
        console.print(f"resumed: the searcher learned from {told} trials already in the study")
    console.print(f"run directory: {problem.run_dir}  (watch it live: optuna-dashboard {ledger_url(problem)})")
    loop = LoopConfig(trials=settings.trials, batch=settings.workers, time_limit_s=settings.time_limit, seed=settings.seed)
    executor = make_executor(settings.executor, workers=settings.workers, threads_per_worker=problem.scoring.threads,
                             ray_address=settings.ray_address)
    with executor:
        total = planned_trials(settings.trials, rungs) if rungs else settings.trials
        with SearchProgress(console, total, problem.metric) as progress:
            if rungs:
                result = run_multifidelity_loop(problem.recipe, problem.template(rungs.base), searcher, ledger, executor,
                                                loop, rungs, on_trial=progress.update)
            else:
                result = run_loop(problem.recipe, problem.template(settings.fidelity), searcher, ledger, executor, loop,
                                  on_trial=progress.update)
        trials = ledger.trials()
        best = pick(problem, top_rung_trials(trials, rungs) if rungs else trials, log=console.print)
        console.print(f"best feasible: trial {best.number} (val acc {best.accuracy:.4f}); final fine-tune of {settings.final_steps} steps")
        final = finalize(problem, ledger, best, executor, log=console.print)
    trials = ledger.trials()
    summary = build_summary(problem, result, trials, final, command, time.perf_counter() - started)
    write_summary(problem.run_dir, summary)
    kept = problem.space.kept_widths(best.policy)
    dense_widths = {s.name: s.channels for s in problem.space.slots}
    report = write_report(problem.run_dir, summary, trials, final.trial, dense_widths, kept)
    print_summary(Console(), summary)
    console.print(f"report: {report}\npolicy: {final.policy_path}\nmodel: {final.model_path}")
    return 0


def ledger_url(problem) -> str:
    return problem.settings.storage or f"{problem.run_dir / 'study.db'}"


def build_summary(problem, result, trials, final, command: str, elapsed: float) -> dict[str, Any]:
    from autoprune.report import phase_medians

    search_trials = [t for t in trials if t.fidelity != "final"]
    useful = sum(o.timings.get("finetune_s", 0.0) + o.timings.get("evaluate_s", 0.0) for o in result.outcomes)
    overhead = (result.elapsed_s - useful) / result.elapsed_s if result.elapsed_s > 0 else 0.0
    s = problem.settings
    m = final.outcome.metrics
    return {
        "command": command, "model": s.model, "data": s.data, "target": s.target, "budget": s.budget,
        "metric": problem.metric, "limit": problem.limit, "floor": problem.floor, "dense": problem.dense,
        "cost_settings": problem.cost.describe(), "searcher": s.searcher, "fidelity": s.fidelity, "seed": s.seed,
        "dense_val_accuracy": problem.task.dense_val_accuracy, "dense_test_accuracy": problem.task.dense_test_accuracy,
        "scored": sum(t.scored for t in search_trials), "rejected": sum(t.state == "rejected" for t in search_trials),
        "failed": sum(t.state == "failed" for t in search_trials), "stopped": result.stopped,
        "search_s": result.elapsed_s, "elapsed_s": elapsed, "overhead_fraction": overhead, "phase_medians": phase_medians(search_trials),
        "final": {
            "trial": final.trial.number, "search_trial": final.search_trial,
            "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
            "macs": m.get("macs"), "params": m.get("params"), "latency_ms": m.get("latency_ms"),
            "verified_cost": final.verified_cost, "within_budget": final.verified_cost <= problem.limit,
            "model": str(final.model_path), "policy": str(final.policy_path),
        },
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    from autoprune.objectives import format_metric

    table = Table(title=f"{summary['model']} on {summary['data']}: {summary['target']} budget {summary['budget']}")
    for col in ("", "val acc", "test acc", "MACs", "params", "latency (ms)"):
        table.add_column(col)
    d = summary["dense"]
    table.add_row("dense", f"{summary['dense_val_accuracy']:.4f}", f"{summary['dense_test_accuracy']:.4f}",
                  format_metric("macs", d["macs"]), format_metric("params", d["params"]), f"{d['latency_ms']:.2f}")
    f = summary.get("final")
    if f:
        table.add_row("pruned", f"{f['val_accuracy']:.4f}", f"{f['test_accuracy']:.4f}", format_metric("macs", f["macs"]),
                      format_metric("params", f["params"]), f"{f['latency_ms']:.2f}")
    console.print(table)
    console.print(f"latency at {summary['cost_settings']}; limit {format_metric(summary['metric'], summary['limit'])}; "
                  f"{summary['scored']} scored, {summary['rejected']} rejected; {summary['elapsed_s']:.0f} s")


def show_command(run_dir: str, storage: str | None, console: Console) -> int:
    import json

    from autoprune.report import member_rows, pareto_front

    path = Path(run_dir)
    summary_path = path / "summary.json"
    storage = storage or f"sqlite:///{(path / 'study.db').resolve()}"
    if not (path / "study.db").exists() and not summary_path.exists() and storage.endswith("study.db"):
        raise UserError(f"{run_dir} is not an autoprune run directory (no study.db or summary.json)")
    trials = load_trials(storage)
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        print_summary(console, summary)
        metric = summary["metric"]
    else:
        console.print("(no summary.json: the search has not finished)")
        metric = "latency_ms" if any("latency_ms" in t.metrics for t in trials) else "macs"
    table = Table(title=f"Pareto front over {sum(t.scored for t in trials)} scored trials")
    for col in ("trial", "searcher", "fidelity", "val acc", metric, "within budget"):
        table.add_column(col)
    for t in pareto_front(trials, metric):
        searcher = f"{t.searcher}/{t.member}" if t.member else t.searcher
        table.add_row(str(t.number), searcher, t.fidelity, f"{t.accuracy:.4f}", f"{t.metrics[metric]:.4g}", "yes" if t.feasible else "no")
    console.print(table)
    pick = (summary.get("final") or {}).get("search_trial") if summary_path.exists() else None
    print_members(console, member_rows(trials, pick))
    return 0


def print_members(console: Console, rows) -> None:
    """A portfolio search's members: share of trials and time, and which found the pick."""
    if not rows:
        return
    table = Table(title="Portfolio members")
    for col in ("member", "trials", "share of trials", "probes", "seconds", "share of time", "found the pick"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.member, f"{r.trials} ({r.scored} scored)", f"{100 * r.trial_share:.0f}%", str(r.probes),
                      f"{r.seconds:.0f}", f"{100 * r.time_share:.0f}%", "yes" if r.found_pick else "")
    console.print(table)


def load_trials(storage: str):
    import optuna

    from autoprune.study import to_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot open Optuna storage {storage}: {str(exc).splitlines()[0]}") from exc
    trials = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        fp = study.user_attrs.get("fingerprint", "")
        trials += [to_trial(t, fp) for t in study.get_trials(deepcopy=False)]
    return trials


def apply_command(args: argparse.Namespace, console: Console) -> int:
    from autoprune.pipeline import default_rules_name
    from autoprune.policy_io import load_policy
    from autoprune.prune import save_slimmed
    from autoprune.rules import load_rules
    from autoprune.space import SearchSpace
    from autoprune.task import TaskRecipe, accuracy, load_task
    from autoprune.trial import slim

    policy, prov = load_policy(args.policy)
    saved = dict(prov.get("recipe") or {"model": prov.get("model", "resnet20"), "data": prov.get("data", "digits"),
                                        "image_size": prov.get("image_size"), "seed": int(prov.get("seed", 0))})
    overrides = {"model": args.model, "data": args.data, "checkpoint": args.checkpoint, "cache_dir": args.cache_dir}
    saved.update({k: v for k, v in overrides.items() if v is not None})
    recipe = TaskRecipe.from_dict(saved)
    model = recipe.model
    task = load_task(recipe, progress=True)
    rules = load_rules(prov.get("search_space") or default_rules_name(model)).with_granularity(prov.get("granularity", "slot"))
    space = SearchSpace.from_model(task.model, task.example_inputs(), rules)
    space.check(policy)
    slimmed, history = slim(task, space, policy, prov.get("criterion", "magnitude"), recipe.seed)
    if args.finetune_steps > 0:
        from autoprune.data import endless_batches
        from autoprune.evaluators import DistillConfig, distill, recalibrate_bn

        batches = endless_batches(task.data, task.data.train, 64, seed=recipe.seed, augment=task.data.augment)
        recalibrate_bn(slimmed, batches, 20)
        distill(slimmed, task.model, batches, args.finetune_steps, DistillConfig())
    save_slimmed(args.out, slimmed, history, fingerprint=space.fingerprint, input_shape=task.input_shape,
                 meta={"policy": policy.as_dict(), "source_policy": str(args.policy)})
    acc = accuracy(slimmed, task.data, task.data.val)
    console.print(f"wrote {args.out}: val accuracy {acc:.4f} ({args.finetune_steps} fine-tune steps)")
    return 0
