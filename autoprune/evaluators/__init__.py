"""Scoring a slimmed candidate: adaptive-BN recalibration, distillation fine-tune, accuracy."""

from __future__ import annotations

from autoprune.evaluators.adaptive_bn import recalibrate_bn
from autoprune.evaluators.distill import DistillConfig, distill
from autoprune.evaluators.fidelity import Fidelity, parse_fidelity

__all__ = ["DistillConfig", "Fidelity", "distill", "parse_fidelity", "recalibrate_bn"]
