"""A latency table profiled on the deploy device and used where the search runs.

When the device a model will run on (a phone, an edge box, a server outside the cluster) is not
where the search runs, ``autoprune profile --out table.json`` is run there: it times every layer
shape the search space can give (the same standalone profiles as the local lookup table,
``autoprune.costs.lut``) and fits the table's calibration ``latency ~= a * sum + c * volume + b``
(``lut.fit_calibration``) on networks it builds and measures there. A search given ``--latency-table table.json`` then reads no latency
itself: the dense model's, every trial's and the export's final check are this table's estimate
of the built network (its conv, linear and BatchNorm calls, ``layer_calls``), and searchers'
cheap estimates are the same sums computed from the policy. Estimates are deterministic, so the
final check cannot drift, but it is only as right as the table: ``autoprune profile --measure
model.pt --table table.json`` on the device compares the two.

A layer shape missing from the table (a layer with too many width combinations to profile every
one, or a space other than the profiled one) is estimated from the profiled shape of the same
operator nearest in MACs, scaled by the MACs ratio; how many were is counted (``approximated``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.costs._base import CostSettings
from autoprune.costs.layers import LayerShape, layer_calls
from autoprune.errors import UserError
from autoprune.space import SearchSpace

FORMAT = "autoprune.device-table/1"
HELD_OUT = 8  # policies measured after the fit, to tell the user how far off the table is


def _operator(shape: LayerShape) -> str:
    """The shape's key without its widths: shapes of one operator at other widths share it."""
    depthwise = shape.kind == "conv" and shape.groups == shape.cin == shape.cout and shape.groups > 1
    return replace(shape, cin=0, cout=0, groups=0 if depthwise else shape.groups).key()


def _work(shape: LayerShape) -> float:
    """Proportional to the shape's MACs among shapes of one operator (same input size and kernel)."""
    return max(shape.macs((1, 1)), 1.0)


class DeviceTable:
    """A profiled table read from ``path``: layer entries (ms), the calibration and where it was made."""

    def __init__(self, path: Path, blob: dict[str, Any]) -> None:
        self.path = path
        self.device: str = str(blob["device"])
        self.batch_size, self.threads = int(blob["batch_size"]), int(blob["threads"])
        self.input_shape = tuple(int(v) for v in blob["input_shape"])
        calibration = blob["calibration"]
        self.a, self.b = float(calibration["a"]), float(calibration["b"])
        self.c = float(calibration.get("c", 0.0))  # tables profiled before the volume term have none
        self.entries: dict[str, float] = {}
        self._by_operator: dict[str, list[tuple[float, float]]] = {}
        for row in blob["layers"]:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in row.items() if k != "ms"}
            shape, ms = LayerShape(**fields), float(row["ms"])
            self.entries[shape.key()] = ms
            self._by_operator.setdefault(_operator(shape), []).append((_work(shape), ms))
        self.approximated = 0  # lookups answered from a neighbouring shape

    def describe(self) -> str:
        return f"estimated from latency table {self.path.name} (profiled on {self.device})"

    def check(self, input_shape: tuple[int, ...]) -> None:
        """Refuse a run whose input is not the one the table was profiled at."""
        if tuple(input_shape) != self.input_shape:
            have, want = "x".join(map(str, self.input_shape)), "x".join(map(str, input_shape))
            raise UserError(f"--latency-table {self.path}: profiled at {have} input, but this run's input is {want}; "
                            f"profile it again with the run's --image-size")

    def lookup(self, shape: LayerShape) -> float:
        ms = self.entries.get(shape.key())
        if ms is not None:
            return ms
        neighbours = self._by_operator.get(_operator(shape))
        if not neighbours:
            raise UserError(f"--latency-table {self.path}: no profiled layer like {shape.key()}; profile the table "
                            f"with this run's --model, --space and --image-size")
        work = _work(shape)
        near_work, near_ms = min(neighbours, key=lambda n: abs(math.log(work / n[0])))
        self.approximated += 1
        return near_ms * work / near_work

    def estimate_shapes(self, shapes: Iterable[LayerShape]) -> float:
        """Calibrated latency (ms) of a network with these layer shapes."""
        shapes = list(shapes)
        return self.a * sum(self.lookup(s) for s in shapes) + self.c * sum(s.volume() for s in shapes) + self.b

    def estimate(self, model: nn.Module) -> float:
        """Calibrated latency (ms) of a built network, from its own layers' shapes."""
        example = torch.zeros(1, *self.input_shape)
        return self.estimate_shapes(shape for _, shape, _ in layer_calls(model, example, self.batch_size))


_LOADED: dict[tuple[str, float], DeviceTable] = {}


def load_device_table(path: str | Path) -> DeviceTable:
    """The table at ``path`` (read once per process and file version); bad files are refused in one line."""
    file = Path(path).expanduser()
    try:
        stamp = file.stat().st_mtime
    except OSError:
        raise UserError(f"--latency-table {path}: no such file; make one on the deploy device with "
                        f"`autoprune profile --out {file.name}`") from None
    key = (str(file.resolve()), stamp)
    if key not in _LOADED:
        try:
            blob = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--latency-table {path}: not a JSON file ({exc})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise UserError(f"--latency-table {path}: not a table written by `autoprune profile` (format {FORMAT})")
        try:
            _LOADED[key] = DeviceTable(file, blob)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"--latency-table {path}: a damaged table ({type(exc).__name__}: {exc}); profile again") from None
    return _LOADED[key]


def machine() -> str:
    """This machine in words (``summary.machine``, the report's description) and its torch."""
    from autoprune.summary import machine as described

    m = described()
    return f"{m['cpu']} ({m['cores']} cores, {m['platform']}, torch {torch.__version__})"


def profile_device_table(
    model: nn.Module, space: SearchSpace, example_inputs: torch.Tensor, settings: CostSettings, *,
    model_spec: str = "", calibration_policies: int = 16, seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """The table of this device for ``space``: every reachable layer shape timed, the calibration
    fitted on ``calibration_policies`` built networks, and its error on ``HELD_OUT`` more."""
    from autoprune.costs.layers import PolicyShapes, record_layers
    from autoprune.costs.lut import LatencyTable, LutLatency, time_model
    from autoprune.prune import apply_policy

    class Recording(LatencyTable):  # keeps each profiled shape, which the file stores whole
        shapes: dict[str, LayerShape] = {}

        def latency(self, shape: LayerShape) -> float:
            self.shapes.setdefault(shape.key(), shape)
            return super().latency(shape)

    started = time.perf_counter()
    scratch = Recording(Path(os.devnull), settings.threads, settings.warmup, settings.repeats)
    layers = record_layers(model, space, example_inputs, settings.batch_size)
    lut = LutLatency(scratch, layers, space, settings)
    shapes = PolicyShapes(layers, space).reachable()
    log(f"profiling {len(shapes)} layer shapes at batch {settings.batch_size}, {settings.threads} thread(s)")
    scratch.profile(shapes)
    fit = lut.calibrate(model, example_inputs, calibration_policies, seed)
    log(f"calibration on {calibration_policies} measured networks: latency = {fit['a']:.3f} x sum + "
        f"{fit['c']:.3f} x volume + {fit['b']:.3f} ms")
    rng = np.random.default_rng(seed + 1)
    errors = []
    for _ in range(HELD_OUT):
        policy = space.sample(rng)
        slim, _ = apply_policy(model, space, policy, example_inputs)
        measured = time_model(slim, settings)
        errors.append(abs(lut.estimate(space, policy) - measured) / measured)
    held_out = float(np.median(errors))
    log(f"held-out check on {HELD_OUT} more networks: median error {held_out:.1%}, largest {max(errors):.1%}")
    return {
        "format": FORMAT, "device": machine(), "model": model_spec, "space": space.fingerprint,
        "input_shape": list(settings.input_shape), "batch_size": settings.batch_size, "threads": settings.threads,
        "warmup": settings.warmup, "repeats": settings.repeats,
        "calibration": {"a": fit["a"], "b": fit["b"], "c": fit["c"], "n": fit["n"], "max_err": fit["max_err"]},
        "held_out_median_error": held_out, "dense_ms": time_model(model, settings),
        "profiled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile_seconds": round(time.perf_counter() - started, 1),
        "layers": [{**asdict(shape), "ms": scratch.entries[key]} for key, shape in sorted(scratch.shapes.items())],
    }
