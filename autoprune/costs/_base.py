"""The CostModel interface and the settings under which every cost is measured."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from autoprune.space import Policy, SearchSpace


@dataclass(frozen=True)
class CostSettings:
    """Where and how costs are measured; shown in every report.

    Attributes:
        input_shape: one sample's shape (C, H, W) at the deployed resolution.
        batch_size: batch size latency is measured at (per-operator overhead dominates small ones).
        threads: CPU threads during latency measurement (fixed, so runs compare).
        warmup: untimed forward passes before timing.
        repeats: timed forward passes; the median is reported.
        device: the deploy device latency is read on (``--latency-device``: cpu, or cuda[:N], timed
            with synchronisation); training may run elsewhere (``autoprune.device``).
        table: a latency table profiled on a deploy device elsewhere (``--latency-table``): latency
            is then its estimate of the built network, not a reading (``autoprune.costs.table``).
    """

    input_shape: tuple[int, ...]
    batch_size: int = 16
    threads: int = 1
    warmup: int = 10
    repeats: int = 30
    device: str = "cpu"
    table: str | None = None

    def describe(self) -> str:
        c, *hw = self.input_shape
        res = "x".join(map(str, hw))
        if self.table is not None:
            from autoprune.costs.table import load_device_table

            return f"batch {self.batch_size}, {c}x{res} input, {self.threads} thread(s), {load_device_table(self.table).describe()}"
        where = "" if self.device == "cpu" else f" on {self.device}"
        return f"batch {self.batch_size}, {c}x{res} input, {self.threads} thread(s), median of {self.repeats}{where}"


class CostModel(abc.ABC):
    """Measures one resource of a (slimmed) model.

    ``measure`` is the ground truth on a built model; ``estimate`` is an optional cheap
    prediction from the policy alone (analytic counts, a latency lookup table) that searchers may
    use to discard infeasible policies without building them.
    """

    metric: ClassVar[str]

    @abc.abstractmethod
    def measure(self, model: nn.Module) -> float: ...

    def estimate(self, space: SearchSpace, policy: Policy) -> float | None:
        return None


def measure_costs(model: nn.Module, settings: CostSettings, *, latency: bool = True) -> dict[str, float]:
    """MACs, params and (optionally) latency of ``model`` under ``settings``."""
    from autoprune.costs.analytic import count_macs_params
    from autoprune.costs.latency import LatencyCost

    macs, params = count_macs_params(model, settings.input_shape)
    out = {"macs": macs, "params": params}
    if latency:
        out["latency_ms"] = LatencyCost(settings).measure(model)
    return out
