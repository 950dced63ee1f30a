"""Latency measured on the deploy device (the CPU, or a CUDA device timed with synchronisation):
warm-up, a fixed thread count, the median of repeats, the device held alone (``autoprune.meter``)."""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from autoprune import meter
from autoprune.costs._base import CostModel, CostSettings
from autoprune.device import synchronize


@contextmanager
def thread_count(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Early stop of a screening reading: once at least MIN_REPEATS passes are timed, the reading stops
# when the median's notch half-width (1.57 IQR / sqrt(n), McGill et al. 1978) is within
# SETTLED of the median. Passes are checked in chunks of CHUNK. 3% is the margin the pick must
# re-measure under the limit (with every pass) and well below the 8% by which two full readings
# of one model drift apart on a shared machine; at 1% the default task's fast forwards (3-8 ms)
# rarely settled and took every pass.
MIN_REPEATS, CHUNK, SETTLED = 8, 4, 0.03
# Warm-up passes of a screening reading of a model this process has timed before (the dense model
# in every trial, a candidate's later rounds): only the caches that other work evicted need warming
# again, not the allocations and kernel choices of a first call.
REWARM = 2
_timed: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def settled(times: list[float], tolerance: float = SETTLED) -> bool:
    """Whether the median of ``times`` is known to within ``tolerance`` (a fraction of it)."""
    if len(times) < MIN_REPEATS:
        return False
    q1, _, q3 = statistics.quantiles(times, n=4)
    return 1.57 * (q3 - q1) / len(times) ** 0.5 <= tolerance * statistics.median(times)


def time_forward(model: nn.Module, settings: CostSettings, *, early_stop: bool = False) -> list[float]:
    """Wall times (ms) of ``settings.repeats`` forward passes after ``settings.warmup``.

    With ``early_stop`` (screening readings of a search, never the checks of a budget), timing
    stops before ``settings.repeats`` once the median is ``settled``, and a model this process has
    timed before warms up only ``REWARM`` passes."""
    x = torch.randn(settings.batch_size, *settings.input_shape)
    was_training = model.training
    model.eval()
    device = torch.device(settings.device)
    timed = model
    if device.type != "cpu":  # a copy on the deploy device; the caller's model stays where it is
        import copy

        timed, x = copy.deepcopy(model).to(device), x.to(device)
    times = []
    # on a CUDA deploy device every reading times a fresh copy: it warms up in full
    rewarm = early_stop and device.type == "cpu" and model in _timed
    warmup = min(settings.warmup, REWARM) if rewarm else settings.warmup
    _timed.add(model)
    with meter.reading(device), thread_count(settings.threads), torch.inference_mode():
        for _ in range(warmup):
            timed(x)
        synchronize(device)
        for i in range(settings.repeats):
            start = time.perf_counter()
            timed(x)
            synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
            if early_stop and (i + 1) % CHUNK == 0 and settled(times):
                break
    model.train(was_training)
    return times


class LatencyCost(CostModel):
    """Median forward latency in milliseconds at the settings' batch size and resolution."""

    metric = "latency_ms"

    def __init__(self, settings: CostSettings, *, early_stop: bool = False) -> None:
        self.settings, self.early_stop = settings, early_stop
        self.passes = 0  # timed passes of the last reading

    def measure(self, model: nn.Module) -> float:
        if self.settings.table is not None:  # the deploy device is elsewhere: its table's estimate
            from autoprune.costs.table import load_device_table

            self.passes = 0
            return load_device_table(self.settings.table).estimate(model)
        times = time_forward(model, self.settings, early_stop=self.early_stop)
        self.passes = len(times)
        return float(statistics.median(times))


def steady_latency(model: nn.Module, settings: CostSettings, rounds: int = 3) -> float:
    """Median of ``rounds`` medians: for the readings that anchor or verify a budget."""
    cost = LatencyCost(settings)
    return float(statistics.median(cost.measure(model) for _ in range(rounds)))


def paired_latency(model: nn.Module, dense: nn.Module, settings: CostSettings, rounds: int = 3) -> tuple[float, float]:
    """(latency ms, latency / dense latency), the two measured alternately in ``rounds`` rounds.

    A budget given as a fraction of the dense model is a ratio on this device; the machine's speed
    drifts (load, frequency) by more than the margin near a budget, but a ratio of two readings
    taken side by side cancels the drift. Both are medians over the rounds.
    """
    cost = LatencyCost(settings)
    pairs = [(cost.measure(model), cost.measure(dense)) for _ in range(rounds)]
    return (float(statistics.median(m for m, _ in pairs)), float(statistics.median(m / d for m, d in pairs)))


def anchored_reading(model: nn.Module, dense: nn.Module, settings: CostSettings,
                     dense_anchor_ms: float | None, rounds: int = 3) -> dict[str, float]:
    """A steady ``latency_ms`` of ``model`` in the units of a latency limit.

    With ``dense_anchor_ms`` (a budget set as a fraction of the dense model's latency): the paired
    ratio to ``dense`` times the anchor, so drift cancels (``latency_ratio``; the raw reading is
    ``latency_ms_now``). Without: the median of ``rounds`` readings."""
    if dense_anchor_ms is None:
        return {"latency_ms": steady_latency(model, settings, rounds)}
    now, ratio = paired_latency(model, dense, settings, rounds)
    return {"latency_ms": ratio * dense_anchor_ms, "latency_ms_now": now, "latency_ratio": ratio}
