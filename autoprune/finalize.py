"""After the search: pick the best feasible policy, fine-tune it longer, export, verify, record.

The pick is re-checked where the budget is noisy: latency of the best candidates is measured
again in the main process with nothing else running, and the most accurate one still within
budget wins. The exported model is reloaded from disk and measured once more. Where the budget is
a fraction of the dense model, both checks measure the dense model alongside and compare the
ratio with the fraction, so a machine that has slowed down (or sped up) since the budget was
anchored does not turn a policy over (or under) budget.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoprune import interrupts
from autoprune.atomic import write_text_atomic
from autoprune.costs import measure_costs
from autoprune.costs.latency import anchored_reading
from autoprune.errors import UserError
from autoprune.policy_io import budget_value, save_policy
from autoprune.prune import load_slimmed
from autoprune.runner import trial_seed
from autoprune.storage import storage_url
from autoprune.study import Ledger, Trial
from autoprune.trial import TrialOutcome, run_trial, slim


@dataclass(frozen=True)
class FinalResult:
    trial: Trial
    search_trial: int
    outcome: TrialOutcome
    verified_cost: float
    model_path: Path
    policy_path: Path


def candidates(trials: list[Trial]) -> list[Trial]:
    """Scored, feasible search trials, most accurate first (ties: cheaper first)."""
    ok = [t for t in trials if t.scored and t.feasible and t.fidelity != "final"]
    return sorted(ok, key=lambda t: (-(t.accuracy or 0.0), t.constraint or 0.0, t.number))


# A pick re-measured this close under a latency limit (as a fraction of it), on the median of
# three paired readings, is a coin flip on the export's own reading: readings of one model spread by
# a few percent, so the default run's exports re-measured 0.507 and 0.511 of dense after picks just
# under 0.5.
PICK_MARGIN = 0.03
# Paired rounds for a candidate that re-measures within the limit but inside the margin, and for
# the export's own check. The margin is about two standard errors of a three-round median; nine
# rounds cut the error by sqrt(3), so such a candidate needs only PICK_MARGIN / sqrt(3) (1.7%) of
# room. Passing over a candidate 2% under the limit cost the bench's `global` seed 0 its best
# policy (search score 0.744 at 0.490 of dense latency, taken 0.673 at 0.373 instead).
VERIFY_ROUNDS = 9


def pick(problem, trials: list[Trial], *, recheck: int = 5, margin: float = PICK_MARGIN, log=print,
         readings: dict[int, float] | None = None) -> Trial:
    """The most accurate candidate whose re-measured cost is within budget with room to spare.

    Latency only (MACs and parameters are exact): up to ``recheck`` of the most accurate
    candidates are re-measured in order (three paired rounds); the first at or under
    ``(1 - margin) x limit`` wins. One within the limit but closer to it is read for
    ``VERIFY_ROUNDS`` rounds and wins if that median is at or under
    ``(1 - margin / sqrt(VERIFY_ROUNDS / 3)) x limit``: the same confidence from more readings.
    Failing all, the most accurate one re-measured within the limit at all; failing that, the
    fastest (the machine may be busy), each said in the log. ``readings`` (trial number -> ms),
    when given, keeps each candidate's last re-measurement and reuses it: picks from overlapping
    sets of trials then agree on the trials they share instead of on two noisy readings.
    """
    ranked = candidates(trials)
    if not ranked:
        raise UserError(
            "no trial both met the budget and was scored; run more --trials, or loosen the budget"
        )
    if problem.metric != "latency_ms" or problem.cost.table is not None:  # exact, or a table's fixed estimate
        return ranked[0]
    safe = (1.0 - margin) * problem.limit
    safe_long = (1.0 - margin / math.sqrt(VERIFY_ROUNDS / 3)) * problem.limit
    readings = {} if readings is None else readings
    measured: list[tuple[float, Trial]] = []
    for trial in ranked[:recheck]:
        if trial.number not in readings:
            model, _ = slim(problem.task, problem.space, trial.policy, problem.settings.criterion, problem.settings.seed)
            latency = anchored_latency(problem, model)["latency_ms"]
            if safe < latency <= problem.limit:  # within, but near: more readings decide
                latency = anchored_latency(problem, model, rounds=VERIFY_ROUNDS)["latency_ms"]
            readings[trial.number] = latency
        latency = readings[trial.number]
        if latency <= safe_long:  # a three-round reading this low was already under ``safe``
            return trial
        measured.append((latency, trial))
        where = "within the budget but" if latency <= problem.limit else "over the budget,"
        log(f"trial {trial.number}: re-measured {latency:.2f} ms is {where} not far enough under "
            f"the {problem.limit:.2f} ms limit; next candidate")
    within = [(latency, trial) for latency, trial in measured if latency <= problem.limit]
    if within:
        latency, trial = within[0]
        log(f"none of the {len(measured)} best candidates re-measured far enough under the budget; taking "
            f"the most accurate within it, trial {trial.number} ({latency:.2f} ms): its export may read over")
        return trial
    latency, fastest = min(measured, key=lambda item: item[0])
    log(f"none of the {len(measured)} best candidates stays within budget when re-measured; "
        f"taking the fastest, trial {fastest.number} ({latency:.2f} ms): the machine may be busy")
    return fastest


def anchored_latency(problem, model, rounds: int = 3) -> dict[str, float]:
    """Latency of ``model`` in the units of ``problem.limit`` (``latency_ms``): anchored to the
    dense model for a budget relative to it, else a steady reading (``anchored_reading``)."""
    relative = problem.metric == "latency_ms" and problem.budget.fraction is not None
    return anchored_reading(model, problem.task.model, problem.cost, problem.dense["latency_ms"] if relative else None,
                            rounds=rounds)


def finished_final(trials: list[Trial], best: Trial, model_path: Path) -> Trial | None:
    """The completed ``final`` trial of ``best`` whose model is the one at ``model_path``, if any:
    a run killed after its final fine-tune resumes at the export instead of fine-tuning again."""
    from autoprune.prune import read_slimmed

    done = [t for t in trials if t.fidelity == "final" and t.scored and t.metrics.get("parent_trial") == best.number
            and t.policy == best.policy]
    if not done or not model_path.is_file():
        return None
    try:
        saved = read_slimmed(model_path).get("meta", {}).get("policy")
    except UserError:
        return None
    return done[-1] if saved == best.policy.as_dict() else None


def final_threads(problem, executor) -> int:
    """Threads of the final fine-tune. It runs alone, so on this machine it gets the threads of all
    the search's workers together (at most the cores): with ``--workers 2 --threads 1`` the second
    core would otherwise idle through the longest trial of the run. A Ray task keeps what it
    reserved. Inline with 2 threads and 2 process workers of 1 thread both finalise with 2."""
    threads = problem.scoring.threads
    if executor.name == "ray":
        return threads
    return max(threads, min(os.cpu_count() or 1, threads * executor.capacity))


def finalize(problem, ledger: Ledger, best: Trial, executor, *, log=print) -> FinalResult:
    """Final fine-tune of ``best`` (recorded as a ``final`` trial), export and verification.

    A final trial of ``best`` already finished in the ledger, with its model on disk, is reused.
    """
    run_dir = problem.run_dir
    model_path = run_dir / "model.pt"
    final = finished_final(ledger.trials(), best, model_path)
    if final is not None:
        log(f"resumed: the final fine-tune of trial {best.number} is done (trial {final.number}); exporting it")
        number, outcome = final.number, TrialOutcome(final.number, dict(final.metrics), False, final.constraint, {})
    else:
        number = ledger.start(best.policy, searcher=best.searcher, fidelity="final")
        seed = trial_seed(problem.settings.seed, number)
        ledger.annotate(number, seed=seed, parent_trial=best.number)
        request = replace(problem.template("final"), number=number, policy=best.policy, seed=seed, save_to=str(model_path))
        request = replace(request, scoring=replace(request.scoring, threads=final_threads(problem, executor)))
        try:
            outcome = executor.submit(run_trial, problem.recipe, request).result()
            interrupts.check()
        except BaseException as exc:  # Ctrl-C, SIGTERM or a failure: the final trial is not left RUNNING
            ledger.fail_running("interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
            raise
        ledger.finish(number, outcome.metrics, constraint=outcome.constraint, rejected=False)
        final = Trial(number, best.policy, "complete", dict(outcome.metrics), seed, best.searcher, "final", outcome.constraint)

    reloaded = load_slimmed(model_path, problem.task.model)
    verified = measure_costs(reloaded, problem.cost, latency=False)
    verified.update(anchored_latency(problem, reloaded, rounds=VERIFY_ROUNDS))
    verified_cost = verified[problem.metric]
    status = "within" if verified_cost <= problem.limit else "OVER"
    log(f"exported {model_path}: reloaded from disk, {problem.metric} {verified_cost:.4g} is {status} the budget {problem.limit:.4g}")
    if problem.cost.table is not None and problem.metric == "latency_ms":
        log(f"  latency {problem.cost.describe().split(', ')[-1]}: check it on the device with "
            f"`autoprune profile --measure model.pt --table {Path(problem.cost.table).name}`")
    elif "latency_ratio" in verified:
        log(f"  latency measured alongside the dense model: {verified['latency_ratio']:.3f} of dense "
            f"({verified['latency_ms_now']:.4g} ms now; the budget is {problem.budget.fraction:g} of dense)")

    settings = problem.settings
    provenance: dict[str, Any] = {  # paths absolute (the recipe's data and checkpoint are), values typed
        "model": settings.model, "data": problem.recipe.data, "checkpoint": problem.recipe.checkpoint,
        "image_size": problem.task.input_shape[-1], "search_space": problem.space.rules.name,
        "granularity": problem.space.rules.granularity, "criterion": settings.criterion,
        "target": problem.budget.target, "budget": budget_value(problem.budget.text), "limit": problem.limit,
        "cost_settings": problem.cost.describe(), "searcher": best.searcher, "search_trial": best.number,
        "final_trial": number, "study": ledger.study.study_name, "storage": storage_url(settings.storage, run_dir),
        "run_dir": str(Path(run_dir).resolve()), "seed": settings.seed,
        "recipe": {k: v for k, v in problem.recipe.to_dict().items() if k != "cache_dir"},
        "metrics": {
            "search_val_accuracy": best.accuracy,
            "val_accuracy": outcome.metrics.get("val_accuracy"),
            "test_accuracy": outcome.metrics.get("test_accuracy"),
            "macs": verified["macs"], "params": verified["params"], "latency_ms": verified["latency_ms"],
            **({"latency_ratio": verified["latency_ratio"], "latency_ms_now": verified["latency_ms_now"]}
               if "latency_ratio" in verified else {}),
            "dense_macs": problem.dense["macs"], "dense_params": problem.dense["params"],
            "dense_latency_ms": problem.dense["latency_ms"],
            "dense_val_accuracy": problem.task.dense_val_accuracy,
            "dense_test_accuracy": problem.task.dense_test_accuracy,
        },
    }
    policy_path = save_policy(run_dir / "policy.yaml", best.policy, problem.space, **provenance)
    return FinalResult(final, best.number, outcome, float(verified_cost), model_path, policy_path)


# How many times a search finalises the next candidate after an export that re-measured over a
# measured latency budget, and how much the pick's margin grows each time. A pick re-measured 3%
# under the limit still reads over at the export now and then (the default run's export read
# 0.5003 of dense after its pick's 0.4825); one more final fine-tune of a candidate with twice the
# room costs far less than leaving the user a model over the budget.
EXPORT_RETRIES = 1
RETRY_MARGIN_FACTOR = 2.0


def finalize_within_budget(problem, ledger: Ledger, trials: list[Trial], executor, *,
                           log=print) -> tuple[Trial, FinalResult]:
    """``pick`` then ``finalize``; when the export re-measures over a latency budget that is
    measured on this machine (not a table's estimate), the next candidate is picked with
    ``RETRY_MARGIN_FACTOR`` times the margin and finalised instead, up to ``EXPORT_RETRIES``
    times. The export's check stays as strict: the last export decides ``within_budget``."""
    readings: dict[int, float] = {}
    passed_over: set[int] = set()
    margin = PICK_MARGIN
    measured = problem.metric == "latency_ms" and problem.cost.table is None
    while True:
        best = pick(problem, [t for t in trials if t.number not in passed_over], margin=margin, log=log,
                    readings=readings)
        log(f"best feasible: search trial {best.number} (val acc {best.accuracy:.4f}); "
            f"final fine-tune of {problem.settings.final_steps} steps")
        final = finalize(problem, ledger, best, executor, log=log)
        passed_over.add(best.number)
        left = candidates([t for t in trials if t.number not in passed_over])
        if final.verified_cost <= problem.limit or not measured or len(passed_over) > EXPORT_RETRIES or not left:
            return best, final
        margin *= RETRY_MARGIN_FACTOR
        log(f"the export of trial {best.number} re-measured over the budget; finalising the next candidate "
            f"with {margin:.0%} room instead (readings of one model spread by a few percent)")


def write_summary(run_dir: Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(run_dir / "summary.json", json.dumps(data, indent=2, default=float))
