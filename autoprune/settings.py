"""Search settings: one frozen record, filled from CLI flags or a study recipe (YAML).

YAML lives only at this edge: ``load_study_recipe`` reads a file with ``yaml.safe_load`` and
names the bad key and the file in every error.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autoprune.errors import UserError
from autoprune.name_checks import NAME_CHECKS
from autoprune.yaml_files import read_yaml_mapping


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search run (see ``autoprune search --help`` for each field)."""

    target: str = "latency"
    budget: str | None = None  # see ``budget_text``
    objectives: str | None = None
    model: str = "resnet20"
    data: str = "digits"
    checkpoint: str | None = None
    image_size: int | None = None
    space: str | None = None
    granularity: str = "slot"
    criterion: str = "magnitude"
    searcher: str = "tpe"
    agent: str = "ddpg"
    algorithm: str = "nsga2"
    trials: int = 20
    fidelity: str = "kd:100"
    rungs: str | None = None
    probe_fidelity: str = "bn"
    final_steps: int = 600
    feature_distill: float = 0.0
    lr: float = 0.01
    latency_batch: int = 32
    latency_threads: int = 1
    latency_warmup: int = 10
    latency_repeats: int = 30
    latency_device: str = "cpu"
    latency_table: str | None = None
    executor: str = "inline"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    trial_cpus: float | None = None
    trial_gpus: float | None = None
    device: str = "auto"
    seed: int = 0
    run_dir: str | None = None
    storage: str | None = None
    study_name: str | None = None
    resume: bool = False
    cache_dir: str | None = None
    dense_epochs: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    time_limit: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):  # Python callers get the same checks as flags and recipe keys
            object.__setattr__(self, f.name, check_value(f.name, getattr(self, f.name), "SearchSettings"))
        check_together(self.to_dict(), "SearchSettings")

    @property
    def budget_text(self) -> str:
        """The budget as given, else the default: 0.5 of dense, or for an ``--objectives``
        search none at all (its front spans the space; a given ``--budget`` bounds it)."""
        if self.budget is not None:
            return self.budget
        return "none" if self.objectives else "0.5"

    @property
    def effective_target(self) -> str:
        """The constrained target: ``target``, except that an ``--objectives`` search without a
        budget constrains nothing and takes its first cost objective as its target."""
        if self.objectives and self.budget is None:
            from autoprune.objectives import objectives_target, parse_objectives

            return objectives_target(parse_objectives(self.objectives))
        return self.target

    def replace(self, **changes: Any) -> SearchSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(SearchSettings)}


# Ranges of numeric settings: (lowest allowed value, whether the bound itself is allowed).
# Anything outside is refused where it enters, before any data is loaded or model trained.
MINIMUM: dict[str, tuple[float, bool]] = {
    "trials": (1, True), "workers": (1, True), "threads": (1, True), "final_steps": (0, True),
    "latency_batch": (1, True), "latency_threads": (1, True), "latency_warmup": (0, True),
    "latency_repeats": (1, True), "seed": (0, True), "image_size": (4, True), "dense_epochs": (1, True),
    "train_limit": (1, True), "val_limit": (1, True), "feature_distill": (0.0, True),
    "lr": (0.0, False), "time_limit": (0.0, False), "trial_cpus": (0.0, False), "trial_gpus": (0.0, True),
}
# Names checked here because a typo would otherwise surface only after the dense model is built;
# tests/test_reliability.py checks that they match the registries they mirror.
CHOICES: dict[str, tuple[str, ...]] = {
    "granularity": ("slot", "stage"),
    "criterion": ("magnitude", "taylor", "bn"),
    "executor": ("inline", "processes", "ray"),
    "agent": ("ddpg", "td3", "sac"),
    "algorithm": ("nsga2", "nsga3"),
}
NON_EMPTY = ("target", "budget", "objectives", "model", "data", "searcher", "fidelity", "probe_fidelity", "study_name")
def check_together(values: dict[str, Any], where: str) -> None:
    """Checks of one setting against another: the budget's syntax and unit for its target (none
    only with objectives), whether the searcher can search several objectives, and Ray's
    per-trial resources against the executor and the devices."""
    from autoprune.objectives import NO_BUDGET, parse_budget

    budget, objectives = values.get("budget"), values.get("objectives")
    if budget is not None:
        if str(budget).strip() == NO_BUDGET and not objectives:
            raise UserError(f"{where}: {_label('budget', where)} none needs {_label('objectives', where)} "
                            "(a search for one policy needs a budget)")
        try:
            parse_budget(budget, values["target"])
        except UserError as exc:
            raise UserError(f"{where}: {_label('budget', where)}: {exc}") from None
    if objectives:
        from autoprune.searchers import multi_objective_problem

        problem = multi_objective_problem(str(values.get("searcher", "tpe")))
        if problem:
            raise UserError(f"{where}: {_label('searcher', where)}: {problem}")
    problem = _resources_problem(values, where)
    if problem:
        raise UserError(f"{where}: {problem}")


def _resources_problem(values: dict[str, Any], where: str) -> str:
    cpus, gpus = values.get("trial_cpus"), values.get("trial_gpus")
    given = [key for key in ("trial_cpus", "trial_gpus") if values.get(key) is not None]
    if given and values.get("executor") != "ray":
        return f"{_label(given[0], where)} is what Ray reserves per trial: it only applies to the ray executor"
    for key, value in (("trial_cpus", cpus), ("trial_gpus", gpus)):
        if value is not None and value > 1 and value != int(value):
            return f"{_label(key, where)} {value:g}: Ray reserves a fraction below 1 or a whole number"
    devices = (values.get("device", "auto"), values.get("latency_device", "cpu"))
    if gpus and all(d == "cpu" for d in devices):
        return (f"{_label('trial_gpus', where)} {gpus:g} reserves GPUs for trials that train and read latency on "
                f"the CPU; use {_label('device', where)} auto or cuda, or leave the GPUs to others")
    if values.get("executor") == "ray":
        for key, spec in zip(("device", "latency_device"), devices, strict=True):
            if spec.startswith("cuda:") and spec != "cuda:0":
                return (f"{_label(key, where)} {spec}: under the ray executor each trial sees only the GPUs Ray "
                        f"gives it (as cuda:0); use {_label(key, where)} cuda")
    return ""


def _label(key: str, where: str) -> str:
    return f"--{key.replace('_', '-')}" if where == "command line" else f"key {key!r}"


def check_value(key: str, value: Any, where: str) -> Any:
    """``value`` for setting ``key`` with its type and range checked (ints become floats where a
    float is expected, numbers become strings where a string is); a one-line UserError otherwise."""
    given = value
    kind = str(FIELDS[key].type)
    optional = "None" in kind
    base = kind.split("|")[0].strip()
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: {_label(key, where)} needs a value")

    def bad(expected: str) -> UserError:
        return UserError(f"{where}: {_label(key, where)} must be {expected}, got {given!r}")

    if base == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if base == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise bad("a string")
        if key in NON_EMPTY and not value.strip():
            raise bad("a non-empty string")
        if key in CHOICES and value not in CHOICES[key]:
            raise bad("one of " + ", ".join(CHOICES[key]))
        problem = NAME_CHECKS[key](value) if key in NAME_CHECKS else None
        if problem:
            raise UserError(f"{where}: {_label(key, where)}: {problem}")
        return value
    if base in ("int", "float"):
        number_ok = isinstance(value, int) or (base == "float" and isinstance(value, float))
        if isinstance(value, bool) or not number_ok:
            raise bad(("an integer" if base == "int" else "a number") + _range_text(key, optional))
        if base == "float":
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise bad("a finite number" + _range_text(key, optional))
        low, inclusive = MINIMUM.get(key, (None, True))
        if low is not None and (value < low or (value == low and not inclusive)):
            raise bad(("an integer" if base == "int" else "a number") + _range_text(key, optional))
        return value
    return value


def _range_text(key: str, optional: bool) -> str:
    low, inclusive = MINIMUM.get(key, (None, True))
    text = "" if low is None else f" {'>=' if inclusive else '>'} {low:g}"
    return text + (" (or left out)" if optional else "")


def check_values(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Each key, type, range and name of a mapping (from YAML or flags) checked on its own."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise UserError(f"{where}: unknown key {key!r} (see `autoprune search --help` for the options)")
        clean[key] = check_value(key, value, where)
    return clean


def settings_from_dict(data: dict[str, Any], where: str) -> SearchSettings:
    """Validate keys, types, ranges and names of a mapping (from YAML or flags) and build settings."""
    clean = check_values(data, where)
    check_together({**{k: f.default for k, f in FIELDS.items()}, **clean}, where)
    return SearchSettings(**clean)


def default_run_dir(settings: SearchSettings) -> Path:
    """``runs/<target>-<budget>-<searcher>-<time>``, where a run goes without ``--run-dir``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    what = f"front-{settings.objectives.replace(',', '-')}" if settings.objectives else f"{settings.target}-{settings.budget_text}"
    return Path("runs") / f"{what}-{settings.searcher}-{stamp}"


def resolve_run(settings: SearchSettings) -> SearchSettings:
    """``settings`` with the run directory and the study's name filled in, once, before any work.

    The study is named after the run directory (``runs/macs-0.5-tpe-20250101-120000`` holds study
    ``macs-0.5-tpe-20250101-120000``); resumed without ``--study-name``, it is the study of that
    name in the storage, else the only one there (runs made before studies were named after their
    directory hold one called ``autoprune``).
    """
    run_dir = Path(settings.run_dir) if settings.run_dir else default_run_dir(settings)
    name = settings.study_name
    if name is None:
        from autoprune.storage import run_study_name

        name = run_study_name(run_dir, settings.storage, resume=settings.resume)
    return settings.replace(run_dir=str(run_dir), study_name=name)


def load_study_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping in a study recipe file (``studies/*.yaml``), each value checked, with the file's
    name in errors; settings that go together (a budget and its target's unit) are checked once
    flags are merged in, as a recipe may leave one of them to the command line."""
    path = Path(path)
    data = read_yaml_mapping(path, "study recipe")
    data.pop("description", None)
    check_values(data, str(path))
    return data
