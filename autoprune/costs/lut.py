"""Latency lookup table (HALP-style): predict a policy's latency without building its network.

The dense model's conv/linear/BN calls and the slots that shrink them come from
``autoprune.costs.layers``. Each pruned layer shape's latency is profiled once on this device (a
standalone module, warm-up, median of repeats, at the CostSettings' batch size and thread count)
and cached in ``<cache>/lut/<device-key>.json``. The sum over layers misses residual adds,
pooling and framework overhead, and a layer inside a network runs slower than alone (its weights
and input are not already in cache), so ``latency ~= a * sum + c * volume + b`` is fitted on
measured policies (cached in the same file), where ``volume`` is the activation volume the
policy's BatchNorm layers output (millions of elements; ``LayerShape.volume``): the elementwise
work outside the table grows with it, not with the table's sum. With it and 16 calibration
networks instead of 8, the median error on 50 held-out policies fell from 6.8 / 4.5 / 6.7% to
4.8 / 2.9 / 3.7% on the default ResNet-20, ResNet-18 and MobileNetV2 (docs/knapsack.md). Build
one with ``build_lut``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune import meter
from autoprune.costs._base import CostModel, CostSettings
from autoprune.costs.latency import LatencyCost, thread_count
from autoprune.costs.layers import AnalyticEstimate, Layer, LayerShape, PolicyShapes, record_layers
from autoprune.space import Policy, SearchSpace

__all__ = [
    "AnalyticEstimate", "LatencyTable", "Layer", "LayerShape", "LutLatency", "build_lut", "device_key",
    "fit_calibration", "profile_shape", "record_layers", "time_model",
]

FORMAT = "autoprune.lut/1"
VOLUME_MIN_POLICIES = 10  # fewer measured networks fit ``a * sum + b`` only: three terms would chase noise


def fit_calibration(sums: Iterable[float], volumes: Iterable[float], measured: Iterable[float]) -> dict[str, float]:
    """``a, c, b`` of ``latency ~= a * sum + c * volume + b`` by least squares on measured networks.

    Falls back to ``c = 0`` where there are fewer than ``VOLUME_MIN_POLICIES`` networks or the
    three-term fit is implausible (a slope outside [0.25, 4], a negative ``c``), and to ``a = 1``
    with ``b`` the median residual where the sums hardly vary (a tiny, overhead-dominated model).
    """
    x, v, y = (np.asarray(list(values), dtype=float) for values in (sums, volumes, measured))
    a, c, b = 1.0, 0.0, float(np.median(y - x))  # median: one measurement caught by a load spike
    if np.ptp(x) > 0.2 * x.mean():  # enough spread for a slope to mean something
        slope, intercept = np.polyfit(x, y, 1)
        if 0.25 <= slope <= 4.0:
            a, b = float(slope), float(intercept)
        if len(y) >= VOLUME_MIN_POLICIES and np.ptp(v) > 0:
            (slope, per_volume, intercept), *_ = np.linalg.lstsq(np.column_stack([x, v, np.ones_like(x)]), y, rcond=None)
            if 0.25 <= slope <= 4.0 and per_volume >= 0:
                a, c, b = float(slope), float(per_volume), float(intercept)
    fitted = a * x + c * v + b
    return {"a": a, "b": b, "c": c, "n": float(len(y)), "max_err": float(np.max(np.abs(fitted - y) / y))}


def device_key(threads: int, clock: str = "wall") -> str:
    """CPU model + torch version + thread count (+ clock): profiled latencies are valid for these only."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    suffix = "" if clock == "wall" else f"-{clock}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{cpu}-torch{torch.__version__}-t{threads}{suffix}")


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def profile_shape(shape: LayerShape, threads: int, warmup: int, repeats: int, clock: str = "wall") -> float:
    """Median latency (ms) of one standalone forward of ``shape``; tiny ops are timed in short loops."""
    torch.manual_seed(0)
    module, x = shape.module().eval(), shape.example()
    now = CLOCKS[clock]
    with meter.reading("cpu"), thread_count(threads), torch.inference_mode():
        for _ in range(max(1, warmup)):
            module(x)
        start = now()
        module(x)
        single = now() - start
        inner = int(min(64, max(1, 5e-4 / max(single, 1e-7))))  # ~0.5 ms samples: timer/scheduler noise
        samples = []
        for _ in range(max(1, repeats)):
            start = now()
            for _ in range(inner):
                module(x)
            samples.append((now() - start) / inner)
    return float(statistics.median(samples)) * 1e3


def time_model(model: nn.Module, settings: CostSettings, clock: str = "wall") -> float:
    """Median forward latency (ms) like ``LatencyCost``; ``clock="cpu"`` counts this thread's CPU time
    only, which ignores time the scheduler gives to other processes (exact for one thread)."""
    if clock == "wall":
        return LatencyCost(settings).measure(model)
    now = CLOCKS[clock]
    x = torch.randn(settings.batch_size, *settings.input_shape)
    samples = []
    with meter.reading("cpu"), thread_count(settings.threads), torch.inference_mode():
        for i in range(settings.warmup + settings.repeats):
            start = now()
            model(x)
            if i >= settings.warmup:
                samples.append(now() - start)
    return float(statistics.median(samples)) * 1e3


class LatencyTable:
    """Per-device store of profiled layer latencies (ms) and fitted calibrations, as one JSON file.

    Missing entries are profiled on first use; ``save`` merges with what other processes wrote.
    """

    def __init__(self, path: Path, threads: int, warmup: int = 5, repeats: int = 15, clock: str = "wall") -> None:
        self.path, self.threads, self.warmup, self.repeats, self.clock = path, threads, warmup, repeats, clock
        self.entries: dict[str, float] = {}
        self.calibrations: dict[str, dict[str, float]] = {}
        self.profiled = 0  # entries profiled by this instance (0 when everything came from disk)
        self._dirty = False
        self._read()

    @classmethod
    def for_settings(
        cls, settings: CostSettings, cache_dir: str | Path | None = None, *, repeats: int | None = None,
        clock: str = "wall",
    ) -> LatencyTable:
        """The table of this device at ``settings.threads``, under ``<cache>/lut/``."""
        from autoprune.data import default_cache_dir

        root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        path = root / "lut" / f"{device_key(settings.threads, clock)}.json"
        repeats = repeats if repeats is not None else settings.repeats
        return cls(path, settings.threads, settings.warmup, repeats, clock)

    def _read(self) -> None:
        try:
            blob = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(blob, dict) and blob.get("format") == FORMAT:
            self.entries.update({str(k): float(v) for k, v in blob.get("entries", {}).items()})
            self.calibrations.update(blob.get("calibrations", {}))

    def latency(self, shape: LayerShape) -> float:
        key = shape.key()
        value = self.entries.get(key)
        if value is None:
            value = self.entries[key] = profile_shape(shape, self.threads, self.warmup, self.repeats, self.clock)
            self.profiled += 1
            self._dirty = True
        return value

    def profile(self, shapes: Iterable[LayerShape]) -> int:
        """Profile every shape not in the table yet; returns how many were new."""
        before = self.profiled
        for shape in shapes:
            self.latency(shape)
        return self.profiled - before

    def save(self) -> None:
        """Write the table (merged with the file's current content) atomically."""
        if not self._dirty:
            return
        mine = dict(self.entries), dict(self.calibrations)
        self._read()
        self.entries.update(mine[0])
        self.calibrations.update(mine[1])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"format": FORMAT, "device": self.path.stem, "torch": torch.__version__, "threads": self.threads,
                "calibrations": self.calibrations, "entries": dict(sorted(self.entries.items()))}
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(blob, indent=0))
        tmp.replace(self.path)
        self._dirty = False

    def set_calibration(self, key: str, value: dict[str, float]) -> None:
        self.calibrations[key] = value
        self._dirty = True


class LutLatency(CostModel):
    """Latency from the lookup table: ``a * sum(layer entries) + c * volume + b`` (ms); ``measure``
    times the model."""

    metric = "latency_ms"

    def __init__(self, table: LatencyTable, layers: list[Layer], space: SearchSpace, settings: CostSettings) -> None:
        self.table, self.space, self.settings = table, space, settings
        self.shapes = PolicyShapes(layers, space)
        self.a, self.b, self.c = 1.0, 0.0, 0.0
        # A layer's pruned shape depends only on the kept widths of the slots that touch it, so its
        # table entry is memoised on them: searchers screen thousands of draws (5x faster).
        self._slots = [tuple(sorted({slot for slot, _ in layer.outs + layer.ins})) for layer in layers]
        self._memo: dict[tuple[int, ...], tuple[float, float]] = {}

    @property
    def calibration_key(self) -> str:
        s = self.settings
        return f"{self.space.fingerprint}:b{s.batch_size}:{'x'.join(map(str, s.input_shape))}"

    def terms(self, policy: Policy) -> tuple[float, float]:
        """(Sum of the table entries of the policy's layers in ms, their summed ``volume``)."""
        kept = self.space.kept_widths(policy)
        total, volume = 0.0, 0.0
        for index, (layer, slots) in enumerate(zip(self.shapes.layers, self._slots, strict=True)):
            key = (index, *(kept[slot] for slot in slots))
            entry = self._memo.get(key)
            if entry is None:
                shape = layer.pruned(kept, self.shapes.channels)
                entry = self._memo[key] = (self.table.latency(shape), shape.volume())
            total += entry[0]
            volume += entry[1]
        return float(total), float(volume)

    def raw(self, policy: Policy) -> float:
        """Uncalibrated sum of the table entries of the policy's layers (ms)."""
        return self.terms(policy)[0]

    def estimate(self, space: SearchSpace, policy: Policy) -> float:
        """Calibrated latency prediction (ms) of ``policy``; no network is built."""
        total, volume = self.terms(policy)
        return self.a * total + self.c * volume + self.b

    def __call__(self, policy: Policy) -> float:
        return self.estimate(self.space, policy)

    def measure(self, model: nn.Module) -> float:
        return time_model(model, self.settings, self.table.clock)

    def use(self, calibration: dict[str, float]) -> None:
        self.a, self.b, self.c = float(calibration["a"]), float(calibration["b"]), float(calibration.get("c", 0.0))

    def calibrate(self, model: nn.Module, example_inputs: torch.Tensor, n: int = 16, seed: int = 0) -> dict[str, float]:
        """Fit ``a, c, b`` (``fit_calibration``) on ``n`` measured policies: dense, most pruned, random."""
        from autoprune.prune import apply_policy

        rng = np.random.default_rng(seed)
        policies = [self.space.dense(), self.space.most_pruned()]
        policies += [self.space.sample(rng) for _ in range(max(0, n - 2))]
        terms, measured = [], []
        for policy in policies:
            slim, _ = apply_policy(model, self.space, policy, example_inputs)
            measured.append(self.measure(slim))
            terms.append(self.terms(policy))
        result = fit_calibration([t for t, _ in terms], [v for _, v in terms], measured)
        self.use(result)
        self.table.set_calibration(self.calibration_key, result)
        return result


def build_lut(
    model: nn.Module,
    space: SearchSpace,
    example_inputs: torch.Tensor,
    settings: CostSettings,
    *,
    cache_dir: str | Path | None = None,
    calibration_policies: int = 16,
    repeats: int | None = None,
    seed: int = 0,
    layers: list[Layer] | None = None,
    clock: str = "wall",
    log: Callable[[str], None] | None = None,
) -> LutLatency:
    """A calibrated LUT latency model for ``space``: profiles what the cache lacks, then fits ``a, c, b``.

    Everything (entries and the calibration) is cached per device, so a second call profiles and
    measures nothing. ``layers`` (from ``record_layers`` at the settings' batch size) skips the
    model trace. ``clock="cpu"`` profiles and measures this thread's CPU time instead of wall time
    (a contention-robust proxy for a quiet machine; single-thread only).
    """
    table = LatencyTable.for_settings(settings, cache_dir, repeats=repeats, clock=clock)
    if layers is None:
        layers = record_layers(model, space, example_inputs, settings.batch_size)
    lut = LutLatency(table, layers, space, settings)
    started = time.perf_counter()
    new = table.profile(lut.shapes.reachable())
    cached = table.calibrations.get(lut.calibration_key)
    if cached and cached.get("n", 0) >= calibration_policies and "c" in cached:  # no "c": fitted before volume
        lut.use(cached)
    else:
        fit = lut.calibrate(model, example_inputs, calibration_policies, seed)
        if log:
            log(f"latency table: a={fit['a']:.3f}, c={fit['c']:.3f} ms per M elements, b={fit['b']:.3f} ms "
                f"(max fit error {fit['max_err']:.1%})")
    table.save()
    if log and new:
        log(f"latency table: profiled {new} layer shapes in {time.perf_counter() - started:.0f} s ({table.path})")
    return lut
