"""The benchmark's figures (PNG): accuracy against the target metric, best-so-far, fidelity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoprune.bench.metrics import WITHIN_POINTS, mean_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _style(i: int) -> dict[str, Any]:
    """A distinct colour and marker per searcher (ten colours, then the markers change)."""
    import matplotlib

    return {"color": matplotlib.colormaps["tab10"](i % 10), "marker": MARKERS[(i // 10 + i) % len(MARKERS)]}


def _footer(fig, text: str) -> None:
    """The provenance line (command, date, machine, versions), wrapped under the axes."""
    import textwrap

    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, 190)), fontsize=5.5, color="gray", ha="left", va="bottom")


def relative_cost(run: Any, limit: float, dense_cost: float) -> float:
    """A run's re-measured final cost as a fraction of dense, read against its own run's limit.

    Runs merged from several benches measured the dense latency at different speeds of the
    machine (27.7 and 22.2 ms for the same model), so dividing every run by the last run's dense
    latency would misplace the others; the budget is the same fraction in each."""
    if math.isfinite(run.limit) and run.limit > 0:
        return run.final_cost / run.limit * (limit / dense_cost)
    return run.final_cost / dense_cost


def plot_front(path: Path, runs: Sequence[Any], searchers: Sequence[str], metric: str, dense_cost: float,
               limit: float, dense_acc: tuple[float, float], footer: str) -> Path:
    """Left: every scored search trial (search fidelity); right: each run's final policy (test split).
    ``dense_acc`` is the dense model's (validation, test) accuracy."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110, sharex=True)
    for i, name in enumerate(searchers):
        mine = [r for r in runs if r.searcher == name]
        pts = [p for r in mine for p in r.points]
        if pts:
            left.scatter([c for _, c in pts], [100 * a for a, _ in pts], s=12, alpha=0.5, label=name, **_style(i))
        fin = [r for r in mine if r.final_test is not None and r.final_cost is not None]
        if fin:
            right.scatter([relative_cost(r, limit, dense_cost) for r in fin], [100 * r.final_test for r in fin],
                          s=34, edgecolor="black", lw=0.4, label=name, **_style(i))
    panels = ((left, "scored search trials", "validation accuracy at search fidelity (%)", dense_acc[0]),
              (right, "final fine-tune of each run's pick", "test accuracy (%)", dense_acc[1]))
    for ax, title, ylabel, dense in panels:
        ax.axvline(limit / dense_cost, color="red", ls="--", lw=1, label="budget")
        ax.axhline(100 * dense, color="gray", ls=":", lw=1, label="dense")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{metric} / dense")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path, footer)


def plot_best_so_far(path: Path, runs: Sequence[Any], searchers: Sequence[str], reference: float | None,
                     footer: str) -> Path:
    """Best feasible search accuracy against scored trials, mean over seeds, one line per searcher."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    from matplotlib.ticker import MaxNLocator

    for i, name in enumerate(searchers):
        curve = mean_curve([r.curve for r in runs if r.searcher == name])
        if curve and not all(math.isnan(v) for v in curve):
            ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], ms=4, label=name, **_style(i))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if reference is not None:
        ax.axhline(100 * (reference - WITHIN_POINTS), color="black", ls="--", lw=1, label="best - 0.5 points")
    ax.set_xlabel("scored trials")
    ax.set_ylabel("best feasible validation accuracy so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path, footer)


def plot_fidelity(path: Path, study: dict[str, Any], footer: str) -> Path:
    """Each cheap score against the final score, one panel per cheap fidelity, one point per policy."""
    plt = _pyplot()
    cheap = study.get("cheap") or ["bn", study["kd"]]
    cols = min(len(cheap), 3)
    rows = -(-len(cheap) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), dpi=110, squeeze=False)
    final = [100 * r["final"] for r in study["rows"]]
    for ax, fid in zip(axes.flat, cheap, strict=False):
        ax.scatter([100 * r[fid] for r in study["rows"]], final, s=18)
        rho = study["spearman"][f"{fid} vs final"]
        ax.set_title(f"{fid}: Spearman {rho:.2f}", fontsize=9)
        ax.set_xlabel(f"validation accuracy after {fid} (%)", fontsize=8)
        ax.set_ylabel("after the final fine-tune (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cheap):]:
        ax.set_visible(False)
    return _save(plt, fig, path, footer)


def plot_finetune_curve(path: Path, curve: dict[str, Any], summary: dict[str, Any], footer: str) -> Path:
    """Test accuracy of the uniform policy against final fine-tune steps, dense as a line, the knee marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    pts = curve["points"]
    xs = [max(p["steps"], 1) for p in pts]  # a log axis: 0 steps (BN recalibration only) drawn at 1
    ax.plot(xs, [100 * p["test_accuracy"] for p in pts], marker="o", label="uniform at 0.5 of dense MACs")
    ax.axhline(100 * curve["dense_test_accuracy"], color="k", ls="--", lw=1, label="dense")
    ax.axvline(max(summary["knee_steps"], 1), color="tab:red", ls=":", lw=1, label=f"knee: {summary['knee_steps']} steps")
    ax.set_xscale("log")
    ax.set_xlabel("final fine-tune steps (log; 0 drawn at 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path, footer)


def _save(plt: Any, fig: Any, path: Path, footer: str) -> Path:
    """Stamp the footer (command, date, machine), write the PNG and free the figure."""
    _footer(fig, footer)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
