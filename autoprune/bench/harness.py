"""The benchmark harness behind ``autoprune bench``: every searcher on the same reference tasks.

For each study recipe (``studies/bench_*.yaml``) the task is built once (data split and dense
model fixed by the recipe's seed), then every searcher runs once per search seed in two views:
the same number of scored trials, and the same wall-clock budget. Every policy found gets the
same final fine-tune and one test-split evaluation (``finalize``). All studies go into one
Optuna SQLite storage per bench run, so ``optuna-dashboard`` shows them side by side.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune.atomic import write_text_atomic
from autoprune.bench.dense import read_sidecar, train_command_for
from autoprune.bench.fidelity import CHEAP
from autoprune.bench.finetune_curve import DEFAULT_STEPS
from autoprune.errors import UserError
from autoprune.settings import SearchSettings, load_study_recipe, settings_from_dict

DEFAULT_DATA_ROOT = "../shared/data/cifar10"
DEFAULT_STUDIES = (
    "studies/bench_cifar10_resnet20_latency50.yaml",
    "studies/bench_cifar10_resnet20_latency30.yaml",
    "studies/bench_cifar10_mobilenetv2_macs50.yaml",
)
SECTIONS = ("trials", "time", "fidelity", "finetune", "throughput")
EXECUTORS = ("inline", "processes", "ray")
# --quick: tiny subsets, few and cheap trials; flags and --set still override these.
QUICK: dict[str, Any] = {
    "trials": 3, "fidelity": "kd:3", "final_steps": 10, "train_limit": 500, "val_limit": 200, "dense_epochs": 1,
    "time_limit": None,  # a recipe's equal-time budget is for its full-scale trials
}
QUICK_TIME_LIMIT_S = 10.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """What one ``autoprune bench`` invocation runs (see ``autoprune bench --help``)."""

    data_root: Path
    studies: tuple[Path, ...]
    searchers: tuple[str, ...]
    seeds: int
    quick: bool = False
    trials: int | None = None
    time_limit: float | None = None
    out: Path = Path("BENCHMARKS.md")
    runs_dir: Path = Path("benchmarks/runs")
    figures_dir: Path = Path("benchmarks/figures")
    sections: tuple[str, ...] = SECTIONS
    executors: tuple[str, ...] = EXECUTORS
    fidelity_policies: int = 30
    fidelities: tuple[str, ...] = CHEAP
    finetune_steps: tuple[int, ...] = DEFAULT_STEPS
    throughput_trials: int = 6
    overrides: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    command: str = "autoprune bench"
    resume: Path | None = None  # an interrupted run directory whose finished units are kept
    redo: tuple[tuple[str, int], ...] = ()  # (searcher, seed) units of ``resume`` to drop and run again


@dataclass
class TaskSetup:
    """A reference task: its recipe, the settings used, the built problem (or why it failed)."""

    name: str
    study: str
    settings: SearchSettings
    dense: dict[str, Any]
    problem: Any = None
    error: str | None = None


@dataclass
class RunResult:
    """One search run of one searcher with one seed in one view, plain data for JSON."""

    task: str
    view: str
    searcher: str
    seed: int
    study_name: str
    run_dir: str
    scored: int = 0
    probes: int = 0  # scored at a cheaper probe fidelity (knapsack's scan), not counted in ``scored``
    rejected: int = 0
    stopped: str = ""
    wall_s: float = 0.0
    loop_s: float = 0.0
    finetune_s: float = 0.0
    evaluate_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    curve: list[float | None] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    hypervolume: float = 0.0
    search_accuracy: float | None = None
    final_val: float | None = None
    final_test: float | None = None
    final_cost: float | None = None
    limit: float = math.nan
    within_budget: bool | None = None
    # With a latency table (estimates judge the search and the pick): the export's latency measured
    # on this machine, paired with the dense model's, over the limit, so the report shows how far the
    # table's verdict holds on the machine itself.
    measured_fraction: float | None = None
    error: str | None = None
    code: str = ""  # the autoprune commit that ran it (``code_version``), so a merged report can say
    # The machine's 15-minute load average as the search ended: the equal-time view assumes the
    # bench has the machine to itself, and a search that shared it scored fewer trials in its time.
    load: float | None = None
    # A portfolio's members: name -> {"trials", "scored", "trial_share", "time_share"} of this view's
    # search (``report.member_rows``), and the member whose trial was picked; empty otherwise.
    members: dict[str, dict[str, float]] = field(default_factory=dict)
    pick_member: str = ""


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict[str, Any]
    tasks: list[TaskSetup]
    runs: list[RunResult]
    time_limits: dict[str, float]
    fidelity: dict[str, Any] | None
    throughput: list[dict[str, Any]]
    root: Path
    storage: str
    elapsed_s: float
    finetune: dict[str, Any] | None = None
    # A report merged from several runs (``--render A B``): the runs, and per section ("dense",
    # "task:<name>", "fidelity", "finetune", "throughput") the command and machine behind it.
    parts: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


def resolve_data_root(given: str | None) -> Path:
    """The CIFAR-10 ImageFolder tree to use; a UserError (exit 2) says how to point at one."""
    root = Path(given if given is not None else DEFAULT_DATA_ROOT).expanduser()
    hint = ("pass --data-root DIR pointing at a CIFAR-10 ImageFolder tree (DIR/train/<class>/*.jpg and "
            "DIR/test/<class>/*.jpg)")
    if not root.is_dir():
        where = "--data-root" if given is not None else "the default data root"
        raise UserError(f"{where} {root} does not exist; {hint}")
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise UserError(f"{root} has no train/ and test/ folders; {hint}")
    return root


def resolve_studies(paths: list[str] | None) -> tuple[Path, ...]:
    """Recipe paths as given, or the default bench recipes (looked up here, then in the repository)."""
    if paths:
        return tuple(Path(p) for p in paths)
    repo = Path(__file__).resolve().parents[2]
    out = []
    for rel in DEFAULT_STUDIES:
        here = Path(rel)
        out.append(here if here.is_file() else repo / rel)
    return tuple(out)


def task_name(study: Path) -> str:
    stem = study.stem
    return stem[len("bench_"):] if stem.startswith("bench_") else stem


def task_settings(study: Path, cfg: BenchConfig, *, quick: bool | None = None) -> SearchSettings:
    """Recipe, then the quick profile, then --trials and --set, then the data root."""
    data = load_study_recipe(study)
    if data.get("rungs"):
        raise UserError(f"{study}: bench recipes score every trial at one fidelity; remove `rungs`")
    if cfg.quick if quick is None else quick:
        data.update(QUICK)
    if cfg.trials is not None:
        data["trials"] = cfg.trials
    data.update(cfg.overrides)
    data["data"] = f"imagefolder:{cfg.data_root}"
    if cfg.cache_dir:
        data["cache_dir"] = cfg.cache_dir
    return settings_from_dict(data, str(study))


def dense_provenance(settings: SearchSettings, full: SearchSettings, quick: bool,
                     log: Log) -> tuple[SearchSettings, dict[str, Any]]:
    """Where the dense weights come from; a missing checkpoint is an error outside quick mode.
    ``full`` is the recipe without the quick profile: its training command is the one to run."""
    ckpt = settings.checkpoint
    if ckpt and Path(ckpt).is_file():
        side = read_sidecar(Path(ckpt))
        return settings, {"source": "checkpoint", "checkpoint": ckpt, "command": side.get("command"),
                          "trained": side}
    if ckpt:
        cmd = train_command_for(full, ckpt)
        if not quick:
            raise UserError(f"dense weights {ckpt} do not exist; train them once with: {cmd}")
        log(f"note: {ckpt} is missing; quick mode trains a throwaway dense model instead (make it with: {cmd})")
    settings = settings.replace(checkpoint=None)
    return settings, {"source": "harness", "checkpoint": None, "command": None,
                      "epochs": settings.dense_epochs, "train_limit": settings.train_limit}


def stage_tasks(cfg: BenchConfig, log: Log) -> list[TaskSetup]:
    """Every recipe read and checked (settings, dense weights) before any work starts."""
    staged = []
    for study in cfg.studies:
        settings = task_settings(study, cfg)
        full = task_settings(study, cfg, quick=False)
        settings, dense = dense_provenance(settings, full, cfg.quick, log)
        staged.append(TaskSetup(task_name(study), str(study), settings, dense))
    names = [t.name for t in staged]
    if len(set(names)) != len(names):
        raise UserError(f"two bench recipes share a task name ({', '.join(names)}); rename one file")
    return staged


def build_tasks(staged: list[TaskSetup], log: Log) -> list[TaskSetup]:
    """Build each task's problem once; a task whose budget cannot be met is kept with its error."""
    from autoprune.pipeline import build_problem

    for task in staged:
        log(f"== task {task.name}: {task.settings.model}, {task.settings.target} budget {task.settings.budget}")
        try:
            task.problem = build_problem(task.settings.replace(searcher="random"), log=log)
        except UserError as exc:
            task.error = str(exc)
            log(f"task {task.name} skipped: {exc}")
            continue
        p = task.problem
        _warm_estimate(p)
        task.dense.update(val_accuracy=p.task.dense_val_accuracy, test_accuracy=p.task.dense_test_accuracy,
                          costs=dict(p.dense), limit=p.limit, metric=p.metric, floor=p.floor,
                          cost_settings=p.cost.describe(), test_images=len(p.task.data.test),
                          val_images=len(p.task.data.val), train_images=len(p.task.data.train))
    return staged


def _warm_estimate(problem) -> None:
    """Build the cost estimate (the latency lookup table is profiled once and cached on disk) before
    any timed search, so the first searcher does not pay for it."""
    from autoprune.pipeline import search_context

    search_context(problem).estimate(problem.space.dense())


def run_bench(cfg: BenchConfig, log: Log = print) -> BenchResult:
    """Run every section the config asks for and write BENCHMARKS.md, figures and results.json."""
    from autoprune.bench.fidelity import fidelity_study, study_done
    from autoprune.bench.finetune_curve import finetune_curve
    from autoprune.bench.machine import machine_info
    from autoprune.bench.markdown import write_markdown
    from autoprune.bench.throughput import throughput_study
    from autoprune.bench.views import run_views

    started = time.perf_counter()
    staged = stage_tasks(cfg, log)
    machine = machine_info()
    earlier = _earlier_result(cfg, log)
    root = cfg.resume or cfg.runs_dir / time.strftime("%Y%m%d-%H%M%S")
    for n in range(2, 100):  # two benches started in the same second get their own directories
        if cfg.resume or not root.exists():
            break
        root = root.with_name(f"{root.name.split('.')[0]}.{n}")
    root.mkdir(parents=True, exist_ok=cfg.resume is not None)
    ignore = cfg.runs_dir / ".gitignore"
    if not ignore.exists():  # run directories are large and local: keep them out of git
        ignore.write_text("*\n")
    storage = f"sqlite:///{(root / 'studies.db').resolve()}"
    log(f"bench run directory: {root}  (optuna-dashboard {storage})")
    tasks = build_tasks(staged, log)
    ok = [t for t in tasks if t.problem is not None]
    runs: list[RunResult] = list(earlier.runs) if earlier else []
    time_limits: dict[str, float] = dict(earlier.time_limits) if earlier else {}

    # The short sections first: a bench stopped during the long views still reports them.
    fidelity: dict[str, Any] | None = earlier.fidelity if earlier else None
    finetune: dict[str, Any] | None = earlier.finetune if earlier else None
    throughput: list[dict[str, Any]] = list(earlier.throughput) if earlier else []
    spent_before = earlier.elapsed_s if earlier else 0.0  # a resumed run's time adds up over its invocations

    def save() -> BenchResult:
        """results.json with everything finished so far (the sections as they stand now)."""
        result = BenchResult(cfg, machine, tasks, runs, time_limits, fidelity, throughput, root, storage,
                             spent_before + time.perf_counter() - started, finetune)
        # atomic: a bench killed while saving keeps every unit it had (a resume reads this file)
        write_text_atomic(root / "results.json", json.dumps(to_json(result), indent=1, default=str))
        return result

    if "fidelity" in cfg.sections and ok and not study_done(
            fidelity, cfg.fidelity_policies, cfg.fidelities, ok[0].problem.settings.final_steps):

        def keep_study(study: dict[str, Any]) -> None:
            nonlocal fidelity
            fidelity = study
            save()

        fidelity = fidelity_study(ok[0], policies=cfg.fidelity_policies, cheap=cfg.fidelities, earlier=fidelity,
                                  on_row=keep_study, log=log)
    if "finetune" in cfg.sections and ok and _missing_lengths(finetune, cfg.finetune_steps):

        def keep(curve: dict[str, Any]) -> None:
            nonlocal finetune
            finetune = curve
            save()

        finetune = finetune_curve(ok[0], steps=cfg.finetune_steps, earlier=finetune, on_point=keep, log=log)
    if "throughput" in cfg.sections and ok and not throughput:
        throughput = throughput_study(ok[0], executors=cfg.executors, trials=cfg.throughput_trials,
                                      storage=storage, root=root, log=log)
    save()
    for task in ok:
        run_views(cfg, task, storage, root, runs, time_limits, log, on_run=save)
    result = save()
    write_markdown(result)
    log(f"wrote {cfg.out} ({result.elapsed_s:.0f} s)")
    return result


def _missing_lengths(curve: dict[str, Any] | None, steps: tuple[int, ...]) -> bool:
    """Whether the fine-tune curve still lacks one of ``steps`` (a curve that failed is not retried)."""
    return curve is None or not curve.get("error") and not set(steps) <= {p["steps"] for p in curve["points"]}


def _earlier_result(cfg: BenchConfig, log: Log) -> BenchResult | None:
    """What an interrupted run in ``cfg.resume`` finished; the same command must continue it."""
    if cfg.resume is None:
        return None
    from autoprune.bench.render import load_result
    from autoprune.cli import parser

    earlier = load_result(cfg.resume, parser())
    if cfg.redo:
        dropped = {(r.searcher, r.seed) for r in earlier.runs} & set(cfg.redo)
        earlier.runs = [r for r in earlier.runs if (r.searcher, r.seed) not in dropped]
        log(f"--redo: {len(dropped)} unit(s) dropped to run again: "
            + (", ".join(f"{name} seed {seed}" for name, seed in sorted(dropped)) or "none of them had finished"))
    done = {(r.task, r.searcher, r.seed) for r in earlier.runs}
    log(f"resuming {cfg.resume}: {len(done)} finished (task, searcher, seed) units kept"
        + (", the short sections kept where done" if earlier.fidelity or earlier.throughput or earlier.finetune else ""))
    return earlier


def code_version() -> str:
    """The git commit of the autoprune source that runs (``+`` when the tree has changes), or ''."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if dirty else "")


def to_json(result: BenchResult) -> dict[str, Any]:
    """Everything measured, without live objects (the problems), for results.json."""
    return {
        "command": result.config.command, "machine": result.machine, "storage": result.storage,
        "elapsed_s": result.elapsed_s, "time_limits": result.time_limits,
        "tasks": [{"name": t.name, "study": t.study, "settings": t.settings.to_dict(), "dense": t.dense,
                   "error": t.error} for t in result.tasks],
        "runs": [dataclasses.asdict(r) for r in result.runs],
        "fidelity": result.fidelity, "throughput": result.throughput, "finetune": result.finetune,
    }
