"""Latency measured on this device: warm-up, a fixed thread count, the median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from autoprune.costs._base import CostModel, CostSettings


@contextmanager
def thread_count(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_forward(model: nn.Module, settings: CostSettings) -> list[float]:
    """Wall times (ms) of ``settings.repeats`` forward passes after ``settings.warmup``."""
    x = torch.randn(settings.batch_size, *settings.input_shape)
    was_training = model.training
    model.eval()
    times = []
    with thread_count(settings.threads), torch.inference_mode():
        for _ in range(settings.warmup):
            model(x)
        for _ in range(settings.repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return times


class LatencyCost(CostModel):
    """Median forward latency in milliseconds at the settings' batch size and resolution."""

    metric = "latency_ms"

    def __init__(self, settings: CostSettings) -> None:
        self.settings = settings

    def measure(self, model: nn.Module) -> float:
        return float(statistics.median(time_forward(model, self.settings)))


def steady_latency(model: nn.Module, settings: CostSettings, rounds: int = 3) -> float:
    """Median of ``rounds`` medians: for the readings that anchor or verify a budget."""
    cost = LatencyCost(settings)
    return float(statistics.median(cost.measure(model) for _ in range(rounds)))
