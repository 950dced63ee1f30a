"""Cost models: analytic MACs/params (Torch-Pruning) and latency measured on this device."""

from __future__ import annotations

from autoprune.costs._base import CostModel, CostSettings, measure_costs
from autoprune.costs.analytic import MacsCost, ParamsCost
from autoprune.costs.latency import LatencyCost

__all__ = ["CostModel", "CostSettings", "LatencyCost", "MacsCost", "ParamsCost", "measure_costs"]
