"""Fidelity names: how a trial was scored (``bn``, ``kd:N``, ``final``)."""

from __future__ import annotations

from dataclasses import dataclass

from autoprune.errors import UserError


@dataclass(frozen=True)
class Fidelity:
    """``steps`` of distillation after adaptive-BN recalibration; ``final`` also reports test accuracy."""

    steps: int
    final: bool = False

    @property
    def name(self) -> str:
        if self.final:
            return "final"
        return "bn" if self.steps == 0 else f"kd:{self.steps}"


def parse_fidelity(text: str, *, final_steps: int = 0) -> Fidelity:
    """``bn`` -> 0 steps, ``kd:100`` -> 100 steps, ``final`` -> ``final_steps`` steps."""
    if text == "bn":
        return Fidelity(0)
    if text == "final":
        return Fidelity(final_steps, final=True)
    if text.startswith("kd:"):
        try:
            steps = int(text[3:])
        except ValueError:
            steps = -1
        if steps > 0:
            return Fidelity(steps)
    raise UserError(f"unknown fidelity {text!r}; use bn, kd:N (N > 0 steps) or final")
