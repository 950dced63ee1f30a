"""A whole search run, from settings to a run directory: the function behind ``autoprune search``.

space -> searcher -> policy -> prune -> measure -> score -> ledger -> searcher, then the chosen
policy's final fine-tune, export and report (``autoprune.finalize``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autoprune.atomic import write_text_atomic
from autoprune.costs import CostSettings, measure_costs
from autoprune.costs.latency import paired_latency, steady_latency
from autoprune.costs.online import TrackedEstimate
from autoprune.data import absolute_data_spec
from autoprune.errors import UserError
from autoprune.evaluators import DistillConfig, parse_fidelity
from autoprune.objectives import NO_BUDGET, Budget, format_metric, parse_budget, parse_objectives
from autoprune.rules import SpaceRules, load_rules
from autoprune.searchers import SearchContext, make_searcher, policy_key
from autoprune.settings import SearchSettings
from autoprune.space import Policy, SearchSpace
from autoprune.study import Ledger, default_storage
from autoprune.task import Task, TaskRecipe, load_task
from autoprune.trial import ScoringConfig, TrialRequest, slim

if TYPE_CHECKING:
    import torch


@dataclass
class Problem:
    """Everything fixed before the search starts, built once in the main process."""

    settings: SearchSettings
    recipe: TaskRecipe
    task: Task
    space: SearchSpace
    cost: CostSettings
    budget: Budget
    dense: dict[str, float]
    limit: float
    floor: float
    scoring: ScoringConfig
    run_dir: Path
    objectives: tuple[str, ...] = ()  # --objectives: the cost metrics traded against accuracy

    @property
    def metric(self) -> str:
        return self.budget.metric

    def template(self, fidelity: str) -> TrialRequest:
        return TrialRequest(
            number=-1, policy=self.space.dense(), seed=0, fidelity=fidelity, target=self.budget.target,
            limit=self.limit, rules=self.space.rules, cost=self.cost, scoring=self.scoring,
            objectives=self.objectives,
            dense_latency_ms=self.dense["latency_ms"] if self.budget.target == "latency" and self.budget.fraction is not None else None,
        )


def default_rules_name(model: str) -> str:
    if model.split(":")[0] in {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110"}:
        return "cifar_resnet"
    if model.startswith("mobilenetv2"):
        return "mobilenet"
    if model.startswith("torchvision:"):
        return "torchvision"
    return "default"


def default_rules_for(model: Any) -> str:
    """The search-space rules of a live model (``autoprune.search(model)``), by its class as
    ``default_rules_name`` goes by the spec: the same model searches the same space either way."""
    kind = type(model)
    if kind.__module__.startswith("autoprune.models.cifar_resnet"):
        return "cifar_resnet"
    if kind.__module__.startswith("autoprune.models.mobilenet"):
        return "mobilenet"
    if kind.__module__.startswith("torchvision.models"):
        return "torchvision"
    return "default"


def resolve_rules(settings: SearchSettings) -> SpaceRules:
    rules = load_rules(settings.space or default_rules_name(settings.model))
    return rules.with_granularity(settings.granularity)


def run_dir_for(settings: SearchSettings) -> Path:
    from autoprune.settings import default_run_dir

    return Path(settings.run_dir) if settings.run_dir else default_run_dir(settings)


# Files a finished (or running) search leaves in its run directory: a new search never writes over them.
RUN_FILES = ("study.db", "settings.yaml", "policy.yaml", "model.pt", "summary.json", "report.md")
# Below this many validation images, accuracies of candidates differ by noise more than by merit.
MIN_VAL_IMAGES = 300


def in_ray_job() -> bool:
    """Whether this process is a ``ray job submit`` entrypoint (Ray sets the job's config for it)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def preflight(settings: SearchSettings) -> None:
    """Checks of the run directory and the storage, before any data is read or model trained:
    ``--run-dir`` must be (or become) a directory, a new search must not write over an earlier
    one, and ``--resume`` needs the study it continues."""
    from autoprune.study import study_exists

    run_dir = run_dir_for(settings)
    in_job = in_ray_job()
    for flag, path in (("--run-dir", run_dir), ("--cache-dir", settings.cache_dir)):
        if in_job and path is not None and not Path(path).expanduser().is_absolute():
            raise UserError(f"{flag} {path}: this search runs as a Ray job, in a temporary copy of the working "
                            f"directory ({Path.cwd()}) that Ray deletes later; give {flag} an absolute path, on "
                            "storage every node sees when the cluster has several machines (docs/cluster.md)")
    for where in (run_dir, *run_dir.parents):
        if where.exists():
            if not where.is_dir():
                raise UserError(f"--run-dir {run_dir}: {where} is an existing file, not a directory")
            break
    storage = settings.storage or default_storage(run_dir)
    local_db = not settings.storage and not (run_dir / "study.db").exists()
    existing = False if local_db else study_exists(storage, settings.study_name)
    if settings.resume and not existing:
        raise UserError(f"--resume: no study {settings.study_name!r} in {storage}")
    if settings.resume:
        check_resumable(storage, settings)
    if not settings.resume:
        if existing:
            raise UserError(f"study {settings.study_name!r} already exists in {storage}; pass --resume to continue it "
                            "or choose another --run-dir/--study-name")
        earlier = [name for name in RUN_FILES if (run_dir / name).exists()]
        if earlier:
            raise UserError(f"--run-dir {run_dir} holds an earlier run ({', '.join(earlier)}); pass --resume to "
                            "continue it, or choose another --run-dir")


def check_resumable(storage: str, settings: SearchSettings) -> None:
    """Refuse to resume a study with another target, budget, model or data (its trials were judged
    against those), before any work; ``Ledger.open`` checks the same for Python callers."""
    import optuna

    from autoprune.study import RESUME_KEYS, open_storage, resume_value

    attrs = optuna.load_study(study_name=settings.study_name, storage=open_storage(storage)).user_attrs
    now_values = resume_values(settings)
    for key in RESUME_KEYS:
        before, now = attrs.get(key), now_values[key]
        if before is not None and resume_value(key, before) != now:
            raise UserError(f"--resume: study {settings.study_name!r} was started with {key} {before!r}, not {now!r}; "
                            f"resume it with --{key} {before}, or start a new study")


def resume_values(settings: SearchSettings) -> dict[str, Any]:
    """What a resumed study must have been started with (``RESUME_KEYS``), as its attributes record it."""
    return {"target": settings.effective_target, "budget": settings.budget_text, "model": settings.model,
            "data": absolute_data_spec(settings.data), "objectives": settings.objectives or ""}


def build_problem(settings: SearchSettings, *, log=print, task: Task | None = None,
                  evaluate: Callable[[Any], float] | None = None, finetune: Callable[..., Any] | None = None) -> Problem:
    """Load the task (or take ``task``, built from a Python caller's live model or datasets), build
    the space, measure the dense model and check the budget is reachable. ``evaluate`` and
    ``finetune`` replace val accuracy and distillation in every trial (``ScoringConfig``)."""
    budget = parse_budget(settings.budget_text, settings.effective_target)
    objectives = parse_objectives(settings.objectives) if settings.objectives else ()
    parse_fidelity(settings.fidelity)
    if settings.trials < 1:
        raise UserError(f"--trials must be at least 1, got {settings.trials}")
    if settings.workers is not None and settings.workers < 1:
        raise UserError(f"--workers must be at least 1, got {settings.workers}")
    if settings.latency_repeats < 1 or settings.latency_warmup < 0:
        raise UserError(f"--latency-repeats must be at least 1 and --latency-warmup at least 0, "
                        f"got {settings.latency_repeats} and {settings.latency_warmup}")
    rules = resolve_rules(settings)
    if task is not None:
        recipe = task.recipe
    else:
        recipe = TaskRecipe(
            model=settings.model, data=absolute_data_spec(settings.data),
            checkpoint=str(Path(settings.checkpoint).expanduser().resolve()) if settings.checkpoint else None,
            image_size=settings.image_size,
            seed=settings.seed, cache_dir=settings.cache_dir, dense_epochs=settings.dense_epochs,
            train_limit=settings.train_limit, val_limit=settings.val_limit,
        )
        task = load_task(recipe, progress=True, device=settings.device)
    if len(task.data.val) < MIN_VAL_IMAGES:
        log(f"warning: the validation split has {len(task.data.val)} images (fewer than {MIN_VAL_IMAGES}); "
            "candidates' accuracies will differ by noise as much as by merit")
    space = SearchSpace.from_model(task.model, task.example_inputs(), rules)
    cost = CostSettings(task.input_shape, batch_size=settings.latency_batch, threads=settings.latency_threads,
                        warmup=settings.latency_warmup, repeats=settings.latency_repeats, device=settings.latency_device)
    if settings.latency_table:
        cost = table_cost(settings.latency_table, task.input_shape, cost, log)
    dense = measure_costs(task.model, cost, latency=False)
    dense["latency_ms"] = steady_latency(task.model, cost)  # a fraction budget's limit derives from it
    limit = budget.limit(dense[budget.metric])
    threads = settings.threads or max(1, (os.cpu_count() or 1) // (settings.workers or 1))
    scoring = ScoringConfig(
        criterion=settings.criterion,
        distill=DistillConfig(lr=settings.lr, feature_weight=settings.feature_distill),
        final_steps=settings.final_steps,
        threads=threads,
        device=settings.device,
        evaluate=evaluate,
        finetune=finetune,
    )
    floor_model, _ = slim(task, space, space.most_pruned(), settings.criterion, settings.seed)
    if budget.target == "latency" and budget.fraction is not None:
        # judged as trials are, on the ratio to the dense model timed alongside: two readings
        # taken apart can differ by more than the margin on a busy machine
        floor = paired_latency(floor_model, task.model, cost)[1] * dense["latency_ms"]
        if floor > limit and cost.table is None:  # refusing takes more evidence: a busy spell can bias three rounds
            log(f"the most pruned policy read {floor / dense['latency_ms']:.2f} of dense, over the budget; reading it again")
            floor = paired_latency(floor_model, task.model, cost, rounds=9)[1] * dense["latency_ms"]
    elif budget.target == "latency":
        floor = steady_latency(floor_model, cost)
    else:
        floor = measure_costs(floor_model, cost, latency=False)[budget.metric]
    if floor > limit:
        raise UserError(
            f"budget {settings.budget_text} ({format_metric(budget.metric, limit)}) cannot be met: the most pruned "
            f"policy in the space reaches {format_metric(budget.metric, floor)} "
            f"({floor / dense[budget.metric]:.2f} of dense, {cost.describe()}); "
            f"use a budget of at least {floor / dense[budget.metric]:.2f}"
            + (", a larger --latency-batch, or wider ratio choices" if budget.target == "latency" else "")
        )
    log(
        f"dense {settings.model}: val {task.dense_val_accuracy:.4f}, test {task.dense_test_accuracy:.4f}; "
        f"{format_metric('macs', dense['macs'])} MACs, {format_metric('params', dense['params'])} params, "
        f"{dense['latency_ms']:.2f} ms ({cost.describe()})"
    )
    size = f"{len(space.slots)} slots, {len(space.variables)} variables, {space.size():.3g} policies"
    reach = f"most pruned policy reaches {floor / dense[budget.metric]:.2f}"
    if objectives:
        bound = ("no budget" if budget.text == NO_BUDGET else
                 f"within {budget.target} <= {format_metric(budget.metric, limit)} ({limit / dense[budget.metric]:.2f} of dense)")
        log(f"objectives: the front of val accuracy against {', '.join(objectives)}, {bound}; {reach}; {size}")
    else:
        log(f"budget: {budget.target} <= {format_metric(budget.metric, limit)} "
            f"({limit / dense[budget.metric]:.2f} of dense; {reach}); {size}")
    return Problem(settings, recipe, task, space, cost, budget, dense, limit, floor, scoring, run_dir_for(settings),
                   objectives)


def table_cost(path: str, input_shape: tuple[int, ...], cost: CostSettings, log: Callable[[str], None]) -> CostSettings:
    """The cost settings of a run whose latency comes from a deploy device's table: its batch and threads."""
    from autoprune.costs.table import load_device_table

    table = load_device_table(path)
    table.check(input_shape)
    log(f"latency: {table.describe()} at batch {table.batch_size}, {table.threads} thread(s); nothing is timed "
        "here, so --latency-device, --latency-batch and --latency-threads do not apply")
    return dataclasses.replace(cost, batch_size=table.batch_size, threads=table.threads,
                               table=str(Path(path).expanduser().resolve()))


def search_context(problem: Problem) -> SearchContext:
    """The searcher's view, with a cached cost oracle that builds and measures policies, and a
    cheap estimate (latency lookup table, or analytic MACs/params) built on its first use."""
    cache: dict[Any, float] = {}
    task, space, settings = problem.task, problem.space, problem.settings

    def cost_of(policy: Policy) -> float:
        key = policy_key(policy)
        if key not in cache:
            model, _ = slim(task, space, policy, settings.criterion, settings.seed)
            cache[key] = measure_costs(model, problem.cost, latency=problem.budget.target == "latency")[problem.metric]
        return cache[key]

    estimator: list[Any] = []

    def raw_estimate(policy: Policy) -> float | None:
        if not estimator:
            from autoprune.costs.lut import AnalyticEstimate, build_lut, record_layers
            from autoprune.task import cache_dir

            if problem.cost.table is not None and problem.budget.target == "latency":
                # the deploy device's table: its sums, no profiling here (a MACs or params budget
                # is still estimated from counts: the table's milliseconds are not its units)
                from autoprune.costs.layers import PolicyShapes
                from autoprune.costs.table import load_device_table

                table = load_device_table(problem.cost.table)
                shapes = PolicyShapes(record_layers(task.model, space, task.example_inputs(), table.batch_size), space)
                estimator.append(lambda policy: table.estimate_shapes(shapes.of(policy)))
            elif problem.budget.target == "latency":
                lut = build_lut(
                    task.model, space, task.example_inputs(), problem.cost, cache_dir=cache_dir(problem.recipe),
                    seed=settings.seed, log=lambda message: print(message, file=sys.stderr),
                )
                if problem.budget.fraction is not None:
                    # A fraction budget is judged on the ratio to the dense model timed alongside,
                    # in units of this run's dense reading; the table, profiled at another time,
                    # is read the same way, so the screen does not move with that reading's drift.
                    scale = problem.dense["latency_ms"] / lut(space.dense())
                    estimator.append(lambda policy: lut(policy) * scale)
                else:
                    estimator.append(lut)
            else:
                layers = record_layers(task.model, space, task.example_inputs(), 1)
                estimator.append(AnalyticEstimate(layers, space, problem.metric, problem.dense[problem.metric]))
        return estimator[0](policy)

    # Latency drifts with load, so the table is rescaled by what trials measure; counts do not.
    estimate = TrackedEstimate(raw_estimate, limit=problem.limit) if problem.budget.target == "latency" else raw_estimate

    def calibration(n: int) -> torch.Tensor:
        train = task.data.train.subset(min(n, len(task.data.train)), settings.seed)
        return task.data.normalize(train.images)

    return SearchContext(
        space=space, target=problem.budget.target, metric=problem.metric, limit=problem.limit,
        dense_cost=problem.dense[problem.metric], seed=settings.seed, cost_of=cost_of, estimate=estimate,
        model=task.model, example_inputs=task.example_inputs(), run_dir=problem.run_dir, trials=settings.trials,
        calibration=calibration, objectives=problem.objectives, dense_costs=dict(problem.dense),
    )


def open_ledger(problem: Problem) -> Ledger:
    settings = problem.settings
    problem.run_dir.mkdir(parents=True, exist_ok=True)
    storage = settings.storage or default_storage(problem.run_dir)
    attrs = {**resume_values(settings), "limit": problem.limit, "metric": problem.metric, "dense": problem.dense,
             "cost_settings": problem.cost.describe()}
    ledger = Ledger.open(problem.space, storage=storage, study_name=settings.study_name, resume=settings.resume,
                         attrs=attrs, objectives=problem.objectives)
    if ledger.objectives != problem.objectives:  # a study from before objectives were recorded
        raise UserError(f"--resume: study {settings.study_name!r} has objectives {ledger.objectives or 'accuracy'}, "
                        f"not {problem.objectives or 'accuracy'}; resume it with the objectives it was started with")
    return ledger


def save_settings(problem: Problem) -> None:
    """``settings.yaml``, what ``--resume`` continues from, with its files named absolutely."""
    settings = portable_settings(problem.settings)
    write_text_atomic(problem.run_dir / "settings.yaml", yaml.safe_dump(settings.to_dict(), sort_keys=False))


def portable_settings(settings: SearchSettings) -> SearchSettings:
    """``settings`` with every file it names absolute (checkpoint, data directory, latency table,
    a space file, the cache), so a run resumed from another working directory reads the same ones."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    space = settings.space
    if space and Path(space).suffix and Path(space).exists():  # a bare name is one of search_spaces/
        space = absolute(space)
    return settings.replace(checkpoint=absolute(settings.checkpoint), latency_table=absolute(settings.latency_table),
                            data=absolute_data_spec(settings.data), space=space, cache_dir=absolute(settings.cache_dir))


def make_run_searcher(problem: Problem):
    """The run's searcher, set up on its context. Under a latency budget the cost estimate is
    built here, before the search loop: the lookup table is profiled and calibrated once per
    device (seconds), which would otherwise land in the first ask, inside the timed search."""
    searcher = make_searcher(problem.settings.searcher, agent=problem.settings.agent,
                             algorithm=problem.settings.algorithm, probe_fidelity=problem.settings.probe_fidelity)
    context = search_context(problem)
    if problem.budget.target == "latency" and context.estimate is not None:
        context.estimate(problem.space.dense())
    searcher.setup(context)
    return searcher
