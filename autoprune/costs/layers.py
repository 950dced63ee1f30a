"""Layer records of a dense model and the pruned shapes a policy gives them, without building it.

Every conv, linear and BatchNorm2d call of the dense model is recorded once (forward hooks) with its
shapes, and Torch-Pruning's dependency groups say which slot removes which of its input and output
channels. A policy's kept widths then give every layer's pruned shape: the latency lookup table
(``autoprune.costs.lut``) sums profiled entries over them; ``AnalyticEstimate`` counts MACs/params.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import product

import numpy as np
import torch
from torch import nn

from autoprune.space import Policy, SearchSpace

EAGER_LIMIT = 4096  # above this many width combinations a layer's shapes are not enumerated


@dataclass(frozen=True)
class LayerShape:
    """One profiled operator: ``conv``, ``linear`` or ``bn`` (BatchNorm2d then ReLU), at ``batch``."""

    kind: str
    batch: int
    cin: int
    cout: int
    h: int = 1
    w: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False

    def key(self) -> str:
        if self.kind == "bn":
            return f"bn:b{self.batch}:c{self.cout}:{self.h}x{self.w}"
        if self.kind == "linear":
            return f"linear:b{self.batch}:i{self.cin}:o{self.cout}:r{self.h}:bias{int(self.bias)}"
        pad = self.padding if isinstance(self.padding, str) else "x".join(map(str, self.padding))
        return (
            f"conv:b{self.batch}:i{self.cin}:o{self.cout}:{self.h}x{self.w}:k{self.kernel[0]}x{self.kernel[1]}"
            f":s{self.stride[0]}x{self.stride[1]}:p{pad}:d{self.dilation[0]}x{self.dilation[1]}"
            f":g{self.groups}:bias{int(self.bias)}"
        )

    def module(self) -> nn.Module:
        """A standalone module of this shape (random weights: latency does not depend on them)."""
        if self.kind == "bn":
            return nn.Sequential(nn.BatchNorm2d(self.cout), nn.ReLU())
        if self.kind == "linear":
            return nn.Linear(self.cin, self.cout, bias=self.bias)
        return nn.Conv2d(
            self.cin, self.cout, self.kernel, self.stride, self.padding, self.dilation, self.groups, self.bias
        )

    def example(self) -> torch.Tensor:
        if self.kind == "linear":
            return torch.randn(self.batch * self.h, self.cin)
        return torch.randn(self.batch, self.cin, self.h, self.w)

    def macs(self, out_hw: tuple[int, int]) -> float:
        """MACs of one sample, counted as Torch-Pruning's counter does."""
        if self.kind == "bn":
            return 2.0 * self.cout * self.h * self.w
        if self.kind == "linear":
            return float(self.h * (self.cin * self.cout + (self.cout if self.bias else 0)))
        per = self.kernel[0] * self.kernel[1] * (self.cin // self.groups) * self.cout
        return float(out_hw[0] * out_hw[1] * (per + (self.cout if self.bias else 0)))

    def volume(self) -> float:
        """Millions of elements a ``bn`` layer outputs per sample (0 for other kinds): the latency
        table's calibration scales the elementwise work outside the table by it."""
        return self.cout * self.h * self.w / 1e6 if self.kind == "bn" else 0.0

    def params(self) -> float:
        if self.kind == "bn":
            return 2.0 * self.cout
        if self.kind == "linear":
            return float(self.cin * self.cout + (self.cout if self.bias else 0))
        return float(self.kernel[0] * self.kernel[1] * (self.cin // self.groups) * self.cout + (self.cout if self.bias else 0))


@dataclass(frozen=True)
class Layer:
    """One module call of the dense model and the slots that remove its channels.

    ``outs``/``ins`` hold (slot, n): ``n`` of this layer's output/input channels belong to the slot's
    group (``n`` can exceed the slot's width after a flatten; removal scales proportionally).
    """

    name: str
    shape: LayerShape
    out_hw: tuple[int, int]
    outs: tuple[tuple[str, int], ...]
    ins: tuple[tuple[str, int], ...]

    @property
    def depthwise(self) -> bool:
        s = self.shape
        return s.kind == "conv" and s.groups > 1 and s.groups == s.cin == s.cout

    def pruned(self, kept: Mapping[str, int], channels: Mapping[str, int]) -> LayerShape:
        """This layer's shape when each slot keeps ``kept[slot]`` of its ``channels[slot]``."""
        out_gone = sum(n * (channels[s] - kept[s]) // channels[s] for s, n in self.outs)
        in_gone = sum(n * (channels[s] - kept[s]) // channels[s] for s, n in self.ins)
        s = self.shape
        if self.depthwise or s.kind == "bn":
            width = max(1, s.cout - max(out_gone, in_gone))
            return replace(s, cin=width, cout=width, groups=width if self.depthwise else 1)
        return replace(s, cin=max(1, s.cin - in_gone), cout=max(1, s.cout - out_gone))


def layer_calls(model: nn.Module, example_inputs: torch.Tensor, batch: int) -> list[tuple[str, LayerShape, tuple[int, int]]]:
    """(name, shape at ``batch``, output size) of every conv, linear and BatchNorm2d call of one
    forward pass: of a dense model here, of any built (slimmed) model for ``DeviceTable.estimate``."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, LayerShape, tuple[int, int]]] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            shape = LayerShape(
                "conv", batch, module.in_channels, module.out_channels, x.shape[-2], x.shape[-1],
                tuple(module.kernel_size), tuple(module.stride),
                module.padding if isinstance(module.padding, str) else tuple(module.padding),
                tuple(module.dilation), module.groups, module.bias is not None,
            )
            calls.append((names[module], shape, (output.shape[-2], output.shape[-1])))
        elif isinstance(module, nn.Linear):
            rows = x.numel() // (x.shape[0] * module.in_features)
            shape = LayerShape("linear", batch, module.in_features, module.out_features, rows, 1, bias=module.bias is not None)
            calls.append((names[module], shape, (rows, 1)))
        elif isinstance(module, nn.BatchNorm2d) and x.dim() == 4:
            shape = LayerShape("bn", batch, module.num_features, module.num_features, x.shape[-2], x.shape[-1])
            calls.append((names[module], shape, (x.shape[-2], x.shape[-1])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def record_layers(model: nn.Module, space: SearchSpace, example_inputs: torch.Tensor, batch: int) -> list[Layer]:
    """The dense model's conv/linear/BN calls with shapes, and which slot prunes which channels."""
    from autoprune.graph import build_graph

    model = copy.deepcopy(model).eval()
    names = {m: n for n, m in model.named_modules()}
    calls = layer_calls(model, example_inputs, batch)

    graph = build_graph(model, example_inputs[:1])
    modules = dict(model.named_modules())
    outs: dict[str, dict[str, int]] = {}
    ins: dict[str, dict[str, int]] = {}
    for slot in space.slots:
        root = modules[slot.name]
        group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, list(range(slot.channels)))
        for item in group.items:
            target = item.dep.target.module
            if target not in names:
                continue
            is_out = graph.is_out_channel_pruning_fn(item.dep.handler) or isinstance(target, nn.BatchNorm2d)
            table = outs if is_out else ins
            per = table.setdefault(names[target], {})
            per[slot.name] = max(per.get(slot.name, 0), len(item.idxs))
    return [
        Layer(name, shape, hw, tuple(outs.get(name, {}).items()), tuple(ins.get(name, {}).items()))
        for name, shape, hw in calls
    ]


class PolicyShapes:
    """Pruned layer shapes of a policy, from the dense model's records (shared by LUT and analytic)."""

    def __init__(self, layers: list[Layer], space: SearchSpace) -> None:
        self.layers, self.space = layers, space
        self.channels = {s.name: s.channels for s in space.slots}

    def of(self, policy: Policy) -> list[LayerShape]:
        kept = self.space.kept_widths(policy)
        return [layer.pruned(kept, self.channels) for layer in self.layers]

    def reachable(self, limit: int = EAGER_LIMIT) -> list[LayerShape]:
        """Every shape any policy of the space can give (layers with too many combinations skipped)."""
        widths = {s.name: sorted({s.kept(r) for r in s.choices}) for s in self.space.slots}
        out: dict[str, LayerShape] = {}
        for layer in self.layers:
            slots = sorted({s for s, _ in layer.outs + layer.ins})
            if np.prod([len(widths[s]) for s in slots], dtype=float) > limit:
                continue
            for combo in product(*(widths[s] for s in slots)):
                kept = {**self.channels, **dict(zip(slots, combo, strict=True))}
                shape = layer.pruned(kept, self.channels)
                out.setdefault(shape.key(), shape)
        return list(out.values())


class AnalyticEstimate:
    """MACs or params of a policy from the layer records, scaled so the dense model matches exactly.

    Conv/linear/BN counts follow Torch-Pruning's counter; ops outside them (activation modules,
    pooling) are folded into the dense ratio, so the estimate is exact for conv/BN/linear networks.
    """

    def __init__(self, layers: list[Layer], space: SearchSpace, metric: str, dense_value: float) -> None:
        if metric not in ("macs", "params"):
            raise ValueError(f"analytic estimates exist for macs and params, not {metric}")
        self.metric, self.shapes = metric, PolicyShapes(layers, space)
        self._hw = [layer.out_hw for layer in layers]
        self.offset = dense_value - self.count(space.dense())

    def count(self, policy: Policy) -> float:
        shapes = self.shapes.of(policy)
        if self.metric == "params":
            return float(sum(s.params() for s in shapes))
        return float(sum(s.macs(hw) for s, hw in zip(shapes, self._hw, strict=True)))

    def __call__(self, policy: Policy) -> float:
        return self.count(policy) + self.offset
