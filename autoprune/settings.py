"""Search settings: one frozen record, filled from CLI flags or a study recipe (YAML).

YAML lives only at this edge: ``load_study_recipe`` reads a file with ``yaml.safe_load`` and
names the bad key and the file in every error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autoprune.errors import UserError
from autoprune.yaml_files import read_yaml_mapping


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search run (see ``autoprune search --help`` for each field)."""

    target: str = "latency"
    budget: str = "0.5"
    model: str = "resnet20"
    data: str = "digits"
    checkpoint: str | None = None
    image_size: int | None = None
    space: str | None = None
    granularity: str = "slot"
    criterion: str = "magnitude"
    searcher: str = "tpe"
    trials: int = 20
    fidelity: str = "kd:100"
    rungs: str | None = None
    final_steps: int = 600
    feature_distill: float = 0.0
    lr: float = 0.01
    latency_batch: int = 32
    latency_threads: int = 1
    latency_warmup: int = 10
    latency_repeats: int = 30
    executor: str = "inline"
    workers: int = 1
    threads: int | None = None
    ray_address: str | None = None
    seed: int = 0
    run_dir: str | None = None
    storage: str | None = None
    study_name: str = "autoprune"
    resume: bool = False
    cache_dir: str | None = None
    dense_epochs: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    time_limit: float | None = None

    def replace(self, **changes: Any) -> SearchSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(SearchSettings)}


def settings_from_dict(data: dict[str, Any], where: str) -> SearchSettings:
    """Validate keys and types of a mapping (from YAML) and build settings."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise UserError(f"{where}: unknown key {key!r} (see `autoprune search --help` for the options)")
        default = FIELDS[key].default
        if value is not None and default is not None and not isinstance(value, type(default)):
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            elif isinstance(default, str) and isinstance(value, (int, float)):
                value = str(value)
            else:
                raise UserError(f"{where}: key {key!r} must be a {type(default).__name__}, got {value!r}")
        clean[key] = value
    return SearchSettings(**clean)


def load_study_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping in a study recipe file (``studies/*.yaml``); validated by ``settings_from_dict``."""
    path = Path(path)
    data = read_yaml_mapping(path, "study recipe")
    data.pop("description", None)
    settings_from_dict(data, str(path))  # validate early, with the file's name in errors
    return data
