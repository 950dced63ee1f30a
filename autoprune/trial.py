"""One trial, start to finish, in whatever process an executor chooses.

``run_trial`` is a free, picklable function: it rebuilds the task from a recipe (cached per
process), applies the policy, measures the costs, rejects a policy over budget before any training
is spent on it, then scores it at the requested fidelity. Data flows one way:
policy -> prune -> measure -> score -> metrics.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from autoprune import meter
from autoprune.costs import CostSettings, measure_costs
from autoprune.costs.latency import LatencyCost, thread_count
from autoprune.device import on_device, placed, resolve, synchronize
from autoprune.errors import UserError
from autoprune.evaluators import DistillConfig, distill, parse_fidelity, recalibrate_bn
from autoprune.model_io import architecture
from autoprune.objectives import TARGETS
from autoprune.prune import apply_policy, save_slimmed
from autoprune.rules import SpaceRules
from autoprune.space import Policy, SearchSpace
from autoprune.task import Task, TaskRecipe, accuracy, load_task


@dataclass(frozen=True)
class ScoringConfig:
    """How every candidate of a search is pruned and scored (same for all searchers).

    Attributes:
        criterion: channel importance (``magnitude``, ``taylor``, ``bn``).
        distill: fine-tune settings.
        bn_batches: batches of adaptive-BN recalibration before any fine-tune.
        final_steps: distillation steps of the ``final`` fidelity.
        threads: CPU threads for training inside a trial; fixed so that every executor gives the
            same accuracies for the same seed.
        evaluate: a user's score of a model, higher is better (``autoprune.search(evaluate=...)``),
            recorded as the trial's ``val_accuracy`` in place of top-1 accuracy on the val split.
        device: where fine-tunes and evaluation run (``autoprune.device``: auto, cpu, cuda[:N]);
            resolved in the worker, so ``auto`` means that worker's own CUDA device when it has one.
        finetune: a user's training loop, ``finetune(student, teacher, steps)``, run in place of
            distillation after adaptive-BN recalibration; ``teacher`` is the shared dense model.
    """

    criterion: str = "magnitude"
    distill: DistillConfig = field(default_factory=DistillConfig)
    bn_batches: int = 20
    final_steps: int = 600
    threads: int = 1
    device: str = "cpu"
    evaluate: Callable[[torch.nn.Module], float] | None = None
    finetune: Callable[[torch.nn.Module, torch.nn.Module, int], Any] | None = None


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs besides the task recipe (all picklable, no live model)."""

    number: int
    policy: Policy
    seed: int
    fidelity: str
    target: str
    limit: float | None
    rules: SpaceRules
    cost: CostSettings
    scoring: ScoringConfig
    save_to: str | None = None
    # Set for a latency budget relative to the dense model: the dense latency the limit was set
    # from. The trial then measures the dense model alongside and reports latency_ms as
    # ratio x this anchor, so drift in the machine's speed cancels (see ``paired_latency``).
    dense_latency_ms: float | None = None
    # --objectives: cost metrics every trial must measure (latency too when it is not the target)
    objectives: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial measured; ``rejected`` means over budget and never trained."""

    number: int
    metrics: dict[str, float]
    rejected: bool
    constraint: float | None
    timings: dict[str, float]


@lru_cache(maxsize=4)
def _space(recipe: TaskRecipe, rules: SpaceRules) -> SearchSpace:
    task = load_task(recipe)
    return SearchSpace.from_model(task.model, task.example_inputs(), rules)


def slim(task: Task, space: SearchSpace, policy: Policy, criterion: str, seed: int) -> tuple[torch.nn.Module, list]:
    """The slimmed model of ``policy`` (importance batch drawn from training data with ``seed``)."""
    from autoprune.data import batches

    batch = None
    if criterion == "taylor":
        batch = next(batches(task.data, task.data.train, 64, seed=seed, shuffle=True))
    with meter.step("cpu"):  # tracing and pruning are CPU work that a reading must not run beside
        return apply_policy(task.model, space, policy, task.example_inputs(), criterion=criterion, batch=batch)


# A reading this close to a latency limit (as a fraction of it) is taken again before the trial
# is accepted or rejected: a search keeps the candidates that read low, so near the limit a single
# reading lets through mostly lucky ones (on ResNet-20 at 0.3 of dense, picks that read 0.27-0.29
# re-measured 0.35-0.39 at export), and rejects some that read unluckily high.
RECHECK_BAND = (0.8, 1.15)
RECHECK_ROUNDS = 3


def read_latency(model: torch.nn.Module, dense: torch.nn.Module, settings: CostSettings, *,
                 dense_anchor_ms: float | None, limit: float | None,
                 band: tuple[float, float] = RECHECK_BAND) -> dict[str, float]:
    """``latency_ms`` of a candidate in the units of ``limit``, decided on a steady reading.

    With ``dense_anchor_ms`` (a budget relative to the dense model) each round reads the candidate
    and then the dense model, and the reading is their ratio times the anchor, so drift cancels
    (``latency_ratio``, raw ``latency_ms_now``). Where the first round lands within ``band``
    (fractions) of ``limit``, ``RECHECK_ROUNDS - 1`` more rounds are read and the median of all of
    them decides (the first is kept as ``latency_first_ms``): the search keeps what reads low, so a
    single round would let lucky readings through. These are screening readings: each stops once
    its median is settled (``costs.latency.settled``) and a model read before warms up briefly;
    the pick's re-check and the export's verification take every repeat.
    """
    cost = LatencyCost(settings, early_stop=True)
    passes = 0

    def read_round() -> tuple[float, float]:
        """(raw reading ms, reading in the units of ``limit``)."""
        nonlocal passes
        reading = cost.measure(model)
        passes += cost.passes
        if dense_anchor_ms is None:
            return reading, reading
        ratio = reading / cost.measure(dense)
        passes += cost.passes
        return reading, ratio * dense_anchor_ms

    rounds = [read_round()]
    first_passes, first = passes, rounds[0][1]
    low, high = band
    if limit is not None and low * limit <= first <= high * limit:
        rounds += [read_round() for _ in range(RECHECK_ROUNDS - 1)]
    result: dict[str, float] = {"latency_ms": float(statistics.median(value for _, value in rounds))}
    if dense_anchor_ms is not None:
        result.update(latency_ms_now=float(statistics.median(raw for raw, _ in rounds)),
                      latency_ratio=result["latency_ms"] / dense_anchor_ms)
    if len(rounds) > 1:
        result["latency_first_ms"] = first
    return {**result, "latency_first_passes": float(first_passes)}  # timed passes of the first round


def fine_tune(model: torch.nn.Module, task: Task, scoring: ScoringConfig, steps: int, seed: int) -> dict[str, float]:
    """Adaptive-BN recalibration, then ``steps`` of distillation from the dense model (in place).

    How every trial is scored, the search's final fine-tune, and ``autoprune apply``: a slimmed
    model straight from pruning carries the dense model's BN statistics and is near chance.
    """
    from autoprune.data import endless_batches

    train = endless_batches(task.data, task.data.train, scoring.distill.batch_size, seed=seed, augment=task.data.augment)
    recalibrate_bn(model, train, scoring.bn_batches)
    if scoring.finetune is None:
        return distill(model, task.model, train, steps, scoring.distill)
    if steps > 0:
        with meter.step(meter.device_of(model)):  # a user's loop cannot yield between its steps
            scoring.finetune(model, task.model, steps)
        model.eval()
    return {}


def score(model: torch.nn.Module, task: Task, scoring: ScoringConfig) -> float:
    """What a search maximises: the user's ``evaluate`` when given, else val top-1 accuracy."""
    if scoring.evaluate is None:
        return accuracy(model, task.data, task.data.val)
    model.eval()
    with torch.no_grad(), meter.step(meter.device_of(model)):
        value = scoring.evaluate(model)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"evaluate(model) must return a number, got {value!r}") from None


_frozen: list[bool] = []


def _freeze_long_lived() -> None:
    """Once per process, when its first task is loaded: collect, then move every object alive
    (imported modules, the task, its dense model and data) out of the cycle collector's view
    (``gc.freeze``). Each trial frees its pruning graph and the MAC counter's model copy with a
    full collection; in a process holding torch, Optuna and pymoo each took 0.1-0.2 s of CPU
    (measured on the default task: two per trial, 2.7% of its search), and now scans only what
    trials create. Objects frozen here that die later are not reclaimed; they are set-up state."""
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen.append(True)


def run_trial(recipe: TaskRecipe, request: TrialRequest) -> TrialOutcome:
    """Prune, measure, (reject or) score one policy; see the module docstring."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with meter.step("cpu"):  # a fresh worker's setup (unpickling, loading, tracing) takes seconds of CPU
        task = load_task(recipe)
        space = _space(recipe, request.rules)
        _freeze_long_lived()
    fidelity = parse_fidelity(request.fidelity, final_steps=request.scoring.final_steps)
    timings["setup_s"] = time.perf_counter() - started

    with thread_count(request.scoring.threads):
        torch.manual_seed(request.seed)
        tick = time.perf_counter()
        model, history = slim(task, space, request.policy, request.scoring.criterion, request.seed)
        timings["prune_s"] = time.perf_counter() - tick

        tick = time.perf_counter()
        metrics: dict[str, float] = measure_costs(model, request.cost, latency=False)
        if request.target == "latency" or "latency_ms" in request.objectives or fidelity.final:
            limit = request.limit if request.target == "latency" else None
            metrics.update(read_latency(model, task.model, request.cost, dense_anchor_ms=request.dense_latency_ms, limit=limit))
        timings["measure_s"] = time.perf_counter() - tick
        constraint = None
        if request.limit is not None:
            constraint = metrics[TARGETS[request.target]] / request.limit - 1.0
            if constraint > 0 and not fidelity.final:
                timings["total_s"] = time.perf_counter() - started
                return TrialOutcome(request.number, {**metrics, **timings}, True, constraint, timings)

        device = resolve(request.scoring.device)
        work = on_device(task, device)  # the dense model and data moved once per worker
        with placed(model, device):
            tick = time.perf_counter()
            loss = fine_tune(model, work, request.scoring, fidelity.steps, request.seed)
            metrics["threads"] = float(torch.get_num_threads())  # what the fine-tune trained with on a CPU
            synchronize(device)
            timings["finetune_s"] = time.perf_counter() - tick

            tick = time.perf_counter()
            metrics["val_accuracy"] = score(model, work, request.scoring)
            if fidelity.final:
                metrics["test_accuracy"] = accuracy(model, work.data, work.data.test)
            timings["evaluate_s"] = time.perf_counter() - tick

    if request.save_to:
        save_slimmed(
            Path(request.save_to), model, history, fingerprint=space.fingerprint, input_shape=task.input_shape,
            meta={"policy": request.policy.as_dict(), "recipe": recipe.to_dict(), "architecture": architecture(task), **metrics},
        )
    metrics.update(loss)
    timings["total_s"] = time.perf_counter() - started
    metrics.update(timings)
    return TrialOutcome(request.number, metrics, False, constraint, timings)
