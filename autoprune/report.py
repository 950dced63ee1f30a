"""The run report: headline figures, Pareto front (table and plot), kept widths per slot, timings.

``report.md`` opens with what a practitioner quotes: how much faster and smaller the exported
model is, how many points of accuracy it lost on splits of what size, and on what machine and
versions that was measured. Every figure comes from ``summary.json`` (``autoprune.summary``);
``docs/outputs.md`` says what each file and key holds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.objectives import UNITS, format_metric
from autoprune.study import COMPLETE, REJECTED, Trial
from autoprune.summary import times

PHASES = ("prune_s", "measure_s", "finetune_s", "evaluate_s", "setup_s", "total_s")
NAMES = {"latency_ms": "latency", "macs": "MACs", "params": "parameters"}


def axis_label(metric: str) -> str:
    """A readable axis label of a cost metric: ``latency (ms)``, ``MACs``, ``parameters``."""
    name, unit = NAMES.get(metric, metric), UNITS.get(metric, "")
    return f"{name} ({unit})" if unit and unit.lower() not in name.lower() else name


def pareto_front(trials: Sequence[Trial], metric: str) -> list[Trial]:
    """Scored trials no other scored trial beats on both accuracy (max) and ``metric`` (min)."""
    from autoprune.front import pareto_front as front

    return front(trials, [metric])


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


# -- the headline ---------------------------------------------------------------------------------
def _times(value: float | None, better: str, worse: str) -> str:
    text = times(value, better, worse)
    return f"**{text}**" if text else ""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def headline(summary: Mapping[str, Any]) -> list[str]:
    """The report's first lines: speed-up and size, points lost with the splits' sizes (and a
    warning for a small validation split), then the machine and the versions."""
    fin, dense, speed = summary["final"], summary["dense"], summary["speedup"]
    latency = fin.get("latency_ms")
    sizes = [f"{_times(speed.get('latency'), 'faster', 'slower')} than the dense model "
             f"({format_metric('latency_ms', latency)} against {format_metric('latency_ms', dense['latency_ms'])})"
             if latency is not None else "",
             f"{_times(speed.get('macs'), 'fewer MACs', 'more MACs')} ({format_metric('macs', fin['macs'])} against "
             f"{format_metric('macs', dense['macs'])})",
             f"{_times(speed.get('params'), 'fewer parameters', 'more parameters')} ({format_metric('params', fin['params'])} against "
             f"{format_metric('params', dense['params'])})"]
    lines = ["- " + ", ".join(s for s in sizes if s) + "."]
    pts, splits = summary["points"], summary["splits"]
    if summary.get("score") == "evaluate(model)":
        val = (f"validation score (your `evaluate`) {fin['val_accuracy']:.4f} against {summary['dense_val_accuracy']:.4f} "
               f"(**{pts['val']:+.4f}**; val split {splits['val']} images)")
    else:
        val = (f"**{pts['val']:+.2f} points** of validation accuracy ({_pct(fin['val_accuracy'])} against "
               f"{_pct(summary['dense_val_accuracy'])}; val split {splits['val']} images, one image is "
               f"{pts['val_per_image']:.2f} points)")
    test = (f"**{pts['test']:+.2f} points** of test accuracy ({_pct(fin['test_accuracy'])} against "
            f"{_pct(summary['dense_test_accuracy'])}; test split {splits['test']} images, one image is "
            f"{pts['test_per_image']:.2f} points)") if pts.get("test") is not None else "no test accuracy"
    lines.append(f"- {val[0].upper()}{val[1:]}; {test}.")
    if summary.get("small_val_split"):
        lines += [f"- **Warning:** the validation split has only {splits['val']} images (fewer than "
                  f"{summary['min_val_images']}): candidates' accuracies differ by noise as much as by merit, and a "
                  "pruned model may appear to beat the dense one. Validate on more images (a larger data set, or a larger `--val-limit` if one was set)."]
    m, v = summary["machine"], summary["versions"]
    lines += [f"- Measured on {m['cpu']} ({m['cores']} cores; {m['platform']}) at {summary['cost_settings']}; "
              f"Python {v['python']}, torch {v['torch']}, torch-pruning {v['torch_pruning']}, optuna {v['optuna']}, "
              f"autoprune {v['autoprune']}."]
    return lines


# -- plots ------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front(path: Path, trials: Sequence[Trial], summary: Mapping[str, Any]) -> Path:
    """Accuracy against the target metric: every scored search trial by searcher, the front, the
    budget (with its value), the chosen search trial at search fidelity joined to the same policy
    after the final fine-tune, and the dense model (at the right edge, annotated, when drawing it
    in scale would squeeze the trials)."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    metric, limit, dense, fin = summary["metric"], summary["limit"], summary["dense"], summary.get("final") or {}
    scale = 1.0 if summary.get("score") == "evaluate(model)" else 100.0
    fig, ax = plt.subplots(figsize=(7.5, 5.6), dpi=120)
    scored = [t for t in trials if t.scored and metric in t.metrics and t.fidelity != "final"]

    def label(t: Trial) -> str:  # a portfolio's trials by member
        return f"{t.searcher}/{t.member}" if t.member else t.searcher

    for name in sorted({label(t) for t in scored}):
        pts = [t for t in scored if label(t) == name]
        ax.scatter([t.metrics[metric] for t in pts], [scale * (t.accuracy or 0) for t in pts], s=18, alpha=0.7,
                   label=f"{name} ({len(pts)} search trials)")
    front = pareto_front(trials, metric)
    if front:
        ax.step([t.metrics[metric] for t in front], [scale * (t.accuracy or 0) for t in front], where="post",
                color="black", lw=1, label="Pareto front")
    ax.axvline(limit, color="red", ls="--", lw=1,
               label=f"budget {format_metric(metric, limit)} ({limit / dense[metric]:.2g} of dense)")
    xs = [t.metrics[metric] for t in scored] + [limit]
    ys = [scale * (t.accuracy or 0) for t in scored] + [scale * summary["dense_val_accuracy"]]
    pick = next((t for t in scored if t.number == fin.get("search_trial")), None)
    if pick is not None:
        px, py = pick.metrics[metric], scale * (pick.accuracy or 0)
        ax.scatter([px], [py], marker="*", s=220, color="gold", edgecolor="black", zorder=5,
                   label=f"chosen: search trial {pick.number} (fidelity {pick.fidelity})")
        if fin.get("val_accuracy") is not None:
            fx, fy = float(fin.get("verified_cost", px)), scale * fin["val_accuracy"]
            xs.append(fx)
            ys.append(fy)
            ax.scatter([fx], [fy], marker="*", s=220, facecolor="none", edgecolor="darkorange", lw=1.5, zorder=6,
                       label=f"same policy after the final fine-tune (trial {fin['trial']}), as exported")
            ax.annotate("", xy=(fx, fy), xytext=(px, py), zorder=4,
                        arrowprops={"arrowstyle": "->", "color": "darkorange", "ls": "--", "lw": 1})
            ax.annotate(f"{fy:.2f}" if scale == 1.0 else f"{fy:.2f}%", (fx, fy), textcoords="offset points",
                        xytext=(8, -4), fontsize=8, color="darkorange")
    lo, hi = min(xs), max(xs)
    pad = 0.08 * (hi - lo) if hi > lo else 0.1 * abs(hi) or 1.0
    bottom, top = min(ys), max(ys)
    margin = 0.08 * (top - bottom) if top > bottom else 1.0
    ax.set_ylim(bottom - margin, top + margin)  # the dense marker at the edge is outside autoscaling
    dense_x, dense_y = dense[metric], scale * summary["dense_val_accuracy"]
    if dense_x <= hi + 3 * pad:  # near the trials: drawn in scale
        ax.scatter([dense_x], [dense_y], marker="D", color="gray", label=f"dense ({format_metric(metric, dense_x)})")
        ax.set_xlim(lo - pad, max(hi, dense_x) + pad)
    else:  # far right: a marker at the axis edge, its value written beside it
        ax.set_xlim(lo - pad, hi + pad)
        edge = ax.get_yaxis_transform()  # x in axes fraction, y in data
        ax.scatter([1.0], [dense_y], marker=">", s=70, color="gray", transform=edge, clip_on=False, zorder=6,
                   label=f"dense ({format_metric(metric, dense_x)}, off the scale to the right)")
        ax.annotate(f"dense: {format_metric(metric, dense_x)}", (1.0, dense_y), xycoords=edge, textcoords="offset points",
                    xytext=(-8, 6), ha="right", fontsize=8, color="dimgray")
    if metric != "latency_ms":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_metric(metric, v)))
    ax.set_xlabel(axis_label(metric))
    ax.set_ylabel("validation score (evaluate)" if scale == 1.0 else "validation accuracy (%)")
    ax.set_title(f"{summary['model']} on {summary['data']}: search trials at fidelity {summary['fidelity']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_widths(path: Path, dense_widths: Mapping[str, int], kept: Mapping[str, int],
                residual: Mapping[str, Sequence[str]] | None = None, title: str = "Kept channels per slot") -> Path:
    """Dense and kept width of every slot; a residual slot (one that sets the output width of
    every layer summed into a stage's residual stream) is hatched and marked with its layer count."""
    plt = _pyplot()
    residual = residual or {}
    names = list(dense_widths)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(names)), 4.6), dpi=120)
    x = np.arange(len(names))
    ax.bar(x, [dense_widths[n] for n in names], color="lightgray", label="dense")
    plain = [i for i, n in enumerate(names) if n not in residual]
    shared = [i for i, n in enumerate(names) if n in residual]
    ax.bar(x[plain], [kept[names[i]] for i in plain], color="tab:blue", label="kept")
    if shared:
        ax.bar(x[shared], [kept[names[i]] for i in shared], color="tab:orange", hatch="//", edgecolor="black", lw=0.5,
               label="kept, residual slot: one width for a whole stage")
        for i in shared:
            ax.annotate(f"x{len(residual[names[i]])}", (x[i], dense_widths[names[i]]), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
    ax.set_ylim(0, 1.3 * max(dense_widths.values(), default=1))  # room for the legend and the xN marks
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
    ax.set_xlabel("slot (a group of coupled channels, named by its first layer)")
    ax.set_ylabel("output channels")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    if shared:
        first = names[shared[0]]
        note = (f"A residual slot's width is the output width of every layer summed into that stage's residual stream "
                f"(xN: how many layers); e.g. {first} sets {', '.join(residual[first][:4])}"
                f"{', ...' if len(residual[first]) > 4 else ''}.")
    else:
        note = "Each bar is one slot: a group of channels pruned together (a layer's outputs and every input that reads them)."
    fig.text(0.01, 0.01, note, fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


# -- report.md ----------------------------------------------------------------------------------------
def write_report(run_dir: Path, summary: dict[str, Any], trials: Sequence[Trial], final: Trial | None,
                 dense_widths: dict[str, int], kept: dict[str, int]) -> Path:
    """``report.md`` plus ``pareto.png`` and ``widths.png`` in the run directory. ``final`` (the
    final fine-tune's trial) is accepted for callers; its figures are read from ``summary``."""
    metric, limit, dense, fin = summary["metric"], summary["limit"], summary["dense"], summary["final"]
    residual = summary.get("residual_slots") or {}
    plot_front(run_dir / "pareto.png", trials, summary)
    plot_widths(run_dir / "widths.png", dense_widths, kept, residual,
                f"Kept channels per slot: search trial {fin['search_trial']}, as exported")
    pick = f"final fine-tune (trial {fin['trial']}) of search trial {fin['search_trial']}"
    lines = [f"# autoprune report: {summary['model']} on {summary['data']}", "", *headline(summary), "",
             f"Target: **{summary['target']} <= {format_metric(metric, limit)}** (budget {summary['budget']}; "
             f"dense {format_metric(metric, dense[metric])}).",
             f"Searcher `{summary['searcher']}`, {summary['scored']} scored search trials ({summary['rejected']} rejected "
             f"over budget before training, {summary.get('failed', 0)} failed; the final fine-tune is not counted), "
             f"fidelity `{summary['fidelity']}`, seed {summary['seed']}, {summary['elapsed_s']:.0f} s in all.",
             f"The exported model is the {pick}: search trial {fin['search_trial']} scored "
             f"{fin.get('search_val_accuracy') or 0:.4f} at fidelity `{fin.get('search_fidelity', summary['fidelity'])}`; "
             f"its final fine-tune {fin['val_accuracy']:.4f}.", "",
             "| model | val acc | test acc | MACs | params | latency |", "|---|---|---|---|---|---|",
             f"| dense | {summary['dense_val_accuracy']:.4f} | {summary['dense_test_accuracy']:.4f} | "
             f"{format_metric('macs', dense['macs'])} | {format_metric('params', dense['params'])} | "
             f"{format_metric('latency_ms', dense['latency_ms'])} |",
             f"| {pick} | {fin['val_accuracy']:.4f} | {fin['test_accuracy']:.4f} | {format_metric('macs', fin['macs'])} | "
             f"{format_metric('params', fin['params'])} | {format_metric('latency_ms', fin['latency_ms'])} |", ""]
    within = "within" if fin["within_budget"] else "OVER"
    how = ("estimated from the deploy device's latency table (nothing was timed here; time it on the device with "
           "`autoprune profile --measure model.pt`)" if "latency table" in summary["cost_settings"] else "re-measured")
    text = (f"Latency of the exported model: `model.pt` reloaded from disk and {how}; "
            f"the dense model's was measured before the search. Its {NAMES.get(metric, metric)}, "
            f"{format_metric(metric, fin['verified_cost'])}, is {within} the budget.")
    if fin.get("latency_ratio") is not None:
        text += (f" That is {fin['latency_ratio']:.3f} (its ratio to the dense model timed alongside it) times the dense "
                 f"model's {format_metric('latency_ms', dense['latency_ms'])}; "
                 f"the raw reading at export (`latency_ms_now`) was {fin['latency_ms_now']:.2f} ms, which moves with "
                 "the machine's load where the ratio does not.")
    if fin.get("trial_latency_ms") is not None:
        text += f" The final fine-tune trial's own reading, taken in its worker, was {fin['trial_latency_ms']:.2f} ms."
    lines += [text + " Every latency key is defined in `docs/outputs.md`."]
    front = pareto_front(trials, metric)
    lines += ["", "## Pareto front (search fidelity)", "", "![accuracy against cost](pareto.png)", "",
              f"| search trial | searcher | val acc | {axis_label(metric)} | fraction of dense | within budget |",
              "|---|---|---|---|---|---|"]
    for t in front:
        chosen = " (chosen)" if t.number == fin["search_trial"] else ""
        lines.append(f"| {t.number}{chosen} | {t.searcher} | {t.accuracy:.4f} | {format_metric(metric, t.metrics[metric])} | "
                     f"{t.metrics[metric] / dense[metric]:.2f} | {'yes' if t.feasible else 'no'} |")
    lines += member_lines(member_rows(trials, fin["search_trial"]))
    lines += ["", "## Kept width of every slot", "", "![kept widths](widths.png)", "",
              "A slot is a group of channels pruned together. A residual slot sets the output width of every layer "
              "summed into one residual stream, so one slot sets a whole stage's residual width.", "",
              "| slot | dense | kept | sets the outputs of |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {dense_widths[n]} | {kept[n]} | {', '.join(f'`{m}`' for m in residual.get(n, []))} |"
              for n in dense_widths]
    phases = summary.get("phase_medians") or {}
    if phases:
        lines += ["", "## Time per scored search trial (median seconds)", "", "| " + " | ".join(phases) + " |",
                  "|" + "---|" * len(phases), "| " + " | ".join(f"{v:.2f}" for v in phases.values()) + " |", "",
                  f"Framework overhead beyond fine-tune and evaluation: {100 * summary.get('overhead_fraction', 0):.1f}% "
                  f"of the {summary['search_s']:.0f} s search (pruning, measuring, rejected policies, ledger, workers)."]
    lines += ["", f"Regenerate: `{summary['command']}`", ""]
    from autoprune.atomic import write_text_atomic

    return write_text_atomic(run_dir / "report.md", "\n".join(lines))
