"""BENCHMARKS.md: generated from one bench run, never edited by hand.

Every table and figure carries the command that produced it, the date, the machine and the
versions; figures are PNG files next to it (``benchmarks/figures/`` by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autoprune.bench.command import QUICK_SEEDS, SEEDS
from autoprune.bench.tables import (
    busy_note,
    code_note,
    cost_rows,
    md_table,
    paired_rows,
    pct,
    reference_accuracy,
    seed_counts,
    view_rows,
)
from autoprune.objectives import format_metric

VIEW_TITLES = {"trials": "Same number of scored trials", "time": "Same wall-clock budget"}


def provenance(result, section: str | None = None) -> str:
    """One line: command, date, machine, versions (repeated under every table and figure). In a
    report merged from several runs, ``section`` picks the run behind it: its command made it."""
    command, m = result.sources.get(section, (result.config.command, result.machine))
    v = m["versions"]
    return (f"`{command}` · {m['date']} · {m['cores']} cores, {m['cpu']} · torch {v['torch']}, "
            f"torch-pruning {v['torch-pruning']}, optuna {v['optuna']}, autoprune {v['autoprune']}")


def scale_section(result) -> list[str]:
    cfg = result.config
    tasks = result.tasks
    scaled = cfg.quick or any(t.settings.train_limit is not None or t.settings.val_limit is not None for t in tasks)
    lines = ["## What was scaled down" if scaled else "## Scale", ""]
    if cfg.quick:
        lines += ["**Quick mode (`--quick`)**: tiny subsets and a handful of cheap trials, to check that the harness "
                  "works end to end. These numbers say nothing about the searchers.", ""]
    if scaled:
        lines += ["To fit about two hours (a couple of hours at most) on this machine, a task with a `train_limit` "
                  "or `val_limit` scores candidates on subsets of the training images (for BN recalibration and "
                  "distillation) and of the validation split, with a short distillation fidelity, few trials and a "
                  "short final fine-tune. The test split is never subsampled: every final figure is on all of it.", ""]
    else:
        lines += ["Every search scores candidates on the whole training split (BN recalibration and distillation) "
                  "and the whole validation split, at the search fidelity and with the final fine-tune below "
                  "(`docs/benchmarks.md` says how they were chosen: the cheapest fidelity whose Spearman with the "
                  "final accuracy reached 0.8, and the knee of the fine-tune curve). The test split is never "
                  "subsampled.", ""]
    def used(t, key: str, limit: int | None) -> str:
        n = t.dense.get(f"{key}_images")
        return f"{n} (limit {limit or 'none'})" if n is not None else str(limit or "all")

    rows = [[t.name, str(t.settings.trials), f"`{t.settings.fidelity}`", str(t.settings.final_steps),
             used(t, "train", t.settings.train_limit), used(t, "val", t.settings.val_limit),
             str(t.dense.get("test_images", "all")),
             seed_counts([r for r in result.runs if r.task == t.name and r.view == "trials"], cfg.searchers)
             or str(cfg.seeds)] for t in tasks]
    lines += md_table(["task", "trials", "search fidelity", "final steps", "train images", "val images", "test images",
                        "seeds"], rows)
    if scaled:
        lines += ["", "The same recipes at full scale are what a user with a GPU (or many cores) runs, e.g. "
                  "`autoprune bench --trials 30 --set train_limit=null --set val_limit=null --set fidelity=kd:300 "
                  "--set final_steps=3000` (the settings of the full-scale ResNet-20 recipes).", ""]
    return lines + [""]


def training_chain(record: dict[str, Any], command: str) -> str:
    """The commands that made a checkpoint, earliest first: one trained ``--init`` from another
    names that one's command too (and the file it was kept as, which its command may not say)."""
    steps = [f"`{command}`"]
    init = record.get("init")
    while isinstance(init, dict) and init.get("command"):
        kept = f" (kept as `{init['checkpoint']}`)" if init.get("checkpoint") else ""
        steps.insert(0, f"`{init['command']}`{kept}")
        init = init.get("init")
    return ", then ".join(steps)


def dense_section(result) -> list[str]:
    rows = []
    for t in result.tasks:
        d = t.dense
        if t.error:
            rows.append([t.name, f"`{t.settings.model}`", "–", "–", "–", f"skipped: {t.error}"])
            continue
        costs, metric = d["costs"], d["metric"]
        how = (training_chain(d.get("trained") or {}, d["command"]) if d.get("command") else
               f"`{d['checkpoint']}` (no training record)" if d.get("checkpoint") else
               f"trained by the harness: {d.get('epochs')} epochs on {d.get('train_limit') or 'all'} images (throwaway)")
        rows.append([t.name, f"`{t.settings.model}`", pct(d["val_accuracy"]), pct(d["test_accuracy"]),
                     f"{format_metric(metric, costs[metric])}; budget {t.settings.target} ≤ "
                     f"{format_metric(metric, d['limit'])} ({d['cost_settings']})", how])
    lines = ["## Dense reference models", ""]
    lines += md_table(["task", "model", "val acc (%)", "test acc (%)", "dense cost and budget", "weights made by"], rows)
    return lines + ["", f"_{provenance(result, 'dense')}_", ""]


def task_section(result, task, figures: Path, out_dir: Path) -> list[str]:
    from autoprune.bench.members import members_section
    from autoprune.bench.plots import plot_best_so_far, plot_front
    from autoprune.bench.throughput import trials_at_once

    cfg, d = result.config, task.dense
    lines = [f"## Task `{task.name}`: {task.settings.model}, {task.settings.target} ≤ {task.settings.budget} of dense", ""]
    if task.error:
        return lines + [f"Skipped: {task.error}", ""]
    workers = trials_at_once(task.settings.executor, task.settings.workers)
    table = task.settings.latency_table if d["metric"] == "latency_ms" else None
    pick_cost = (f"pick's {d['metric']} / budget, table estimate (measured here) (mean)" if table else
                 f"pick's measured {d['metric']} / budget (mean)")
    header = ["searcher", "test acc (%) mean ± sd", pick_cost, "within budget",
              "hypervolume", "trials to within 0.5 pt (per seed)", "scored", "search s", "errors"]
    for view in ("trials", "time"):
        runs = [r for r in result.runs if r.task == task.name and r.view == view]
        if not runs:
            continue
        ref = reference_accuracy(runs)
        what = (f"{task.settings.trials} scored trials per search" if view == "trials" else
                f"{result.time_limits.get(task.name, 0):.0f} s of search per run, "
                + ("set by `--time-limit`" if cfg.time_limit is not None else
                   "set by the recipe's `time_limit`" if task.settings.time_limit is not None else
                   f"the time `random` with seed 0 took for {task.settings.trials} scored trials"))
        lines += [f"### {VIEW_TITLES[view]} ({what}, {seed_counts(runs, cfg.searchers)})", ""]
        if view == "time":
            lines += busy_note(runs, workers)
        if view == "trials":
            lines += ["Both views read one search per searcher and seed, which runs until it has both scored its "
                      "trials and spent the time budget: this view is the search up to its last counted trial, "
                      "the next the trials finished within the time budget. Each view's pick gets the final "
                      "fine-tune and the test evaluation (once when both pick the same trial).", ""]
        lines += md_table(header, view_rows(runs, cfg.searchers, d["metric"], ref, measured=bool(table)))
        if table:
            lines += ["", f"Latency is judged by one cost model in every unit: the latency table "
                      f"`{Path(table).name}`, profiled once on this machine (`autoprune profile`), estimates every "
                      f"policy in the search, the pick and the export's check, so a policy at the budget's edge is "
                      f"feasible or not whenever its unit runs. In brackets, the exported model's latency read on "
                      f"this machine as the bench ended its unit, paired with the dense model's (9 rounds), over the "
                      f"budget."]
        lines += ["", f"Hypervolume: pymoo's HV of the scored trials' (1 − val acc, {d['metric']} / dense) against the "
                  f"reference point (1, 1). Trials to within 0.5 pt: scored trials until the best feasible search "
                  f"accuracy came within 0.5 points of the best any run reached here ({pct(ref)}%). Probes: "
                  f"policies a searcher had scored at a cheaper fidelity (knapsack's sensitivity scan, adaptive BN "
                  f"only); they are not counted as scored trials, and their time is in `search s`.", ""]
        lines += members_section(runs)
        lines += [f"#### Against the baselines ({VIEW_TITLES[view].lower()})", ""]
        lines += md_table(["searcher", "test acc − `uniform` (pt) [95% CI]", "test acc − `random` (pt) [95% CI]",
                            "pick's cost / budget, per seed"], paired_rows(runs, cfg.searchers))
        lines += ["", "Differences are paired by seed (same task, same seed), in points of final test accuracy; the "
                  "interval is a percentile bootstrap over seeds (10,000 resamples, seeded), marked ahead or "
                  "behind only where it excludes zero over at least three seeds. With three seeds the interval runs from the smallest "
                  "to the largest paired difference, so ahead means ahead at every seed (three of three: a "
                  "one-sided sign test's p = 0.125; the 95% is nominal). With four or five it is narrower than "
                  "the differences' range and can exclude zero with one seed against the others, which is why "
                  "each cell also counts the seeds at which the searcher was higher and gives the Student t "
                  "interval of the same differences (t [low, high]), the more cautious at so few seeds. Cost / budget is the exported "
                  "model's re-measured cost over the limit: a pick far under 1.000 left budget unused.", ""]
        errs = sorted({f"`{r.searcher}` seed {r.seed}: {r.error}" for r in runs if r.error})
        lines += [f"- {e}" for e in errs] + ([""] if errs else [])
        front = plot_front(figures / f"{task.name}_{view}_front.png", runs, cfg.searchers, d["metric"],
                           d["costs"][d["metric"]], d["limit"], (d["val_accuracy"], d["test_accuracy"]),
                           provenance(result, f"task:{task.name}").replace("`", ""))
        lines += [f"![accuracy against {d['metric']}]({os.path.relpath(front, out_dir)})", ""]
        if view == "trials":
            curve = plot_best_so_far(figures / f"{task.name}_best_so_far.png", runs, cfg.searchers, ref,
                                     provenance(result, f"task:{task.name}").replace("`", ""))
            lines += [f"![best so far against trials]({os.path.relpath(curve, out_dir)})", ""]
            lines += ["#### Cost per scored trial (median seconds per phase)", ""]
            lines += md_table(["searcher", "prune", "measure", "finetune", "evaluate", "wall s per scored trial",
                                "overhead"], cost_rows(runs, cfg.searchers, workers))
            lines += ["", "Overhead: the worker time available (wall × trials at once"
                      f", here {workers}) not spent fine-tuning or evaluating (searcher set-up, asking, pruning, "
                      "measuring, rejected policies, the ledger, idle workers), as a fraction of it.", ""]
        lines += [f"_{provenance(result, f'task:{task.name}')}_", ""]
    mine = [r for r in result.runs if r.task == task.name]
    # A merged report keeps each run's latest command only: its searchers and seeds are the union of
    # every run's, so a task asks only for the searchers that ran it, each to the bench's standard
    # seed count; seeds beyond it (run for a few searchers to narrow an interval) are extras.
    names = [n for n in cfg.searchers if any(r.searcher == n for r in mine)] if result.parts else cfg.searchers
    seeds = (QUICK_SEEDS if cfg.quick else SEEDS) if result.parts else cfg.seeds
    missing = [f"`{name}` seed {seed}" for name in names for seed in range(seeds)
               if not any(r.searcher == name and r.seed == seed for r in mine)]
    if mine and missing:
        lines += [f"Missing from this task (not yet run; `autoprune bench ... --resume RUN_DIR` runs them): "
                  f"{', '.join(missing)}.", ""]
    lines += code_note(mine)
    if not mine:
        lines += ["No search of this task finished in the bench runs behind this report (an interrupted run, or "
                  "`--sections`/`--study` left it out): its numbers are not here.", ""]
    return lines


def _relative(text: str) -> str:
    """``text`` with this directory's absolute path taken out: a committed report names no path
    of the machine that made it (the storage URL is absolute so Optuna finds it from anywhere)."""
    return text.replace(f"{Path.cwd().resolve()}/", "")


SECTION_NAMES = {"fidelity": "fidelity", "finetune": "fine-tune curve", "throughput": "throughput"}


def merged_header(result, out: Path) -> list[str]:
    """The runs a merged report comes from, each with its command and the sections it gives."""
    rendered = f"{result.config.command} --out {_relative(str(out.resolve()))}"
    lines = [f"Rendered by `{rendered}` from {len(result.parts)} bench runs; each table names the command "
             "that made it:", ""]
    for part in result.parts:
        shows = [f"task `{key[5:]}`" if key.startswith("task:") else SECTION_NAMES.get(key, key)
                 for key in part["sections"]]
        m = part["machine"]
        lines.append(f"- `{_relative(part['root'])}` ({m['date']}, {m['cores']} cores, {m['cpu']}; "
                     f"{', '.join(shows) or 'superseded by a later run'}): `{part['command']}`")
    return lines + [""]


def write_markdown(result) -> Path:
    """Write ``result.config.out`` and its figures; returns the path."""
    from autoprune.bench.paper import paper_section
    from autoprune.bench.side_studies import fidelity_section, finetune_section, throughput_section

    cfg = result.config
    out = cfg.out
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = cfg.figures_dir
    figures.mkdir(parents=True, exist_ok=True)
    out_dir = out.parent.resolve()
    figures = figures.resolve()
    m, v = result.machine, result.machine["versions"]
    lines = ["# Benchmarks", "",
             "<!-- generated by `autoprune bench`; do not edit by hand: regenerate with the command below -->", ""]
    if result.parts:
        lines += merged_header(result, out)
    else:
        lines += [f"Generated by `{cfg.command}` on {m['date']} in {result.elapsed_s / 60:.1f} min.", ""]
    if not result.parts:  # a merged report's runs may come from several machines: each table names its own
        lines += [f"Machine: {m['cores']} cores, {m['cpu']} ({m['platform']}). Versions: "
                  + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", ""]
    lines += [
        f"Searchers: {', '.join(f'`{s}`' for s in cfg.searchers)}. "
        + ("Each run keeps its searches' trials in its own Optuna storage (`optuna-dashboard "
           "sqlite:///RUN_DIR/studies.db` shows them side by side), beside its `results.json`." if result.parts else
           f"Every search's trials are in one Optuna storage (`optuna-dashboard {_relative(result.storage)}` shows "
           f"them side by side); run directories under `{_relative(str(result.root))}`."), "",
    ]
    lines += scale_section(result) + dense_section(result)
    for task in result.tasks:
        lines += task_section(result, task, figures, out_dir)
    lines += paper_section(result)
    lines += fidelity_section(result, figures, out_dir) + finetune_section(result, figures, out_dir)
    lines += throughput_section(result)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out
