"""The bench report's sections on its side studies, each measured once per bench rather than per
searcher: how well the cheap scores rank policies (``--sections fidelity``), how long the final
fine-tune must be (``finetune``) and how scored trials per minute grow with workers
(``throughput``). ``write_markdown`` places them after the task tables.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from autoprune.bench.markdown import provenance
from autoprune.bench.metrics import spearman_interval
from autoprune.bench.tables import md_table, pct


def fidelity_section(result, figures: Path, out_dir: Path) -> list[str]:
    from autoprune.bench.plots import plot_fidelity

    f = result.fidelity
    if not f:
        return []
    cheap = f.get("cheap") or ["bn", f["kd"]]  # a study of an older bench scored bn and one kd:N
    named = ", ".join(f"`{c}`" for c in cheap)
    lines = ["## Fidelity of the cheap scores", "",
             f"{f['policies']} random feasible policies of `{f['task']}` ({f.get('asked', f['policies'])} drawn as "
             "`random` draws them; those measured over budget were dropped), each scored by "
             f"{named} (`bn`: adaptive-BN recalibration alone; `kd:N`: N distillation steps after it; `+features`: "
             f"with inner feature distillation) and by the final fine-tune ({f['final_steps']} steps), with the same "
             "seed; final = validation accuracy after the final fine-tune.", ""]
    med = f["median_s"]
    rows = []
    for c in cheap:
        rho = f["spearman"].get(f"{c} vs final", math.nan)
        pairs = [(r[c], r["final"]) for r in f["rows"] if c in r and "final" in r]
        low, high = spearman_interval([a for a, _ in pairs], [b for _, b in pairs])
        rows.append([f"`{c}`", "–" if rho != rho else f"{rho:.3f}", "–" if low != low else f"{low:.2f} to {high:.2f}",
                     "–" if med.get(c) is None else f"{med[c]:.1f}"])
    lines += md_table(["cheap score", "Spearman ρ with final", "95% interval (bootstrap over policies)",
                        "median s per policy"], rows)
    if med.get("final") is not None:
        lines += ["", f"The final fine-tune took a median {med['final']:.1f} s per policy."]
    if "chosen" in f:
        target = f.get("target_rho", 0.8)
        lines += ["", (f"Cheapest score reaching ρ ≥ {target}: **`{f['chosen']}`**." if f["chosen"]
                       else f"No cheap score reached ρ ≥ {target} on these policies.")]
    if f["policies"] < 30:
        lines += ["", f"**Incomplete:** {f['policies']} policies so far (at least 30 asked); "
                  "`autoprune bench --resume RUN_DIR` continues the study."]
    lines.append("")
    if f["rows"]:
        path = plot_fidelity(figures / "fidelity.png", f, provenance(result, "fidelity").replace("`", ""))
        lines += [f"![cheap scores against final accuracy]({os.path.relpath(path, out_dir)})", ""]
    return lines + [f"_{provenance(result, 'fidelity')}_", ""]


def finetune_section(result, figures: Path, out_dir: Path) -> list[str]:
    from autoprune.bench.finetune_curve import KNEE_POINTS, WITHIN_DENSE_POINTS, curve_summary
    from autoprune.bench.plots import plot_finetune_curve

    c = result.finetune
    if not c:
        return []
    lines = ["## How long the final fine-tune must be", ""]
    if c.get("error"):
        return lines + [f"Not measured: {c['error']}.", ""]
    dense = c["dense_test_accuracy"]
    lines += [f"The `uniform` policy closest under {c['macs_fraction']} of dense MACs on `{c['task']}`, given the final "
              f"fine-tune (distillation from the dense model, cosine learning rate from {c['lr']} to 0 over the steps, "
              f"batches drawn from {c['train_images']} training images) at each length, then tested on the whole test "
              f"split. Dense: {pct(dense)}%.", ""]
    rows = [[str(p["steps"]), pct(p["test_accuracy"]), f"{100 * (p['test_accuracy'] - dense):+.2f}",
             f"{p['macs_of_dense']:.3f}", f"{p['finetune_s']:.0f}"] for p in c["points"]]
    lines += md_table(["final steps", "test accuracy", "points vs dense", "MACs of dense", "fine-tune s"], rows)
    summary = curve_summary(c)
    if summary:
        verdict = "within" if summary["within"] else "**not** within"
        lines += ["", f"Knee (the shortest length within {KNEE_POINTS} points of the best): **{summary['knee_steps']} "
                  f"steps**, {summary['gap_points']:.2f} points below dense, {verdict} the {WITHIN_DENSE_POINTS:.0f} "
                  "points asked of `uniform` there.", ""]
        path = plot_finetune_curve(figures / "finetune_curve.png", c, summary, provenance(result, "finetune").replace("`", ""))
        lines += [f"![test accuracy against final fine-tune steps]({os.path.relpath(path, out_dir)})", ""]
    return lines + [f"_{provenance(result, 'finetune')}_", ""]


def throughput_section(result) -> list[str]:
    if not result.throughput:
        return []
    rows = []
    one = {r["executor"]: r["per_minute"] for r in result.throughput if r["workers"] == 1 and r.get("per_minute")}
    for r in result.throughput:
        if r.get("error"):
            rows.append([r["executor"], str(r["workers"]), "–", "–", "–", "–", "–", r["error"]])
            continue
        base = one.get(r["executor"])
        rows.append([r["executor"], str(r["workers"]), f"{r['scored']}", f"{r['wall_s']:.1f}", f"{r['per_minute']:.2f}",
                     f"{r['per_minute'] / base:.2f}x" if base else "–", f"{100 * r['overhead']:.0f}%",
                     f"start-up {r['startup_s']:.1f} s, {r['threads']} thread(s)/worker"])
    task = next((t.name for t in result.tasks if t.error is None), "")
    lines = ["## Throughput", "", f"A `random` search of `{task}` per executor and worker count (warm-up of fresh "
             "workers included; executor start-up timed apart). Overhead: the worker time available (wall × parallel "
             "workers) not spent fine-tuning or evaluating. Latency readings are protected from the parallel workers: "
             "each holds its device alone, and training yields to it between steps (`autoprune/meter.py`), so a "
             "reading waits for at most one step per worker instead of timing their training too.", ""]
    lines += md_table(["executor", "workers", "scored", "wall s", "scored trials / min", "vs 1 worker", "overhead",
                         "notes"], rows)
    return lines + ["", f"_{provenance(result, 'throughput')}_", ""]
