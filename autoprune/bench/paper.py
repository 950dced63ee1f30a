"""The bench's paper table: our loss against dense at 2x fewer MACs beside published CIFAR-10 deltas.

Papers report a CIFAR ResNet's accuracy before and after pruning at about half the MACs, each
from its own baseline, so only deltas compare. This section takes every bench task whose budget
is 0.5 of dense MACs on a CIFAR ResNet and gives, per searcher, the mean change of test accuracy
against that task's dense model (sd and seeds), the mean MACs reduction of its exported picks,
and the published rows (``../shared/ALGORITHMS.md``, ResNet-56) below ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoprune.bench.metrics import mean_sd

# (method, model, baseline -> pruned accuracy, MACs reduction), as published (ResNet-56, CIFAR-10).
PUBLISHED: tuple[tuple[str, str, float, float, float], ...] = (
    ("AMC (He et al. 2018)", "ResNet-56", 92.80, 91.90, 2.00),
    ("FPGM (He et al. 2019)", "ResNet-56", 93.59, 93.26, 1.70),
    ("HRank (Lin et al. 2020)", "ResNet-56", 93.26, 93.17, 2.00),
    ("ResRep (Ding et al. 2021)", "ResNet-56", 93.71, 93.71, 2.12),
    ("DepGraph with sparse learning (Fang et al. 2023)", "ResNet-56", 93.53, 93.77, 2.13),
)
RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def paper_tasks(result) -> list[Any]:
    """The tasks at 0.5 of dense MACs on a CIFAR ResNet that have runs."""
    out = []
    for task in result.tasks:
        s = task.settings
        if (s.model.split(":")[0] in RESNETS and s.target == "macs" and s.budget_text == "0.5"
                and any(r.task == task.name and r.final_test is not None for r in result.runs)):
            out.append(task)
    return out


def searcher_deltas(runs: Sequence[Any], dense_test: float, dense_macs: float) -> list[dict[str, Any]]:
    """Per searcher of the equal-trials view: mean test change against dense (points), sd, seeds,
    mean MACs reduction of its picks; best first."""
    rows = []
    for name in dict.fromkeys(r.searcher for r in runs):
        mine = [r for r in runs if r.searcher == name and r.view == "trials" and r.final_test is not None]
        if not mine:
            continue
        mean, sd, n = mean_sd([100 * (r.final_test - dense_test) for r in mine])
        reduction, _, _ = mean_sd([dense_macs / r.final_cost for r in mine if r.final_cost])
        rows.append({"searcher": name, "delta": mean, "sd": sd, "seeds": n, "reduction": reduction,
                     "pruned": 100 * dense_test + mean})
    return sorted(rows, key=lambda r: -r["delta"])


def paper_section(result) -> list[str]:
    tasks = paper_tasks(result)
    if not tasks:
        return []
    lines = ["## Against published pruning at 2x fewer MACs", "",
             "Accuracy changes against each method's own dense baseline (papers start from different ones, so only "
             "the deltas compare). Ours: every searcher's exported picks of the equal-trials view, after the bench's "
             "final fine-tune, on the whole test split (mean ± sd over seeds); published: ResNet-56 as reported "
             "(`../shared/ALGORITHMS.md`), after their full fine-tunes of tens to hundreds of epochs.", "",
             "| method | model | dense → pruned test accuracy | change (points) | MACs reduction |", "|---|---|---|---|---|"]
    for task in tasks:
        dense = task.dense
        runs = [r for r in result.runs if r.task == task.name]
        model = task.settings.model.split(":")[0]
        for row in searcher_deltas(runs, dense["test_accuracy"], dense["costs"]["macs"]):
            spread = f"± {row['sd']:.2f} ({row['seeds']} seeds)" if row["seeds"] > 1 else "(1 seed)"
            lines.append(f"| autoprune `{row['searcher']}` ({task.name}) | {model} | {100 * dense['test_accuracy']:.2f} → "
                         f"{row['pruned']:.2f} | {row['delta']:+.2f} {spread} | "
                         f"{row['reduction']:.2f}x |")
    for method, model, before, after, reduction in PUBLISHED:
        lines.append(f"| {method} | {model} | {before:.2f} → {after:.2f} | {after - before:+.2f} | {reduction:.2f}x |")
    from autoprune.bench.markdown import provenance  # the report's module imports this one

    return lines + [""] + [f"_{provenance(result, f'task:{task.name}')}_" for task in tasks] + [""]
