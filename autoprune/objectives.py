"""Targets (the constrained resource) and budgets (``0.5`` of dense, or ``4ms``, ``150M``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoprune.errors import UserError

TARGETS = {"latency": "latency_ms", "macs": "macs", "params": "params"}
# What ``--objectives`` may name: accuracy (maximised) and the costs traded against it (minimised).
OBJECTIVES = {"accuracy": "val_accuracy", **TARGETS}
NO_BUDGET = "none"  # the budget of an --objectives search given no --budget: nothing is excluded
UNITS = {"latency_ms": "ms", "macs": "MACs", "params": "params"}
_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_TIME = {"ms": 1.0, "us": 1e-3, "s": 1e3}


@dataclass(frozen=True)
class Budget:
    """A limit on the target metric: a fraction of the dense model, or an absolute value."""

    target: str
    fraction: float | None = None
    absolute: float | None = None
    text: str = ""

    @property
    def metric(self) -> str:
        return TARGETS[self.target]

    def limit(self, dense_value: float) -> float:
        """The absolute limit, given the dense model's measured value of the metric."""
        return dense_value * self.fraction if self.fraction is not None else float(self.absolute)


def parse_target(target: str) -> str:
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def parse_objectives(text: str) -> tuple[str, ...]:
    """``accuracy,latency`` -> the cost metrics traded against accuracy, in order: ``("latency_ms",)``.

    Accuracy must be one of them (a front of costs alone is the dense model and the most pruned),
    with at least one cost; names are those of ``OBJECTIVES``."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise UserError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVES)} (e.g. accuracy,latency)")
    if len(set(names)) != len(names):
        raise UserError(f"objectives {text!r} name one objective twice")
    if "accuracy" not in names or len(names) < 2:
        raise UserError(f"objectives {text!r} must be accuracy and at least one cost (latency, macs, params), "
                        "e.g. accuracy,latency")
    return tuple(TARGETS[n] for n in names if n != "accuracy")


def objectives_target(costs: tuple[str, ...]) -> str:
    """The target of an --objectives search without a budget: its first cost."""
    return next(t for t, metric in TARGETS.items() if metric == costs[0])


def parse_budget(text: str | float, target: str) -> Budget:
    """Parse ``0.5`` (fraction of dense), ``4ms``/``800us`` (latency), ``150M``/``2.5G`` (MACs, params)."""
    target = parse_target(target)
    raw = str(text).strip()
    if raw == NO_BUDGET:  # the whole space is admissible (an --objectives search)
        return Budget(target, fraction=1.0, text=NO_BUDGET)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)", raw)
    if not m:
        raise UserError(f"budget {raw!r} is not a number; give a fraction like 0.5 or a value like 4ms or 150M")
    value, unit = float(m.group(1)), m.group(2)
    if value <= 0:
        raise UserError(f"budget must be positive, got {raw}")
    if unit == "":
        if value >= 1.0:
            raise UserError(
                f"a budget without a unit is a fraction of the dense model and must be below 1, got {raw}; "
                "for an absolute budget add a unit (4ms, 150M)"
            )
        return Budget(target, fraction=value, text=raw)
    if target == "latency":
        if unit not in _TIME:
            raise UserError(f"latency budget unit must be ms, us or s, got {unit!r}")
        return Budget(target, absolute=value * _TIME[unit], text=raw)
    if unit not in _SCALE:
        raise UserError(f"{target} budget unit must be K, M or G, got {unit!r}")
    return Budget(target, absolute=value * _SCALE[unit], text=raw)


def format_metric(metric: str, value: float) -> str:
    """Human-readable value of a cost metric."""
    if metric == "latency_ms":
        return f"{value:.2f} ms"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"
