"""The search space: slots (Torch-Pruning dependency groups), variables, and pruning policies.

A *slot* is one coupled group of channels that must be pruned together (a conv, its BatchNorm,
the next conv's inputs, and every residual branch summed with it), named by its root module
path. A *variable* is one searchable decision: a single slot (``granularity: slot``) or a stage of
slots that share a width multiplier (``granularity: stage``). A *policy* maps every slot to a
pruning ratio; it carries the architecture fingerprint so it is never applied to another network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.breakage import breaking_slots, forward_failure
from autoprune.errors import UserError
from autoprune.graph import (
    all_groups,
    build_graph,
    channel_groups,
    is_depthwise,
    unmapped_reshape,
    warn_once,
)
from autoprune.rules import SpaceRules


@dataclass(frozen=True)
class Slot:
    """One prunable dependency group.

    Attributes:
        name: root module path of the group (``layer2.0.conv1``).
        channels: width of the group in the dense model.
        choices: ordered pruning ratios this slot may take.
        round_to: kept widths are multiples of this.
        stage: the stage this slot belongs to (used by ``granularity: stage``).
        groups: equal channel groups the width falls into (grouped convs, attention heads); the
            same positions are pruned in every group, so kept widths are multiples of it too.
    """

    name: str
    channels: int
    choices: tuple[float, ...]
    round_to: int = 1
    stage: str = ""
    groups: int = 1

    @property
    def step(self) -> int:
        """Kept widths are multiples of this: ``round_to`` and ``groups`` together, or ``groups``
        alone where both together would leave nothing to prune."""
        both = math.lcm(self.round_to, self.groups)
        return self.groups if both >= self.channels and self.groups > 1 else both

    def kept(self, ratio: float) -> int:
        """Channels kept at ``ratio``: nearest multiple of ``step``, at least one block."""
        if ratio <= 0.0:
            return self.channels
        step = self.step
        kept = int(math.floor(self.channels * (1.0 - ratio) / step + 0.5)) * step
        return int(min(self.channels, max(min(step, self.channels), kept)))


@dataclass(frozen=True)
class Variable:
    """One searchable decision: the ratio shared by ``slots``."""

    name: str
    slots: tuple[str, ...]
    choices: tuple[float, ...]

    @property
    def step(self) -> float | None:
        """The common spacing of the choices, or None where they are not evenly spaced."""
        if len(self.choices) < 2:
            return None
        gaps = np.diff(self.choices)
        return float(round(gaps[0], 6)) if np.allclose(gaps, gaps[0], atol=1e-9) else None


@dataclass(frozen=True)
class Policy:
    """An immutable pruning policy: slot name -> pruning ratio, for one architecture."""

    fingerprint: str
    items: tuple[tuple[str, float], ...]

    @classmethod
    def from_dict(cls, fingerprint: str, ratios: Mapping[str, float]) -> Policy:
        return cls(fingerprint, tuple((k, float(v)) for k, v in ratios.items()))

    def as_dict(self) -> dict[str, float]:
        return dict(self.items)

    def __getitem__(self, slot: str) -> float:
        return self.as_dict()[slot]

    def mean_ratio(self) -> float:
        return float(np.mean([r for _, r in self.items])) if self.items else 0.0


def architecture_fingerprint(model: nn.Module) -> str:
    """A short hash of the model class and every parameter and buffer shape."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(tensor.shape)};".encode())
    return h.hexdigest()[:16]


def find_classifier(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """The output layer(s): pruning their outputs would remove classes, so they are ignored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example_inputs)
    except Exception as exc:
        why = forward_failure(model, example_inputs) or f"{type(exc).__name__}: {exc}"
        raise UserError(
            f"{type(model).__name__} fails its forward pass on an input of shape "
            f"{tuple(example_inputs.shape)} ({why}); check the model and --image-size"
        ) from exc
    finally:
        model.train(was_training)
    n_out = out.shape[1]
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == n_out:
            last = module
        elif isinstance(module, nn.Conv2d) and module.out_channels == n_out:
            last = module
    return [last] if last is not None else []


class SearchSpace:
    """The slots of one architecture, the variables searched over them, and conversions.

    Built once from the dense model (``from_model``); static for the whole search. Searchers work
    either on policies or on integer vectors (one choice index per variable, ``encode``/``decode``)
    for pymoo and stable-baselines3.
    """

    def __init__(
        self,
        slots: Sequence[Slot],
        fingerprint: str,
        rules: SpaceRules | None = None,
        frozen: Sequence[str] = (),
        frozen_reasons: Mapping[str, str] | None = None,
    ) -> None:
        self.rules = rules or SpaceRules()
        self.slots: tuple[Slot, ...] = tuple(slots)
        self.fingerprint = fingerprint
        self.frozen: tuple[str, ...] = tuple(frozen)
        # slots autoprune froze itself (not by the rules), with why: shown to the user once
        self.frozen_reasons: dict[str, str] = dict(frozen_reasons or {})
        if not self.slots:
            raise UserError(
                "the model has no prunable group (every conv/linear is frozen or feeds the output); "
                "check the search-space rules' 'frozen' patterns"
            )
        self._slot_by_name = {s.name: s for s in self.slots}
        self.variables: tuple[Variable, ...] = self._make_variables()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_model(
        cls, model: nn.Module, example_inputs: torch.Tensor, rules: SpaceRules | None = None
    ) -> SearchSpace:
        """Enumerate the model's dependency groups (Torch-Pruning) as slots.

        Groups that cannot be pruned correctly are frozen, with one warning naming each and why:
        a group through a reshape Torch-Pruning cannot map (a channel shuffle), a grouped conv that
        allows no smaller width, or a group whose pruning breaks the model's forward pass (found
        by pruning every slot at its largest ratio once, and bisecting if that fails).
        """
        rules = rules or SpaceRules()
        ignored = find_classifier(model, example_inputs)
        names = {m: n for n, m in model.named_modules()}
        graph = build_graph(model, example_inputs)
        groups, failed = all_groups(graph, ignored + list(graph.IGNORED_LAYERS_IN_TRACING))
        raw: list[tuple[str, int, int, str | None]] = [
            (names[m], graph.get_out_channels(m), 1, why) for m, why in failed.items()
        ]
        for group in groups:
            root = _producer_root(group, graph)
            if root is None:
                continue
            where = unmapped_reshape(graph, group)
            reason = f"its channels pass a reshape or concat Torch-Pruning cannot map ({where})" if where else None
            near = [names[i.dep.target.module] for i in group.items
                    if i.dep.target.module in failed and graph.is_out_channel_pruning_fn(i.dep.handler)]
            if near and reason is None:
                reason = f"it shares channels with {near[0]!r}, which Torch-Pruning cannot map"
            raw.append((names[root], len(group[0].idxs), channel_groups(graph, group), reason))
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        raw.sort(key=lambda item: order[item[0]])
        frozen = [n for n, *_ in raw if rules.is_frozen(n)]
        reasons = {n: r for n, _, _, r in raw if r is not None and n not in frozen}
        auto_stage = _auto_stages([n for n, *_ in raw])
        slots = []
        for name, channels, n_groups, _ in raw:
            if name in frozen or name in reasons or channels < 2:
                continue
            choices, round_to = rules.for_slot(name)
            slot = Slot(name, channels, choices, round_to, rules.stage_of(name) or auto_stage[name], n_groups)
            if slot.step >= channels and n_groups > 1:
                reasons[name] = f"its {n_groups} channel groups (grouped conv or heads) leave no smaller width"
                continue
            slots.append(slot)
        if slots:
            broken = breaking_slots(model, example_inputs, slots)
            reasons.update(broken)
            slots = [s for s in slots if s.name not in broken]
        if reasons:
            listed = "; ".join(f"{n!r}: {r}" for n, r in reasons.items())
            warn_once(
                f"{type(model).__name__}: {len(reasons)} slot(s) frozen, never pruned: {listed}. "
                "List them under 'frozen' in a --space file to silence this warning."
            )
        return cls(slots, architecture_fingerprint(model), rules, [*frozen, *reasons], reasons)

    def _make_variables(self) -> tuple[Variable, ...]:
        if self.rules.granularity == "slot":
            return tuple(Variable(s.name, (s.name,), s.choices) for s in self.slots)
        stages: dict[str, list[Slot]] = {}
        for s in self.slots:
            stages.setdefault(s.stage, []).append(s)
        variables = []
        for stage, members in stages.items():
            common = sorted(set.intersection(*(set(m.choices) for m in members)))
            if not common:
                raise UserError(f"stage {stage!r}: its slots share no ratio choice; align their ratios")
            variables.append(Variable(stage, tuple(m.name for m in members), tuple(common)))
        return tuple(variables)

    # -- lookups ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.variables)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)

    def slot(self, name: str) -> Slot:
        return self._slot_by_name[name]

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    def size(self) -> int:
        """Number of distinct policies (product of choice counts)."""
        return int(np.prod([len(v.choices) for v in self.variables], dtype=float))

    # -- policies -----------------------------------------------------------------------------
    def policy(self, values: Mapping[str, float]) -> Policy:
        """A policy from per-variable ratios (a missing variable is not pruned)."""
        ratios: dict[str, float] = {}
        for var in self.variables:
            r = float(values.get(var.name, 0.0))
            for slot in var.slots:
                ratios[slot] = r
        return Policy.from_dict(self.fingerprint, ratios)

    def uniform(self, ratio: float) -> Policy:
        """Every slot at ``ratio`` snapped to its nearest choice."""
        return self.policy({v.name: _nearest(v.choices, ratio) for v in self.variables})

    def dense(self) -> Policy:
        return self.uniform(0.0)

    def most_pruned(self) -> Policy:
        return self.policy({v.name: v.choices[-1] for v in self.variables})

    def variable_values(self, policy: Policy) -> dict[str, float]:
        """Per-variable ratios of a policy made in this space."""
        ratios = policy.as_dict()
        return {v.name: ratios[v.slots[0]] for v in self.variables}

    def kept_widths(self, policy: Policy) -> dict[str, int]:
        ratios = policy.as_dict()
        return {s.name: s.kept(ratios.get(s.name, 0.0)) for s in self.slots}

    def check(self, policy: Policy) -> None:
        """Raise a UserError unless ``policy`` was made for this architecture and space."""
        if policy.fingerprint != self.fingerprint:
            raise UserError(
                f"the policy was made for another architecture (fingerprint {policy.fingerprint}, "
                f"this model is {self.fingerprint}); search again for this model"
            )
        unknown = set(policy.as_dict()) - set(self.slot_names) - set(self.frozen)
        if unknown:
            raise UserError(f"the policy names slot {sorted(unknown)[0]!r}, which this model lacks")

    # -- vectors for pymoo / stable-baselines3 ------------------------------------------------
    def encode(self, policy: Policy) -> np.ndarray:
        """Choice index per variable."""
        values = self.variable_values(policy)
        return np.array(
            [v.choices.index(_nearest(v.choices, values[v.name])) for v in self.variables], dtype=int
        )

    def decode(self, x: Sequence[float] | np.ndarray) -> Policy:
        """A policy from choice indices (floats are rounded and clipped)."""
        values = {}
        for v, xi in zip(self.variables, np.asarray(x, dtype=float), strict=True):
            values[v.name] = v.choices[int(np.clip(round(float(xi)), 0, len(v.choices) - 1))]
        return self.policy(values)

    def upper_bounds(self) -> np.ndarray:
        return np.array([len(v.choices) - 1 for v in self.variables], dtype=int)

    def sample(self, rng: np.random.Generator, lower: Sequence[int] | None = None) -> Policy:
        """A policy with every variable drawn uniformly from its choices (from index ``lower[i]`` on)."""
        low = [0] * len(self.variables) if lower is None else [int(i) for i in lower]
        return self.decode([rng.integers(lo, len(v.choices)) for v, lo in zip(self.variables, low, strict=True)])


def _producer_root(group: Any, graph: Any) -> nn.Module | None:
    """The module that names a group: its first root, or, where that is a depthwise conv (which
    only follows the channels of its producer), the conv or linear layer whose outputs it prunes."""
    root = group[0].dep.target.module
    if not is_depthwise(root):
        return root
    for item in group:
        module = item.dep.target.module
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module) and graph.is_out_channel_pruning_fn(item.dep.handler):
            return module
    return None


def _nearest(choices: Sequence[float], value: float) -> float:
    return min(choices, key=lambda c: (abs(c - value), c))


def _auto_stages(names: Sequence[str]) -> dict[str, str]:
    """Stage of each slot: its top-level module, or the first two path parts if that is one stage."""
    first = {n: n.split(".")[0] for n in names}
    if len(set(first.values())) > 1:
        return first
    return {n: ".".join(n.split(".")[:2]) for n in names}
