"""Reading the project's YAML files (rules, study recipes, policies) with one set of errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import UserError


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file, read with ``safe_load``; a UserError names the file."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data
