"""How well the cheap scores rank policies: Spearman correlation against final accuracy.

Random feasible policies of one task (EagleEye's setting) are each scored three ways with the
same trial seed: adaptive-BN recalibration alone (``bn``), a short distillation (``kd:N``, the
task's search fidelity) and the final fine-tune (``final``). The final score is validation
accuracy after the final fine-tune (the test split is kept for the search results).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from autoprune.bench.metrics import spearman
from autoprune.study import COMPLETE, REJECTED, Trial

DEFAULT_KD = "kd:20"
MAX_DRAWS_PER_POLICY = 5


def kd_fidelity(search_fidelity: str) -> str:
    """The short-distillation fidelity to study: the task's own if it is ``kd:N``."""
    return search_fidelity if search_fidelity.startswith("kd:") else DEFAULT_KD


def fidelity_study(task, *, policies: int, log=print) -> dict[str, Any]:
    """Score ``policies`` random feasible policies of ``task`` at bn, kd:N and final; correlations."""
    from autoprune.pipeline import search_context
    from autoprune.runner import trial_seed
    from autoprune.searchers import make_searcher
    from autoprune.trial import run_trial

    problem = task.problem
    kd = kd_fidelity(problem.settings.fidelity)
    fidelities = ("bn", kd, "final")
    searcher = make_searcher("random")
    searcher.setup(search_context(problem))
    log(f"fidelity study on {task.name}: {policies} random feasible policies at {', '.join(fidelities)}")
    rows: list[dict[str, Any]] = []
    seconds: dict[str, list[float]] = {f: [] for f in fidelities}
    started = time.perf_counter()
    asked = 0
    # Draw until enough policies measured within budget: the table's screen lets some over-budget
    # policies through, and telling the searcher what was measured tightens its estimate.
    while len(rows) < policies and asked < MAX_DRAWS_PER_POLICY * policies:
        proposed = searcher.ask(1)
        if not proposed:
            break
        policy, number = proposed[0], asked
        asked += 1
        row: dict[str, Any] = {"policy": policy.as_dict()}
        for fid in fidelities:
            request = dataclasses.replace(problem.template(fid), number=number, policy=policy, seed=trial_seed(0, number))
            out = run_trial(problem.recipe, request)
            if out.rejected:  # over budget when measured: not a candidate
                searcher.tell(Trial(number, policy, REJECTED, dict(out.metrics), request.seed, "random", fid, out.constraint))
                row = {}
                break
            if fid == "bn":
                searcher.tell(Trial(number, policy, COMPLETE, dict(out.metrics), request.seed, "random", fid, out.constraint))
            row[fid] = float(out.metrics["val_accuracy"])
            row[problem.metric] = float(out.metrics[problem.metric])
            seconds[fid].append(float(out.metrics.get("total_s", 0.0)))
        if row:
            rows.append(row)
    log(f"fidelity study: {len(rows)} feasible of {asked} drawn")
    final = [r["final"] for r in rows]
    pairs = {
        "bn vs final": spearman([r["bn"] for r in rows], final),
        f"{kd} vs final": spearman([r[kd] for r in rows], final),
        f"bn vs {kd}": spearman([r["bn"] for r in rows], [r[kd] for r in rows]),
    }
    return {
        "task": task.name, "fidelities": list(fidelities), "kd": kd, "asked": asked, "policies": len(rows),
        "final_steps": problem.settings.final_steps, "spearman": pairs, "rows": rows,
        "median_s": {f: (statistics.median(v) if v else None) for f, v in seconds.items()},
        "elapsed_s": time.perf_counter() - started,
    }
