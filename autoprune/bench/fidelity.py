"""How well the cheap scores rank policies: Spearman correlation against final accuracy.

Random feasible policies of one task (EagleEye's setting) are each scored by every cheap
fidelity of the study (adaptive-BN recalibration alone, ``bn``; short distillations ``kd:N``;
``kd:N+features``, the same with inner feature distillation) and by the final fine-tune, all
with the same trial seed. The final score is validation accuracy after the final fine-tune (the
test split is kept for the search results). The cheapest fidelity whose Spearman reaches
``TARGET_RHO`` is the one a bench's searches should use.

Policies are scored on the executor the study's recipe names (``--set executor=processes --set
workers=2`` scores two at once, each trial of one policy in turn on one worker). A policy's
scores are saved as soon as it has them all (``on_row``), and a resumed study replays
the random draws it had made, so an interrupted study continues with the same policies. A study
resumed with more cheap fidelities keeps its rows and their final scores (the costly part: a
final fine-tune is minutes a policy) and scores only the added fidelities on them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from autoprune.bench.metrics import spearman
from autoprune.space import Policy
from autoprune.study import COMPLETE, REJECTED, Trial

# kd:300 and kd:1000 joined on 2026-12-06: at 13 policies of the ResNet-20 latency task the shorter
# ones ranked at Spearman 0.54 at best (a resumed study scores the kept policies at added fidelities).
CHEAP = ("bn", "kd:10", "kd:30", "kd:100", "kd:30+features", "kd:300", "kd:1000")
QUICK_CHEAP = ("bn", "kd:3")
FEATURE_WEIGHT = 1.0  # ``+features``: inner distillation at this weight beside the logits
TARGET_RHO = 0.8
MAX_DRAWS_PER_POLICY = 5


def _request(problem, fid: str, number: int, policy, seed: int):
    """The trial request of one scoring; ``kd:N+features`` adds feature distillation."""
    base, _, extra = fid.partition("+")
    request = dataclasses.replace(problem.template(base), number=number, policy=policy, seed=seed)
    if extra == "features":
        scoring = request.scoring
        request = dataclasses.replace(request, scoring=dataclasses.replace(
            scoring, distill=dataclasses.replace(scoring.distill, feature_weight=FEATURE_WEIGHT)))
    return request


def fidelity_study(task, *, policies: int, cheap: tuple[str, ...] = CHEAP, earlier: dict[str, Any] | None = None,
                   on_row: Callable[[dict[str, Any]], None] = lambda study: None, log=print) -> dict[str, Any]:
    """Score ``policies`` random feasible policies of ``task`` at each of ``cheap`` and at final.

    ``earlier`` is what an interrupted study saved: its draws are replayed (the searcher is told
    the same outcomes) and its rows kept, when its final fine-tune had the same length; a kept row
    that lacks one of ``cheap`` is scored at it first.
    """
    from autoprune.executors import make_executor
    from autoprune.pipeline import search_context
    from autoprune.runner import trial_seed
    from autoprune.searchers import make_searcher
    from autoprune.trial import run_trial

    problem = task.problem
    fidelities = (*cheap, "final")
    searcher = make_searcher("random")
    searcher.setup(search_context(problem))
    kept = earlier if _same_final(earlier, problem.settings.final_steps) else None
    if earlier and not kept:
        log("fidelity study: the earlier run's final fine-tune had another length; starting it again")
    draws: list[dict[str, Any]] = list(kept.get("draws", [])) if kept else []
    rows: list[dict[str, Any]] = list(kept.get("rows", [])) if kept else []
    seconds: dict[str, list[float]] = {f: [] for f in fidelities}
    for row in rows:
        for f, s in row.get("seconds", {}).items():
            if f in seconds:  # a fidelity the earlier run studied and this one does not is left out
                seconds[f].append(s)
    started = time.perf_counter()
    elapsed = float(kept.get("elapsed_s", 0.0)) if kept else 0.0

    def study() -> dict[str, Any]:
        return _summary(task.name, fidelities, draws, rows, seconds, problem, elapsed + time.perf_counter() - started)

    for number, draw in enumerate(draws):  # replay: the searcher proposes what it proposed before
        proposed = searcher.ask(1)
        if not proposed or proposed[0].as_dict() != draw["policy"]:
            log(f"fidelity study: draw {number} differs from the earlier run's; continuing from the rows kept")
            for later, kept_draw in enumerate(draws[number:], start=number):  # never drawn again
                _tell_draw(searcher, later, Policy.from_dict(problem.space.fingerprint, kept_draw["policy"]),
                           kept_draw, fidelities[0])
            break
        _tell_draw(searcher, number, proposed[0], draw, fidelities[0])
    log(f"fidelity study on {task.name}: {policies} random feasible policies at {', '.join(fidelities)}"
        + (f" ({len(rows)} kept from the earlier run)" if rows else ""))
    numbers = _numbers(rows, draws)
    for index, (row, number) in enumerate(zip(rows, numbers, strict=True)):  # fidelities added since: score them
        missing = [f for f in cheap if f not in row]
        if not missing:
            continue
        policy = Policy.from_dict(problem.space.fingerprint, row["policy"])
        for fid in missing:  # no budget here: the row's policy was found feasible when it was drawn
            request = dataclasses.replace(_request(problem, fid, number, policy, trial_seed(0, number)), limit=None)
            out = run_trial(problem.recipe, request)
            row[fid] = float(out.metrics["val_accuracy"])
            row["seconds"][fid] = float(out.metrics.get("total_s", 0.0))
            seconds[fid].append(row["seconds"][fid])
        log(f"  kept policy {index + 1}: " + ", ".join(f"{f} {100 * row[f]:.2f}%" for f in missing) + " added")
        on_row(study())
    asked = len(draws)
    running: deque[tuple[Policy, int, int, Future[list[tuple[str, Any]]]]] = deque()
    settings = problem.settings
    with make_executor(settings.executor, workers=settings.workers,
                       threads_per_worker=problem.scoring.threads) as executor:
        while True:
            # keep every worker scoring a policy; rows are kept in the order their policies were drawn
            while (len(running) < executor.capacity and len(rows) + len(running) < policies
                   and asked < MAX_DRAWS_PER_POLICY * policies):
                proposed = searcher.ask(1)
                if not proposed:
                    break
                policy, number = proposed[0], asked
                asked += 1
                seed = trial_seed(0, number)
                requests = [(fid, _request(problem, fid, number, policy, seed)) for fid in fidelities]
                running.append((policy, number, seed, executor.submit(score_policy, problem.recipe, requests)))
            if not running:
                break
            policy, number, seed, future = running.popleft()
            row = _row(problem, searcher, draws, policy, number, seed, future.result())
            if row:
                rows.append(row)
                for f, s in row["seconds"].items():
                    seconds[f].append(s)
                log(f"  policy {len(rows)}/{policies}: " + ", ".join(f"{f} {100 * row[f]:.2f}%" for f in fidelities))
            on_row(study())
    log(f"fidelity study: {len(rows)} feasible of {asked} drawn")
    return study()


def score_policy(recipe, requests: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Run one policy's trial at each fidelity in turn (on an executor's worker), stopping at a
    rejection: the first scoring measures the policy and finds it over budget."""
    from autoprune.trial import run_trial

    outcomes = []
    for fid, request in requests:
        out = run_trial(recipe, request)
        outcomes.append((fid, out))
        if out.rejected:
            break
    return outcomes


def _row(problem, searcher, draws: list[dict[str, Any]], policy: Policy, number: int, seed: int,
         outcomes: list[tuple[str, Any]]) -> dict[str, Any]:
    """The study's row of one scored policy (empty when rejected); the searcher is told its first
    scoring and the draw is recorded."""
    row: dict[str, Any] = {"policy": policy.as_dict(), "number": number, "seconds": {}}
    first = outcomes[0][0]
    for fid, out in outcomes:
        if out.rejected:  # over budget when measured: not a candidate
            searcher.tell(Trial(number, policy, REJECTED, dict(out.metrics), seed, "random", fid, out.constraint))
            draws.append({"policy": policy.as_dict(), "rejected": True, "metrics": _plain(out.metrics),
                          "constraint": out.constraint})
            return {}
        if fid == first:
            searcher.tell(Trial(number, policy, COMPLETE, dict(out.metrics), seed, "random", fid, out.constraint))
            draws.append({"policy": policy.as_dict(), "rejected": False, "metrics": _plain(out.metrics),
                          "constraint": out.constraint})
        row[fid] = float(out.metrics["val_accuracy"])
        row[problem.metric] = float(out.metrics[problem.metric])
        row["seconds"][fid] = float(out.metrics.get("total_s", 0.0))
    return row


def _tell_draw(searcher, number: int, policy: Policy, draw: dict[str, Any], fidelity: str) -> None:
    """Tell the study's searcher what an earlier run's draw ``number`` came to."""
    from autoprune.runner import trial_seed

    state = REJECTED if draw["rejected"] else COMPLETE
    searcher.tell(Trial(number, policy, state, dict(draw["metrics"]), trial_seed(0, number), "random", fidelity,
                        draw.get("constraint")))


def _plain(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _numbers(rows: list[dict[str, Any]], draws: list[dict[str, Any]]) -> list[int]:
    """The trial number each row's policy was drawn as (its seed derives from it). Rows saved
    before they recorded it are matched to the draws in order: rows follow their draws, and a
    policy drawn twice (with another seed) is two rows."""
    numbers, start = [], 0
    for row in rows:
        if "number" in row:
            number = int(row["number"])
        else:
            number = next(i for i in range(start, len(draws))
                          if draws[i]["policy"] == row["policy"] and not draws[i]["rejected"])
        numbers.append(number)
        start = number + 1
    return numbers


def _summary(name: str, fidelities: tuple[str, ...], draws, rows, seconds, problem, elapsed: float) -> dict[str, Any]:
    cheap = fidelities[:-1]
    pairs = {f"{f} vs final": spearman([r[f] for r in rows if f in r], [r["final"] for r in rows if f in r])
             for f in cheap}
    median_s = {f: (statistics.median(v) if v else None) for f, v in seconds.items()}
    return {
        "task": name, "fidelities": list(fidelities), "cheap": list(cheap), "asked": len(draws), "policies": len(rows),
        "final_steps": problem.settings.final_steps, "spearman": pairs, "rows": rows, "draws": draws,
        "median_s": median_s, "chosen": cheapest_ranking(pairs, median_s), "target_rho": TARGET_RHO,
        "elapsed_s": elapsed,
    }


def _same_final(study: dict[str, Any] | None, final_steps: int) -> bool:
    """Whether an earlier study's rows can be kept: the same final length (a final score after
    another number of steps ranks policies differently); its cheap fidelities may differ."""
    return bool(study) and study.get("final_steps") == final_steps


def study_done(study: dict[str, Any] | None, policies: int, cheap: tuple[str, ...], final_steps: int) -> bool:
    """Whether an earlier study already has what this one asks (or ran out of draws trying)."""
    if not _same_final(study, final_steps) or not set(cheap) <= set(study.get("cheap", ())):
        return False
    if any(f not in row for row in study.get("rows", []) for f in cheap):  # an added fidelity half scored
        return False
    return study["policies"] >= policies or study["asked"] >= MAX_DRAWS_PER_POLICY * policies


def check_fidelities(text: str) -> tuple[str, ...]:
    """``--fidelities``: comma-separated ``bn``, ``kd:N`` or ``kd:N+features``; a UserError names a bad one."""
    from autoprune.errors import UserError
    from autoprune.evaluators import parse_fidelity

    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for name in names:
        base, plus, extra = name.partition("+")
        if base == "final" or (plus and extra != "features"):
            raise UserError(f"--fidelities: {name!r} is not a cheap fidelity; use bn, kd:N or kd:N+features")
        parse_fidelity(base)
    if not names:
        raise UserError("--fidelities: give at least one cheap fidelity, e.g. bn,kd:30")
    return names


def cheapest_ranking(pairs: dict[str, float], median_s: dict[str, float | None]) -> str | None:
    """The cheap fidelity with the lowest median seconds whose Spearman reaches ``TARGET_RHO``."""
    good = [k.removesuffix(" vs final") for k, rho in pairs.items() if rho == rho and rho >= TARGET_RHO]
    good = [f for f in good if median_s.get(f) is not None]
    return min(good, key=lambda f: median_s[f]) if good else None
