"""The run's summary: built once from the problem, the search and the final trial, written to
``summary.json``, printed at the end of ``autoprune search`` and by ``autoprune show``.

The exported model has one latency everywhere a user reads it: the reading taken when the
exported ``model.pt`` is reloaded from disk and measured (``final.latency_ms``, the same as
``final.verified_cost`` for a latency budget and ``policy.yaml``'s ``metrics.latency_ms``). The
final fine-tune trial's own reading, taken in a worker, is kept as ``final.trial_latency_ms``.
``docs/outputs.md`` defines every key.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autoprune.errors import EXIT_OVER_BUDGET, UserError
from autoprune.study import Trial

TOP1 = "val top-1 accuracy"
CUSTOM = "evaluate(model)"


def search_trials(trials: Sequence[Trial]) -> list[Trial]:
    """The search's own trials: every trial but the final fine-tune (``fidelity: final``).
    What every count of trials in the summary, the report and ``autoprune show`` is over."""
    return [t for t in trials if t.fidelity != "final"]


def over_budget(summary: dict[str, Any]) -> str | None:
    """What to say when a finished run's export measured over its budget (then the exit status is
    ``EXIT_OVER_BUDGET``, so scripts and CI can tell), else None."""
    from autoprune.objectives import format_metric

    final, metric = summary["final"], summary["metric"]
    if final["within_budget"]:
        return None
    return (f"the exported model is OVER the budget: {metric} {format_metric(metric, final['verified_cost'])} > "
            f"{format_metric(metric, summary['limit'])} (exit status {EXIT_OVER_BUDGET}; summary.json has within_budget: false)")


def machine() -> dict[str, Any]:
    """The CPU model, its core count and the platform the latencies were measured on."""
    from autoprune.bench.machine import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count() or 1, "platform": platform.platform()}


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the figures depend on."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import autoprune

    out = {"python": platform.python_version(), "torch": torch.__version__, "autoprune": autoprune.__version__}
    for key, dist in (("torch_pruning", "torch-pruning"), ("optuna", "optuna")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "not installed"
    return out


def ratio(before: float | None, after: float | None) -> float | None:
    """``before / after`` (a speed-up or a size reduction), None where either is missing or 0."""
    if not before or not after:
        return None
    return float(before) / float(after)


def times(value: float | None, better: str, worse: str) -> str:
    """A ratio as a user quotes it: ``2.26x faster``, or ``1.20x slower`` below 1; '' for None."""
    if value is None:
        return ""
    return f"{value:.2f}x {better}" if value >= 1.0 else f"{1.0 / value:.2f}x {worse}"


def exported_metrics(policy_path: Path) -> dict[str, float]:
    """The costs measured on the exported model reloaded from disk, as ``policy.yaml`` records
    them (``provenance.metrics``: ``macs``, ``params``, ``latency_ms`` and, for a latency budget
    relative to dense, ``latency_ratio`` and ``latency_ms_now``); {} where the file cannot be read."""
    from autoprune.policy_io import load_policy

    try:
        _, provenance = load_policy(policy_path)
    except (UserError, OSError):
        return {}
    metrics = provenance.get("metrics") or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def residual_slots(model, example_inputs, slot_names: Sequence[str]) -> dict[str, list[str]]:
    """Slots whose channels are the outputs of more than one layer (a residual stream: every
    block's last conv, the stem or shortcut summed into it), each with those layers' names.
    One such slot sets the residual width of a whole stage. {} where the graph cannot be built."""
    from torch import nn

    from autoprune.graph import all_groups, build_graph, is_depthwise
    from autoprune.space import find_classifier

    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    wanted = set(slot_names)
    try:
        graph = build_graph(model, example_inputs)
        groups, _ = all_groups(graph, find_classifier(model, example_inputs) + list(graph.IGNORED_LAYERS_IN_TRACING))
    except Exception:  # noqa: BLE001 - only the report's note on widths depends on it
        return {}
    out: dict[str, list[str]] = {}
    for group in groups:
        outs = [names[i.dep.target.module] for i in group.items
                if isinstance(i.dep.target.module, (nn.Conv2d, nn.Linear)) and not is_depthwise(i.dep.target.module)
                and graph.is_out_channel_pruning_fn(i.dep.handler)]
        layers = sorted(set(outs), key=order.__getitem__)
        named = [n for n in layers if n in wanted]
        if len(layers) > 1 and named:
            out[named[0]] = layers
    return dict(sorted(out.items(), key=lambda item: order[item[0]]))


def run_summary(problem, result, trials: Sequence[Trial], command: str, elapsed: float) -> dict[str, Any]:
    """The part of ``summary.json`` every run has, whatever it exports: the settings, the dense
    model's figures, split sizes, machine and versions, and the search's counts and times."""
    from autoprune.pipeline import MIN_VAL_IMAGES
    from autoprune.report import phase_medians

    searched = search_trials(trials)
    useful = sum(o.timings.get("finetune_s", 0.0) + o.timings.get("evaluate_s", 0.0) for o in result.outcomes)
    overhead = (result.elapsed_s - useful) / result.elapsed_s if result.elapsed_s > 0 else 0.0
    s, task = problem.settings, problem.task
    top1 = getattr(problem.scoring, "evaluate", None) is None
    val_n, test_n = len(task.data.val), len(task.data.test)
    return {
        "command": command, "model": s.model, "data": s.data, "target": problem.budget.target, "budget": problem.budget.text,
        "objectives": s.objectives, "metric": problem.metric, "limit": problem.limit, "floor": problem.floor,
        "dense": problem.dense, "cost_settings": problem.cost.describe(), "searcher": s.searcher, "fidelity": s.fidelity,
        "seed": s.seed, "score": TOP1 if top1 else CUSTOM,
        "dense_val_accuracy": task.dense_val_accuracy, "dense_test_accuracy": task.dense_test_accuracy,
        "splits": {"train": len(task.data.train), "val": val_n, "test": test_n},
        "small_val_split": val_n < MIN_VAL_IMAGES, "min_val_images": MIN_VAL_IMAGES,
        "machine": machine(), "versions": versions(),
        "trials": len(searched), "scored": sum(t.scored for t in searched),
        "rejected": sum(t.state == "rejected" for t in searched),
        "failed": sum(t.state == "failed" for t in searched), "stopped": result.stopped,
        "search_s": result.elapsed_s, "elapsed_s": elapsed, "overhead_fraction": overhead,
        "phase_medians": phase_medians(searched),
    }


def build_summary(problem, result, trials: Sequence[Trial], final, command: str, elapsed: float) -> dict[str, Any]:
    """Everything ``summary.json`` holds: the run's part (``run_summary``), the exported model's
    figures, and the speed-up and accuracy change."""
    s, task, dense = problem.settings, problem.task, problem.dense
    m = final.outcome.metrics
    exported = exported_metrics(final.policy_path)
    picked = next((t for t in trials if t.number == final.search_trial), None)
    latency = exported.get("latency_ms", final.verified_cost if problem.metric == "latency_ms" else None)
    fin = {
        "trial": final.trial.number, "search_trial": final.search_trial,
        "search_fidelity": picked.fidelity if picked else s.fidelity,
        "search_val_accuracy": picked.accuracy if picked else None,
        "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
        "macs": exported.get("macs", m.get("macs")), "params": exported.get("params", m.get("params")),
        "latency_ms": latency, "trial_latency_ms": m.get("latency_ms"),
        **{k: exported[k] for k in ("latency_ratio", "latency_ms_now") if k in exported},
        "verified_cost": final.verified_cost, "within_budget": final.verified_cost <= problem.limit,
        "model": str(final.model_path), "policy": str(final.policy_path),
    }
    summary = run_summary(problem, result, trials, command, elapsed)
    scale = 100.0 if summary["score"] == TOP1 else 1.0  # points of accuracy; a user's score as it is
    val_n, test_n = summary["splits"]["val"], summary["splits"]["test"]

    def change(key: str, dense_value: float | None) -> float | None:
        value = fin[key]
        return None if value is None or dense_value is None else scale * (value - dense_value)

    slots = [slot.name for slot in problem.space.slots]
    return {
        **summary,
        "speedup": {"latency": ratio(dense.get("latency_ms"), latency), "macs": ratio(dense.get("macs"), fin["macs"]),
                    "params": ratio(dense.get("params"), fin["params"])},
        "points": {"val": change("val_accuracy", task.dense_val_accuracy),
                   "test": change("test_accuracy", task.dense_test_accuracy),
                   "val_per_image": 100.0 / val_n if val_n and scale == 100.0 else None,
                   "test_per_image": 100.0 / test_n if test_n else None},
        "residual_slots": residual_slots(task.model, task.example_inputs(), slots),
        "final": fin,
    }


def exported_latency(summary: Mapping[str, Any]) -> float | None:
    """The exported model's latency (ms): ``final.latency_ms``, the verified export reading. A
    summary written before that held the final trial's own reading there; for a latency budget
    its ``verified_cost`` is the export's reading, else the old value is all there is."""
    final = summary.get("final") or {}
    if "trial_latency_ms" not in final and summary.get("metric") == "latency_ms" and "verified_cost" in final:
        return float(final["verified_cost"])
    value = final.get("latency_ms")
    return None if value is None else float(value)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The dense and the exported model side by side, then the budget and the search's counts."""
    from autoprune.objectives import format_metric

    table = Table(title=f"{summary['model']} on {summary['data']}: {summary['target']} budget {summary['budget']}")
    for col in ("", "val acc", "test acc", "MACs", "params", "latency (ms)"):
        table.add_column(col)
    d = summary["dense"]
    table.add_row("dense", f"{summary['dense_val_accuracy']:.4f}", f"{summary['dense_test_accuracy']:.4f}",
                  format_metric("macs", d["macs"]), format_metric("params", d["params"]), f"{d['latency_ms']:.2f}")
    f = summary.get("final")
    if f:
        latency = exported_latency(summary)
        table.add_row(f"final fine-tune\n(trial {f['trial']}) of\nsearch trial {f['search_trial']}",
                      f"{f['val_accuracy']:.4f}", f"{f['test_accuracy']:.4f}", format_metric("macs", f["macs"]),
                      format_metric("params", f["params"]), "" if latency is None else f"{latency:.2f}")
    console.print(table)
    speed = summary.get("speedup") or {}
    if f and speed.get("latency"):
        console.print(f"exported model: {times(speed['latency'], 'faster', 'slower')}, "
                      f"{times(speed['macs'], 'fewer MACs', 'more MACs')}, "
                      f"{times(speed['params'], 'fewer params', 'more params')} (latency: the export reloaded and "
                      + ("estimated from the deploy device's table)" if "latency table" in summary["cost_settings"]
                         else "re-measured)"), soft_wrap=True)
    console.print(f"latency at {summary['cost_settings']}; limit {format_metric(summary['metric'], summary['limit'])}; "
                  f"{summary['scored']} scored search trials, {summary['rejected']} rejected; {summary['elapsed_s']:.0f} s",
                  soft_wrap=True)


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
