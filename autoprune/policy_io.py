"""Policies on disk: YAML with provenance, re-appliable with ``autoprune apply``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import yaml

import autoprune
from autoprune.atomic import write_text_atomic
from autoprune.errors import UserError
from autoprune.space import Policy, SearchSpace
from autoprune.yaml_files import read_yaml_mapping

FORMAT = "autoprune.policy/1"


HEADER = """\
# An autoprune pruning policy; apply it again with `autoprune apply --policy THIS_FILE --out model.pt`.
# ratios: per slot (a group of coupled channels), the fraction of its channels REMOVED
#   (0.25 = a quarter pruned, 0 = kept whole); kept_widths: the channels each slot keeps.
"""


def save_policy(path: str | Path, policy: Policy, space: SearchSpace, **provenance: Any) -> Path:
    """Write ``policy`` with its kept widths and provenance (study, trial, metrics, versions),
    under a comment saying what the ratios are (read back by ``load_policy``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "fingerprint": policy.fingerprint,
        "ratios": {k: round(v, 6) for k, v in policy.items},
        "kept_widths": space.kept_widths(policy),
        "provenance": {
            "autoprune": autoprune.__version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **_plain(provenance),
        },
    }
    return write_text_atomic(path, HEADER + yaml.safe_dump(doc, sort_keys=False))


def budget_value(text: str | float) -> float | str:
    """A budget as policy.yaml records it: a fraction of dense as a number (0.5), a value with a
    unit as its text ('4ms', '150M')."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text).strip()


def load_policy(path: str | Path) -> tuple[Policy, dict[str, Any]]:
    """(policy, provenance) from a policy file; a UserError names what is wrong."""
    path = Path(path)
    doc = read_yaml_mapping(path, "policy file")
    if doc.get("format") != FORMAT:
        raise UserError(f"{path}: not an autoprune policy (expected 'format: {FORMAT}')")
    for key in ("fingerprint", "ratios"):
        if key not in doc:
            raise UserError(f"{path}: missing key {key!r}")
    ratios = doc["ratios"]
    if not isinstance(ratios, dict) or not all(isinstance(v, (int, float)) for v in ratios.values()):
        raise UserError(f"{path}: 'ratios' must map slot names to numbers")
    bad = [k for k, v in ratios.items() if not 0 <= float(v) < 1]
    if bad:
        raise UserError(f"{path}: ratio of slot {bad[0]!r} must be in [0, 1)")
    return Policy.from_dict(str(doc["fingerprint"]), ratios), dict(doc.get("provenance") or {})


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples to lists, numpy/torch scalars to floats."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
