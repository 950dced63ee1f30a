"""The Pareto front of an ``--objectives`` search: what it found, how it is reported, and how one
of its points becomes a model.

A search with ``--objectives accuracy,latency`` (any of accuracy, latency, macs, params) keeps a
multi-objective Optuna study and exports nothing itself: its result is the front of scored search
trials no other scored trial beats on every objective, written to ``summary.json`` (``front``),
``report.md`` and ``front.png``. ``autoprune export RUN_DIR --trial N`` (or ``--at latency=3ms``,
the most accurate trial within that bound) gives any point the final fine-tune a single-budget
search gives its pick, in ``RUN_DIR/points/trial-N/`` with its own summary and report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.errors import UserError
from autoprune.objectives import OBJECTIVES, TARGETS, format_metric, parse_budget
from autoprune.study import Trial

FRONT_PLOT = "front.png"


def pareto_front(trials: Sequence[Trial], metrics: Sequence[str]) -> list[Trial]:
    """Scored search trials (the final fine-tune excepted) no other beats on accuracy (max) and
    every cost in ``metrics`` (min), cheapest first by the first metric."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    scored = [t for t in trials if t.scored and t.fidelity != "final" and all(m in t.metrics for m in metrics)]
    if not scored:
        return []
    f = np.array([[-(t.accuracy or 0.0), *(t.metrics[m] for m in metrics)] for t in scored])
    front = NonDominatedSorting().do(f, only_non_dominated_front=True)
    return sorted((scored[i] for i in front), key=lambda t: (t.metrics[metrics[0]], t.number))


def parse_at(text: str) -> tuple[str, str]:
    """``latency=3ms`` -> (target, budget text); the value is a budget as ``--budget`` takes it
    (a fraction of dense, or a value with a unit)."""
    name, sep, value = str(text).partition("=")
    name = name.strip()
    if not sep or not value.strip():
        raise UserError(f"--at {text!r}: give METRIC=VALUE, such as latency=3ms, macs=0.4 or params=1.2M")
    if name not in TARGETS:
        raise UserError(f"--at {text!r}: unknown metric {name!r}; choose one of {', '.join(TARGETS)}")
    parse_budget(value.strip(), name)  # its syntax and unit, before any work
    return name, value.strip()


def within(trials: Sequence[Trial], metric: str, limit: float) -> list[Trial]:
    """Scored, feasible search trials whose ``metric`` is at most ``limit``."""
    return [t for t in trials if t.scored and t.feasible and t.fidelity != "final" and t.metrics.get(metric, np.inf) <= limit]


def hypervolume_2d(front: Sequence[Trial], metric: str, dense_cost: float) -> float:
    """The bench's hypervolume (``autoprune.bench.metrics``) of (val accuracy, cost / dense)."""
    from autoprune.bench.metrics import hypervolume

    return hypervolume([(t.accuracy or 0.0, t.metrics[metric] / dense_cost) for t in front])


# -- summary, report and table of a search's front ---------------------------------------------------------
def front_rows(front: Sequence[Trial], metrics: Sequence[str], dense: Mapping[str, float]) -> list[dict[str, Any]]:
    """One record per point of the front, as ``summary.json``'s ``front`` holds it."""
    rows = []
    for t in front:
        row: dict[str, Any] = {"trial": t.number, "searcher": t.searcher, "val_accuracy": t.accuracy}
        for m in ("latency_ms", "macs", "params"):
            if m in t.metrics:
                row[m] = t.metrics[m]
        row["fraction_of_dense"] = {m: t.metrics[m] / dense[m] for m in metrics}
        rows.append(row)
    return rows


def front_summary(problem, result, trials: Sequence[Trial], command: str, elapsed: float) -> dict[str, Any]:
    """``summary.json`` of an ``--objectives`` search: the run's part and its front."""
    from autoprune.summary import run_summary

    metrics = list(problem.objectives)
    front = pareto_front(trials, metrics)
    summary = run_summary(problem, result, trials, command, elapsed)
    summary["objectives"] = ["val_accuracy", *metrics]
    summary["front"] = front_rows(front, metrics, problem.dense)
    summary["hypervolume"] = {m: hypervolume_2d(pareto_front(trials, [m]), m, problem.dense[m]) for m in metrics}
    return summary


def export_hint(run_dir: Path, summary: Mapping[str, Any]) -> str:
    front = summary.get("front") or []
    if not front:
        return "the front is empty: no trial was scored"
    metric = summary["objectives"][1]
    target = next(t for t, m in TARGETS.items() if m == metric)
    mid = front[len(front) // 2]
    return (f"export a point with its final fine-tune: autoprune export {run_dir} --trial {mid['trial']}, "
            f"or the most accurate within a bound: autoprune export {run_dir} --at {target}={_bound(metric, mid[metric])}")


def _bound(metric: str, value: float) -> str:
    if metric == "latency_ms":
        return f"{value:.2f}ms"
    return format_metric(metric, value).replace(" ", "")


def print_front(console: Any, summary: Mapping[str, Any]) -> None:
    from rich.table import Table

    metrics = summary["objectives"][1:]
    table = Table(title=f"{summary['model']} on {summary['data']}: the front of val accuracy against {', '.join(metrics)}")
    for col in ("search trial", "searcher", "val acc", *(_name(m) for m in metrics), "fraction of dense"):
        table.add_column(col)
    d = summary["dense"]
    table.add_row("dense", "", f"{summary['dense_val_accuracy']:.4f}", *(format_metric(m, d[m]) for m in metrics), "1")
    for row in summary["front"]:
        table.add_row(str(row["trial"]), row["searcher"], f"{row['val_accuracy']:.4f}",
                      *(format_metric(m, row[m]) for m in metrics),
                      ", ".join(f"{row['fraction_of_dense'][m]:.2f}" for m in metrics))
    console.print(table)
    hv = ", ".join(f"{_name(m)} {v:.4f}" for m, v in (summary.get("hypervolume") or {}).items())
    console.print(f"{summary['scored']} scored search trials, {summary['rejected']} rejected; hypervolume {hv}; "
                  f"{summary['elapsed_s']:.0f} s", soft_wrap=True)


def _name(metric: str) -> str:
    return next((n for n, m in OBJECTIVES.items() if m == metric), metric)


def plot_front(path: Path, trials: Sequence[Trial], summary: Mapping[str, Any]) -> Path:
    """Accuracy against each cost objective (one panel each): every scored search trial by
    searcher, the points of the front, and the dense model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoprune.report import axis_label

    metrics = summary["objectives"][1:]
    front = {row["trial"] for row in summary["front"]}
    scored = [t for t in trials if t.scored and t.fidelity != "final"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5), dpi=110, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name in sorted({t.searcher for t in scored}):
            pts = [t for t in scored if t.searcher == name and metric in t.metrics]
            ax.scatter([t.metrics[metric] for t in pts], [100 * (t.accuracy or 0) for t in pts], s=16, alpha=0.6,
                       label=f"{name} ({len(pts)} trials)")
        pts = sorted((t for t in scored if t.number in front), key=lambda t: t.metrics[metric])
        ax.scatter([t.metrics[metric] for t in pts], [100 * (t.accuracy or 0) for t in pts], s=60, facecolor="none",
                   edgecolor="black", label="front (all objectives)")
        for t in pts:
            ax.annotate(str(t.number), (t.metrics[metric], 100 * (t.accuracy or 0)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.scatter([summary["dense"][metric]], [100 * summary["dense_val_accuracy"]], marker="D", color="grey",
                   label="dense")
        ax.set_xlabel(axis_label(metric))
        ax.set_ylabel("val accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary['model']} on {summary['data']}: searcher {summary['searcher']}, seed {summary['seed']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_front_report(run_dir: Path, summary: Mapping[str, Any], trials: Sequence[Trial]) -> Path:
    """``report.md`` and ``front.png`` of an ``--objectives`` search."""
    from autoprune.atomic import write_text_atomic

    plot_front(run_dir / FRONT_PLOT, trials, summary)
    metrics = summary["objectives"][1:]
    bound = "no budget" if summary["budget"] == "none" else (
        f"within {summary['target']} <= {format_metric(summary['metric'], summary['limit'])} (budget {summary['budget']})")
    lines = [f"# autoprune report: {summary['model']} on {summary['data']}, the front", "",
             f"Objectives: val accuracy against {', '.join(_name(m) for m in metrics)}, {bound}. Searcher "
             f"`{summary['searcher']}`, {summary['scored']} scored search trials ({summary['rejected']} rejected, "
             f"{summary.get('failed', 0)} failed), fidelity `{summary['fidelity']}`, seed {summary['seed']}, "
             f"{summary['elapsed_s']:.0f} s in all. Accuracies are at search fidelity: a point's final fine-tune "
             "raises it (`autoprune export RUN_DIR --trial N`).", "",
             f"![accuracy against cost]({FRONT_PLOT})", "",
             "| search trial | searcher | val acc | " + " | ".join(_name(m) for m in metrics) + " | fraction of dense | export |",
             "|---|---|---|" + "---|" * len(metrics) + "---|---|",
             f"| dense | | {summary['dense_val_accuracy']:.4f} | "
             + " | ".join(format_metric(m, summary["dense"][m]) for m in metrics) + " | 1 | |"]
    for row in summary["front"]:
        lines.append(f"| {row['trial']} | {row['searcher']} | {row['val_accuracy']:.4f} | "
                     + " | ".join(format_metric(m, row[m]) for m in metrics) + " | "
                     + ", ".join(f"{row['fraction_of_dense'][m]:.2f}" for m in metrics)
                     + f" | `autoprune export {run_dir} --trial {row['trial']}` |")
    hv = summary.get("hypervolume") or {}
    if hv:
        lines += ["", "Hypervolume of (1 - val accuracy, cost / dense) against the reference point (1, 1), "
                  "per cost: " + ", ".join(f"{_name(m)} {v:.4f}" for m, v in hv.items()) + "."]
    lines += ["", f"Regenerate: `{summary['command']}`", ""]
    return write_text_atomic(run_dir / "report.md", "\n".join(lines))


def finish_front(problem, ledger, result, command: str, elapsed: float, console: Any, table_to_stdout: bool):
    """The end of an ``--objectives`` search: summary, report and the front's table; no export."""
    from autoprune.finalize import write_summary
    from autoprune.progress import make_console
    from autoprune.search_run import SearchResult

    trials = ledger.trials()
    summary = front_summary(problem, result, trials, command, elapsed)
    write_summary(problem.run_dir, summary)
    report = write_front_report(problem.run_dir, summary, trials)
    print_front(make_console(quiet=console.quiet) if table_to_stdout else console, summary)
    console.print(f"report: {report}\n{export_hint(problem.run_dir, summary)}", soft_wrap=True)
    return SearchResult(None, None, ledger.study, problem.run_dir, summary, 0, problem.task.model)


# -- one point of a run, finalised -------------------------------------------------------------------------
def export_point(run_dir: Path, *, trial: int | None, at: str | None, console: Any, command: str,
                 cache_dir: str | None = None) -> Path:
    """Give search trial ``trial`` of ``run_dir`` (or the most accurate within ``at``, such as
    ``latency=3ms``) the run's final fine-tune, export and verification, in
    ``run_dir/points/trial-N/`` (model.pt, policy.yaml, summary.json, report.md); returns its
    model.pt. A point already finalised there is reused. Works for any run, a front or not."""
    from dataclasses import replace

    from autoprune.executors import make_executor
    from autoprune.finalize import finalize, pick, write_summary
    from autoprune.pipeline import build_problem, open_ledger
    from autoprune.report import write_report
    from autoprune.runner import LoopResult
    from autoprune.settings import resolve_run, settings_from_dict
    from autoprune.summary import build_summary, print_summary
    from autoprune.yaml_files import read_yaml_mapping

    target_at = parse_at(at) if at is not None else None  # its syntax before any work
    path = run_dir / "settings.yaml"
    if not path.is_file():
        what = "is not a directory" if not run_dir.is_dir() else "holds no settings.yaml"
        raise UserError(f"{run_dir} {what}; give a run directory made by `autoprune search`")
    data = {**read_yaml_mapping(path, "run settings"), "resume": True, "run_dir": str(run_dir)}
    if cache_dir:
        data["cache_dir"] = cache_dir
    problem = build_problem(resolve_run(settings_from_dict(data, str(path))), log=console.print)
    ledger = open_ledger(problem)
    # Bounds and re-measurements in the units the trials were: latencies were read as ratios to
    # the dense model times its latency when the search began, which re-measuring now would move.
    recorded = {k: float(v) for k, v in (ledger.study.user_attrs.get("dense") or {}).items()}
    if recorded:
        problem = replace(problem, dense={**problem.dense, **recorded},
                          limit=problem.budget.limit(recorded.get(problem.metric, problem.dense[problem.metric])))
    trials = ledger.trials()
    if target_at is None:
        chosen = next((t for t in trials if t.number == trial), None)
        if chosen is None or not chosen.scored or chosen.fidelity == "final":
            raise UserError(f"trial {trial} of {run_dir} is not a scored search trial; `autoprune show {run_dir}` "
                            "lists them (report.md lists the front)")
        point = problem
    else:
        budget = parse_budget(target_at[1], target_at[0])
        point = replace(problem, budget=budget, limit=budget.limit(problem.dense[budget.metric]))
        ranked = within(trials, budget.metric, point.limit)
        if not ranked:
            costs = [t.metrics[budget.metric] for t in trials if t.scored and budget.metric in t.metrics]
            cheapest = f"; the cheapest scored trial has {format_metric(budget.metric, min(costs))}" if costs else ""
            raise UserError(f"--at {at}: no scored trial of {run_dir} has {budget.metric} <= "
                            f"{format_metric(budget.metric, point.limit)}{cheapest}")
        chosen = pick(point, ranked, log=console.print)
    point = replace(point, run_dir=run_dir / "points" / f"trial-{chosen.number}")
    point.run_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"point: search trial {chosen.number} (val acc {chosen.accuracy:.4f} at fidelity {chosen.fidelity}); "
                  f"final fine-tune of {problem.settings.final_steps} steps into {point.run_dir}")
    with make_executor("inline", workers=1, threads_per_worker=problem.scoring.threads) as executor:
        final = finalize(point, ledger, chosen, executor, log=console.print)
    trials = ledger.trials()
    summary = build_summary(point, LoopResult((), "export", 0.0, ()), trials, final, command, 0.0)
    write_summary(point.run_dir, summary)
    kept = point.space.kept_widths(chosen.policy)
    write_report(point.run_dir, summary, trials, final.trial, {s.name: s.channels for s in point.space.slots}, kept)
    print_summary(console, summary)
    return final.model_path
