"""MACs and parameter counts from Torch-Pruning's counter (MACs, not FLOPs)."""

from __future__ import annotations

import gc

import torch
from torch import nn

from autoprune.costs._base import CostModel, CostSettings


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float]:
    """(MACs, parameters) of one forward pass of a single sample."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    model.train(was_training)
    gc.collect()  # the counter's deep copy of the model lives in reference cycles until collected
    return float(macs), float(params)


class MacsCost(CostModel):
    metric = "macs"

    def __init__(self, settings: CostSettings) -> None:
        self.settings = settings

    def measure(self, model: nn.Module) -> float:
        return count_macs_params(model, self.settings.input_shape)[0]


class ParamsCost(CostModel):
    metric = "params"

    def __init__(self, settings: CostSettings) -> None:
        self.settings = settings

    def measure(self, model: nn.Module) -> float:
        return count_macs_params(model, self.settings.input_shape)[1]
