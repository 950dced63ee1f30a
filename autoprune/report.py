"""The run report: Pareto front (table and plot), kept widths per slot, timings, final figures."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.objectives import UNITS, format_metric
from autoprune.study import COMPLETE, REJECTED, Trial

PHASES = ("prune_s", "measure_s", "finetune_s", "evaluate_s", "setup_s", "total_s")


def pareto_front(trials: Sequence[Trial], metric: str) -> list[Trial]:
    """Scored trials no other scored trial beats on both accuracy (max) and ``metric`` (min)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    scored = [t for t in trials if t.scored and metric in t.metrics and t.fidelity != "final"]
    if not scored:
        return []
    f = np.array([[-(t.accuracy or 0.0), t.metrics[metric]] for t in scored])
    front = NonDominatedSorting().do(f, only_non_dominated_front=True)
    return sorted((scored[i] for i in front), key=lambda t: t.metrics[metric])


@dataclass(frozen=True)
class MemberRow:
    """One portfolio member's part of a search, read from the ledger (``member_rows``)."""

    member: str
    trials: int  # ordinary trials (scored or rejected), probes excepted
    scored: int
    probes: int
    seconds: float  # recorded trial seconds plus the member's ask seconds, probes included
    trial_share: float
    time_share: float
    found_pick: bool


def member_rows(trials: Sequence[Trial], pick: int | None) -> list[MemberRow]:
    """Per member of a portfolio search, its share of trials and time and whether it proposed the
    search trial ``pick``; [] when no trial names a member (not a portfolio search)."""
    search = [t for t in trials if t.member and t.fidelity != "final" and t.state in (COMPLETE, REJECTED)]
    if not search:
        return []

    def probe(t: Trial) -> bool:  # probes are scored without the budget
        return t.scored and t.constraint is None

    def seconds(t: Trial) -> float:
        return float(t.metrics.get("total_s", 0.0)) + float(t.metrics.get("member_ask_s", 0.0))

    all_trials = max(1, sum(not probe(t) for t in search))
    all_s = sum(seconds(t) for t in search) or 1.0
    picked = next((t.member for t in trials if t.number == pick), "")
    rows = []
    for name in dict.fromkeys(t.member for t in search):
        mine = [t for t in search if t.member == name]
        ordinary = [t for t in mine if not probe(t)]
        spent = sum(seconds(t) for t in mine)
        rows.append(MemberRow(name, len(ordinary), sum(t.scored for t in ordinary), len(mine) - len(ordinary), spent,
                              len(ordinary) / all_trials, spent / all_s, name == picked))
    return rows


def member_lines(rows: Sequence[MemberRow]) -> list[str]:
    """The report's table of portfolio members (nothing for other searches)."""
    if not rows:
        return []
    lines = ["", "## Portfolio members", "",
             "Each member's ordinary trials (probes of a set-up phase apart) and time, as shares of the search.", "",
             "| member | trials | share of trials | probes | seconds | share of time | found the pick |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| `{r.member}` | {r.trials} ({r.scored} scored) | {100 * r.trial_share:.0f}% | {r.probes} | {r.seconds:.0f} | "
              f"{100 * r.time_share:.0f}% | {'yes' if r.found_pick else ''} |" for r in rows]
    return lines


def phase_medians(trials: Sequence[Trial]) -> dict[str, float]:
    """Median seconds per phase over scored search trials."""
    scored = [t for t in trials if t.scored and t.fidelity != "final"]
    return {p: statistics.median(t.metrics[p] for t in scored) for p in PHASES if scored and all(p in t.metrics for t in scored)}


def plot_front(path: Path, trials: Sequence[Trial], metric: str, limit: float, dense: dict[str, float],
               dense_acc: float, final: Trial | None) -> Path:
    """Accuracy against the target metric: every scored trial, the front, the budget, the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    scored = [t for t in trials if t.scored and metric in t.metrics and t.fidelity != "final"]
    def label(t: Trial) -> str:  # a portfolio's trials by member
        return f"{t.searcher}/{t.member}" if t.member else t.searcher

    for name in sorted({label(t) for t in scored}):
        pts = [t for t in scored if label(t) == name]
        ax.scatter([t.metrics[metric] for t in pts], [100 * (t.accuracy or 0) for t in pts], s=18, alpha=0.7, label=name)
    front = pareto_front(trials, metric)
    if front:
        ax.step([t.metrics[metric] for t in front], [100 * (t.accuracy or 0) for t in front], where="post",
                color="black", lw=1, label="Pareto front")
    ax.axvline(limit, color="red", ls="--", lw=1, label="budget")
    ax.scatter([dense[metric]], [100 * dense_acc], marker="D", color="gray", label="dense")
    if final is not None:
        ax.scatter([final.metrics.get(metric, np.nan)], [100 * (final.accuracy or 0)], marker="*", s=160,
                   color="gold", edgecolor="black", label="chosen (final fine-tune)")
    ax.set_xlabel(f"{metric} ({UNITS[metric]})")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_widths(path: Path, dense_widths: dict[str, int], kept: dict[str, int]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dense_widths)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4), dpi=120)
    x = np.arange(len(names))
    ax.bar(x, [dense_widths[n] for n in names], color="lightgray", label="dense")
    ax.bar(x, [kept[n] for n in names], color="tab:blue", label="kept")
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("channels")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_dir: Path, summary: dict[str, Any], trials: Sequence[Trial], final: Trial | None,
                 dense_widths: dict[str, int], kept: dict[str, int]) -> Path:
    """``report.md`` plus ``pareto.png`` and ``widths.png`` in the run directory."""
    metric, limit, dense = summary["metric"], summary["limit"], summary["dense"]
    plot_front(run_dir / "pareto.png", trials, metric, limit, dense, summary["dense_val_accuracy"], final)
    plot_widths(run_dir / "widths.png", dense_widths, kept)
    lines = [
        f"# autoprune report: {summary['model']} on {summary['data']}",
        "",
        f"Target: **{summary['target']} <= {format_metric(metric, limit)}** (budget {summary['budget']}; "
        f"dense {format_metric(metric, dense[metric])}). Latency measured at {summary['cost_settings']}.",
        f"Searcher `{summary['searcher']}`, {summary['scored']} scored trials ({summary['rejected']} rejected over "
        f"budget before training), fidelity `{summary['fidelity']}`, seed {summary['seed']}, "
        f"{summary['elapsed_s']:.0f} s in all.",
        "",
        "| model | val acc | test acc | MACs | params | latency |",
        "|---|---|---|---|---|---|",
        f"| dense | {summary['dense_val_accuracy']:.4f} | {summary['dense_test_accuracy']:.4f} | "
        f"{format_metric('macs', dense['macs'])} | {format_metric('params', dense['params'])} | {dense['latency_ms']:.2f} ms |",
    ]
    fin = summary.get("final")
    if fin:
        lines.append(
            f"| pruned (trial {fin['trial']}) | {fin['val_accuracy']:.4f} | {fin['test_accuracy']:.4f} | "
            f"{format_metric('macs', fin['macs'])} | {format_metric('params', fin['params'])} | {fin['latency_ms']:.2f} ms |"
        )
        lines += ["", f"The exported model reloaded from disk measures {format_metric(metric, fin['verified_cost'])}: "
                  f"{'within' if fin['verified_cost'] <= limit else 'OVER'} the budget."]
    lines += ["", "## Pareto front (search fidelity)", "", "![accuracy against cost](pareto.png)", "",
              f"| trial | searcher | val acc | {metric} | fraction of dense | within budget |", "|---|---|---|---|---|---|"]
    for t in pareto_front(trials, metric):
        lines.append(f"| {t.number} | {t.searcher} | {t.accuracy:.4f} | {format_metric(metric, t.metrics[metric])} | "
                     f"{t.metrics[metric] / dense[metric]:.2f} | {'yes' if t.feasible else 'no'} |")
    lines += member_lines(member_rows(trials, (summary.get("final") or {}).get("search_trial")))
    lines += ["", "## Kept width of every slot", "", "![kept widths](widths.png)", "", "| slot | dense | kept |", "|---|---|---|"]
    lines += [f"| `{n}` | {dense_widths[n]} | {kept[n]} |" for n in dense_widths]
    phases = summary.get("phase_medians") or {}
    if phases:
        lines += ["", "## Time per scored trial (median seconds)", "", "| " + " | ".join(phases) + " |",
                  "|" + "---|" * len(phases), "| " + " | ".join(f"{v:.2f}" for v in phases.values()) + " |", "",
                  f"Framework overhead beyond fine-tune and evaluation: {100 * summary.get('overhead_fraction', 0):.1f}% "
                  f"of the {summary['search_s']:.0f} s search (pruning, measuring, rejected policies, ledger, workers)."]
    lines += ["", f"Regenerate: `{summary['command']}`", ""]
    from autoprune.atomic import write_text_atomic

    return write_text_atomic(run_dir / "report.md", "\n".join(lines))
