"""How long the final fine-tune must be: test accuracy of ``uniform`` at 0.5 of dense MACs per length.

A benchmark whose final fine-tune is too short ranks searchers by how fast their picks recover
from under-training, not by how well they pruned. This section takes the first task's model and
data, the ``uniform`` policy closest under half the dense MACs (exact counts, no noise), and
gives it the final fine-tune at several lengths (each its own cosine schedule, the same seed),
then the whole test split. The *knee* is the shortest length whose test accuracy is within
``KNEE_POINTS`` of the best length's: longer fine-tunes buy less than that. Each length is saved
when it finishes, so an interrupted bench resumes after the last one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

DEFAULT_STEPS = (0, 100, 300, 1000, 3000)
QUICK_STEPS = (0, 5, 10)
MACS_FRACTION = 0.5
KNEE_POINTS = 0.5  # points of test accuracy
WITHIN_DENSE_POINTS = 3.0  # what the issue asks of uniform at the knee


def knee(points: list[dict[str, Any]], tolerance: float = KNEE_POINTS) -> dict[str, Any] | None:
    """The shortest length within ``tolerance`` points of the best test accuracy, or None."""
    done = [p for p in points if p.get("test_accuracy") is not None]
    if not done:
        return None
    best = max(p["test_accuracy"] for p in done)
    return min((p for p in done if 100 * (best - p["test_accuracy"]) <= tolerance), key=lambda p: p["steps"])


def finetune_curve(task, *, steps: tuple[int, ...], earlier: dict[str, Any] | None = None,
                   on_point: Callable[[dict[str, Any]], None] = lambda curve: None, log=print) -> dict[str, Any]:
    """Final fine-tunes of ``uniform`` at ``MACS_FRACTION`` of dense MACs for each length in ``steps``.

    ``earlier`` is the curve an interrupted run saved: its lengths are kept (when its policy is
    the same) and only the missing ones run. ``on_point`` gets the curve after each length.
    """
    from autoprune.pipeline import build_problem, search_context
    from autoprune.runner import trial_seed
    from autoprune.searchers import make_searcher
    from autoprune.trial import run_trial

    base = task.problem
    settings = base.settings.replace(searcher="uniform", target="macs", budget=str(MACS_FRACTION), objectives=None)
    problem = build_problem(settings, log=lambda message: None, task=base.task)
    searcher = make_searcher("uniform")
    searcher.setup(search_context(problem))
    proposed = searcher.ask(1)
    if not proposed:
        return {"task": task.name, "error": f"no uniform policy is within {MACS_FRACTION} of dense MACs", "points": []}
    policy = proposed[0]
    curve: dict[str, Any] = {
        "task": task.name, "policy": policy.as_dict(), "macs_fraction": MACS_FRACTION,
        "dense_test_accuracy": base.task.dense_test_accuracy, "dense_val_accuracy": base.task.dense_val_accuracy,
        "train_images": len(base.task.data.train), "lr": problem.scoring.distill.lr, "points": [],
    }
    if earlier and earlier.get("policy") == curve["policy"]:
        curve["points"] = [p for p in earlier.get("points", []) if p["steps"] in steps]
    done = {p["steps"] for p in curve["points"]}
    log(f"fine-tune curve on {task.name}: uniform at {MACS_FRACTION} of dense MACs, final fine-tunes of "
        f"{', '.join(map(str, steps))} steps" + (f" ({len(done)} kept from the earlier run)" if done else ""))
    template = problem.template("final")
    for length in steps:
        if length in done:
            continue
        started = time.perf_counter()
        request = dataclasses.replace(template, number=0, policy=policy, seed=trial_seed(0, 0),
                                      scoring=dataclasses.replace(problem.scoring, final_steps=length))
        out = run_trial(problem.recipe, request)
        m = out.metrics
        point = {"steps": length, "test_accuracy": float(m["test_accuracy"]), "val_accuracy": float(m["val_accuracy"]),
                 "macs": float(m["macs"]), "macs_of_dense": float(m["macs"]) / float(problem.dense["macs"]),
                 "finetune_s": float(m.get("finetune_s", 0.0)), "wall_s": time.perf_counter() - started}
        curve["points"].append(point)
        curve["points"].sort(key=lambda p: p["steps"])
        log(f"  {length} steps: test {100 * point['test_accuracy']:.2f}% (dense {100 * base.task.dense_test_accuracy:.2f}%), "
            f"{point['finetune_s']:.0f} s of fine-tune")
        on_point(curve)
    return curve


def curve_summary(curve: dict[str, Any]) -> dict[str, Any]:
    """The knee, its gap to dense and whether it meets ``WITHIN_DENSE_POINTS``."""
    k = knee(curve.get("points", []))
    if k is None:
        return {}
    gap = 100 * (curve["dense_test_accuracy"] - k["test_accuracy"])
    return {"knee_steps": k["steps"], "knee_test": k["test_accuracy"], "gap_points": gap,
            "within": gap <= WITHIN_DENSE_POINTS}
