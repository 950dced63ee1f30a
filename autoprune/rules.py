"""Search-space rules: which ratios each slot may take, channel rounding, frozen slots, stages.

Rules come from YAML files in ``search_spaces/`` (read with ``yaml.safe_load``) or are built in
Python. Unknown keys are errors that name the key and the file, so a typo never silently widens
the search.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoprune.errors import UserError
from autoprune.yaml_files import read_yaml_mapping

DEFAULT_RATIOS: tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(9))  # 0.0 .. 0.8
SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


@dataclass(frozen=True)
class SlotRule:
    """Choices for the slots whose names match ``pattern`` (fnmatch syntax)."""

    pattern: str
    ratios: tuple[float, ...] | None = None
    round_to: int | None = None


@dataclass(frozen=True)
class SpaceRules:
    """How a model's dependency groups become search variables.

    Attributes:
        ratios: ordered pruning ratios every slot may take (0.0 keeps the slot whole).
        round_to: kept widths are multiples of this (hardware-friendly widths; at least one block).
        frozen: fnmatch patterns of slot names that are never pruned.
        granularity: ``slot`` (one variable per dependency group) or ``stage`` (one width
            multiplier per stage, shared by its slots).
        stages: stage name -> fnmatch patterns of its slots; unnamed slots fall into a stage named
            after their module path (see ``SearchSpace``).
        overrides: per-pattern ratios/round_to, the last matching rule wins.
        name: where these rules came from, for reports.
    """

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    round_to: int = 1
    frozen: tuple[str, ...] = ()
    granularity: str = "slot"
    stages: tuple[tuple[str, tuple[str, ...]], ...] = ()
    overrides: tuple[SlotRule, ...] = field(default=())
    name: str = "default"

    def __post_init__(self) -> None:
        if self.granularity not in ("slot", "stage"):
            raise UserError(f"granularity must be 'slot' or 'stage', got {self.granularity!r}")
        _check_ratios(self.ratios, "ratios")
        if self.round_to < 1:
            raise UserError(f"round_to must be a positive integer, got {self.round_to}")

    def for_slot(self, slot_name: str) -> tuple[tuple[float, ...], int]:
        """The (ratios, round_to) that apply to one slot."""
        ratios, round_to = self.ratios, self.round_to
        for rule in self.overrides:
            if fnmatch.fnmatchcase(slot_name, rule.pattern):
                ratios = rule.ratios if rule.ratios is not None else ratios
                round_to = rule.round_to if rule.round_to is not None else round_to
        return ratios, round_to

    def is_frozen(self, slot_name: str) -> bool:
        return any(fnmatch.fnmatchcase(slot_name, p) for p in self.frozen)

    def stage_of(self, slot_name: str) -> str | None:
        for stage, patterns in self.stages:
            if any(fnmatch.fnmatchcase(slot_name, p) for p in patterns):
                return stage
        return None

    def with_granularity(self, granularity: str) -> SpaceRules:
        return replace(self, granularity=granularity)


def _check_ratios(ratios: tuple[float, ...], where: str) -> None:
    if not ratios:
        raise UserError(f"{where}: needs at least one ratio")
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise UserError(f"{where}: every ratio must be in [0, 1), got {list(ratios)}")
    if list(ratios) != sorted(set(ratios)):
        raise UserError(f"{where}: ratios must be strictly increasing, got {list(ratios)}")


def _parse_ratios(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, dict):
        unknown = set(value) - {"min", "max", "step"}
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected min, max, step)")
        try:
            lo, hi, step = float(value.get("min", 0.0)), float(value["max"]), float(value["step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: needs numeric 'max' and 'step' (and optional 'min')") from exc
        if step <= 0 or hi < lo:
            raise UserError(f"{where}: needs step > 0 and max >= min")
        n = int(round((hi - lo) / step))
        ratios = tuple(round(lo + i * step, 6) for i in range(n + 1))
    elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        ratios = tuple(float(v) for v in value)
    else:
        raise UserError(f"{where}: must be a list of numbers or {{min, max, step}}")
    _check_ratios(ratios, where)
    return ratios


_TOP_KEYS = {"ratios", "round_to", "frozen", "granularity", "stages", "overrides", "description"}


def load_rules(path: str | Path) -> SpaceRules:
    """Read rules from a YAML file; a bare name looks in the project's ``search_spaces/``."""
    path = Path(path)
    if not path.suffix and not path.exists():
        path = SPACES_DIR / f"{path}.yaml"
    return rules_from_dict(read_yaml_mapping(path, "search-space file"), str(path))


def rules_from_dict(data: dict[str, Any], where: str = "rules") -> SpaceRules:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    kwargs: dict[str, Any] = {"name": Path(where).stem}
    if "ratios" in data:
        kwargs["ratios"] = _parse_ratios(data["ratios"], f"{where}: ratios")
    if "round_to" in data:
        if not isinstance(data["round_to"], int) or data["round_to"] < 1:
            raise UserError(f"{where}: round_to must be a positive integer")
        kwargs["round_to"] = data["round_to"]
    if "frozen" in data:
        if not isinstance(data["frozen"], list) or not all(isinstance(p, str) for p in data["frozen"]):
            raise UserError(f"{where}: frozen must be a list of module-name patterns")
        kwargs["frozen"] = tuple(data["frozen"])
    if "granularity" in data:
        kwargs["granularity"] = str(data["granularity"])
    if "stages" in data:
        stages = data["stages"]
        if not isinstance(stages, dict) or not all(isinstance(v, list) for v in stages.values()):
            raise UserError(f"{where}: stages must map a stage name to a list of patterns")
        kwargs["stages"] = tuple((str(k), tuple(map(str, v))) for k, v in stages.items())
    if "overrides" in data:
        overrides = data["overrides"]
        if not isinstance(overrides, dict):
            raise UserError(f"{where}: overrides must map a pattern to {{ratios, round_to}}")
        rules = []
        for pattern, spec in overrides.items():
            if not isinstance(spec, dict) or set(spec) - {"ratios", "round_to"}:
                raise UserError(f"{where}: overrides.{pattern}: allowed keys are ratios, round_to")
            ratios = _parse_ratios(spec["ratios"], f"{where}: overrides.{pattern}.ratios") if "ratios" in spec else None
            rules.append(SlotRule(str(pattern), ratios, spec.get("round_to")))
        kwargs["overrides"] = tuple(rules)
    return SpaceRules(**kwargs)
