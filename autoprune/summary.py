"""The run's summary: built once from the problem, the search and the final trial, written to
``summary.json``, printed at the end of ``autoprune search`` and by ``autoprune show``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from autoprune.errors import EXIT_OVER_BUDGET


def over_budget(summary: dict[str, Any]) -> str | None:
    """What to say when a finished run's export measured over its budget (then the exit status is
    ``EXIT_OVER_BUDGET``, so scripts and CI can tell), else None."""
    from autoprune.objectives import format_metric

    final, metric = summary["final"], summary["metric"]
    if final["within_budget"]:
        return None
    return (f"the exported model is OVER the budget: {metric} {format_metric(metric, final['verified_cost'])} > "
            f"{format_metric(metric, summary['limit'])} (exit status {EXIT_OVER_BUDGET}; summary.json has within_budget: false)")


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
