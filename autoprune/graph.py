"""Torch-Pruning's dependency graph, built and read the one way autoprune does it.

Every graph build goes through ``build_graph`` so that (1) a model Torch-Pruning cannot trace is a
one-line ``UserError`` naming the layer, (2) a reshape it cannot map (ShuffleNet's channel
shuffle divides by zero there) is recorded instead of crashing, so the groups through it can be
frozen, and (3) its "unwrapped parameters" notice is said once per process, in a stable order.
The helpers below read channel grouping (grouped convs, GroupNorm, attention heads) the way
Torch-Pruning's own ``BasePruner`` does: prune the same positions in every channel group.
"""

from __future__ import annotations

import math
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from autoprune.errors import UserError

if TYPE_CHECKING:
    pass

_UNMAPPED = "_autoprune_unmapped"
_RESHAPES = "_autoprune_reshapes"
_RESHAPE_OPS = {"view", "reshape", "flatten", "unflatten"}
# Indices Torch-Pruning's flatten mappings may produce while one group is built. A flatten maps a
# channel to `stride` positions; in Swin's attention (relative position bias, shift-mask expand)
# the walk passes such mappings again and again, multiplying the list without bound (over 16 GB
# for one swin_t group). The largest legitimate use, VGG's 512 x 7 x 7 classifier input, is 25k.
EXPANSION_LIMIT = 2_000_000
_budget: list[int | None] = [None]


class IndexExpansionError(RuntimeError):
    """Torch-Pruning's index mapping for one group grew past ``EXPANSION_LIMIT``."""


class _ReshapeRecorder(TorchFunctionMode):
    """Records the input and output shape of every reshape in a forward pass, by the output's
    autograd node (Torch-Pruning's graph nodes hold the same ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in _RESHAPE_OPS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            self.shapes[out.grad_fn] = (tuple(args[0].shape), tuple(out.shape))
        return out


def _relays_channels(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """Whether a reshape moves channels to other positions (a channel shuffle's split of C into
    groups), which Torch-Pruning maps as if it did not. Kept safe: batch and channel dims in
    front unchanged, a flatten to (N, features), or, for token and window layouts (not 4-D),
    an unchanged last (channel) dim. 4-D inputs are taken as NCHW."""
    if before[:2] == after[:2] or len(after) == 2:
        return False
    return not (len(before) != 4 and before[-1] == after[-1])
_said: set[str] = set()


def warn_once(message: str) -> None:
    """Emit ``message`` as a UserWarning the first time this process sees it."""
    if message not in _said:
        _said.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _install_reshape_guard() -> None:
    """Wrap Torch-Pruning's reshape and concat index mappings so one it cannot map is recorded on
    the graph (and its groups frozen by the caller) instead of ending the build: a reshape raises
    ZeroDivisionError (ShuffleNet's shuffle), a concat whose input widths it cannot infer sums a
    None (TypeError: Swin-S's patch merging, 18 blocks deep), and its flatten mappings can grow
    without bound (``EXPANSION_LIMIT``)."""
    from torch_pruning.dependency import index_mapping

    def guard(name: str, errors: tuple[type[Exception], ...]) -> None:
        original = getattr(index_mapping, name)
        if getattr(original, "_autoprune_guard", False):
            return

        def guarded(graph: Any, node: Any) -> None:
            try:
                original(graph, node)
            except errors:
                graph.__dict__.setdefault(_UNMAPPED, set()).add(node)

        guarded._autoprune_guard = True  # type: ignore[attr-defined]
        setattr(index_mapping, name, guarded)

    guard("update_reshape_index_mapping", (ZeroDivisionError,))
    guard("update_concat_index_mapping", (TypeError,))

    flatten = index_mapping._FlattenIndexMapping
    if getattr(flatten.__call__, "_autoprune_guard", False):
        return
    expand = flatten.__call__

    def bounded(self: Any, idxs: Any) -> Any:
        if _budget[0] is not None and not self.reverse:
            _budget[0] -= len(idxs) * self._stride
            if _budget[0] < 0:
                raise IndexExpansionError(
                    f"its index mapping through reshapes grows without bound (over {EXPANSION_LIMIT:,} "
                    "indices; Torch-Pruning walks a flatten mapping again and again)"
                )
        return expand(self, idxs)

    bounded._autoprune_guard = True  # type: ignore[attr-defined]
    flatten.__call__ = bounded


def build_graph(model: nn.Module, example_inputs: torch.Tensor) -> Any:
    """Torch-Pruning's dependency graph of ``model``; a failure is a UserError naming the layer."""
    import torch_pruning as tp

    _install_reshape_guard()
    graph = tp.DependencyGraph()
    recorder = _ReshapeRecorder()
    try:
        with torch.enable_grad(), recorder:
            graph.build_dependency(model, example_inputs=example_inputs, verbose=False)
    except Exception as exc:
        where = _failing_node(exc, graph)
        raise UserError(
            f"Torch-Pruning cannot trace {type(model).__name__}{where}: {type(exc).__name__}: "
            f"{first_line(exc)}; this architecture cannot be pruned as it is (replace that "
            "operation, or prune a model built without it)"
        ) from exc
    graph.__dict__[_RESHAPES] = recorder.shapes
    names = [graph._param_to_name[p.parameters] for p in graph.unwrapped_parameters if p.parameters in graph._param_to_name]
    if names:
        warn_once(
            f"{type(model).__name__}: parameters outside standard layers ({', '.join(sorted(names))}) "
            "are pruned along their last non-singleton dimension, with the channels they follow"
        )
    return graph


def all_groups(graph: Any, ignored: list[nn.Module]) -> tuple[list[Any], dict[nn.Module, str]]:
    """Every prunable group (as Torch-Pruning's ``get_all_groups``), and the roots whose group
    Torch-Pruning fails to build (root -> why) instead of one failure ending the enumeration."""
    with _mapped_once(graph):
        return _enumerate_groups(graph, ignored)


@contextmanager
def _mapped_once(graph: Any) -> Iterator[None]:
    """Torch-Pruning re-derives every index mapping at each group build, since channels change as
    layers are pruned; while nothing is pruned, one derivation serves every group (for Swin it is
    most of the time: deep channel inference at every reshape, for every group)."""
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_index_mapping
    original(graph)
    index_mapping.update_index_mapping = lambda g: None if g is graph else original(g)
    try:
        yield
    finally:
        index_mapping.update_index_mapping = original


def _enumerate_groups(graph: Any, ignored: list[nn.Module]) -> tuple[list[Any], dict[nn.Module, str]]:
    groups, failed, visited = [], {}, set()
    for module in list(graph.module2node):
        if module in ignored or not isinstance(module, (nn.Conv2d, nn.Linear)) or module in visited:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = root_group(graph, module, list(range(pruner.get_out_channels(module))))
        except IndexExpansionError as exc:
            failed[module] = f"Torch-Pruning cannot map its channels: {exc}"
            continue
        except MemoryError:
            raise  # not a property of the layer: freezing it would make the outcome depend on RAM
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's index mappings fail in many ways
            failed[module] = f"Torch-Pruning cannot map its channels ({type(exc).__name__}: {first_line(exc)})"
            continue
        outs = [i.dep.target.module for i in group.items if graph.is_out_channel_pruning_fn(i.dep.handler)]
        visited.update(outs)
        if not any(m in ignored for m in outs):
            groups.append(group)
    return groups, failed


def root_group(graph: Any, root: nn.Module, idxs: list[int]) -> Any:
    """The group that removing output channels ``idxs`` of ``root`` prunes (an
    ``IndexExpansionError`` where Torch-Pruning's index mapping grows without bound)."""
    prune_fn = graph.get_pruner_of_module(root).prune_out_channels
    _budget[0] = EXPANSION_LIMIT
    try:
        return graph.get_pruning_group(root, prune_fn, idxs)
    finally:
        _budget[0] = None


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose every output channel reads only its own input channel."""
    return isinstance(module, nn.Conv2d) and module.groups == module.out_channels and module.groups > 1


def channel_groups(graph: Any, group: Any) -> int:
    """How many equal channel groups the group's channels fall into (1: none).

    Grouped convs, GroupNorm and multi-head attention split channels into equal groups; pruning
    must remove the same positions from every group (as Torch-Pruning's BasePruner does), so
    kept widths are multiples of this (the least common multiple over the group's layers).
    Depthwise convs follow their producer channel by channel and add no constraint.
    """
    count = 1
    for item in group.items:
        module, handler = item.dep.target.module, item.dep.handler
        if is_depthwise(module) or not isinstance(module, nn.Module):
            continue
        if isinstance(module, nn.MultiheadAttention):
            n = module.num_heads
        else:
            pruner = graph.get_pruner_of_module(module)
            if pruner is None:
                continue
            out = graph.is_out_channel_pruning_fn(handler)
            n = pruner.get_out_channel_groups(module) if out else pruner.get_in_channel_groups(module)
        count = math.lcm(count, max(1, int(n)))
    return count


def unmapped_reshape(graph: Any, group: Any) -> str | None:
    """Where the group passes a reshape or concat Torch-Pruning could not map, or a reshape that
    re-lays channels (its channels would be mis-indexed there), else None."""
    bad = graph.__dict__.get(_UNMAPPED, set())
    shapes = graph.__dict__.get(_RESHAPES, {})
    for item in group.items:
        for node in (item.dep.source, item.dep.target):
            seen = shapes.get(getattr(node, "grad_fn", None))
            if node in bad or (seen is not None and _relays_channels(*seen)):
                return _node_label(node, graph)
    return None


def grouped_drop(scores: torch.Tensor, n_drop: int, groups: int) -> list[int]:
    """Indices of the ``n_drop`` least important channels, the same positions in every group.

    Scores are averaged over the groups per position (Torch-Pruning's BasePruner does the same);
    ``n_drop`` must be a multiple of ``groups``.
    """
    if groups <= 1:
        return sorted(int(i) for i in torch.argsort(scores.float(), stable=True)[:n_drop])
    size = scores.numel() // groups
    per_position = scores.float().view(groups, size).mean(dim=0)
    positions = torch.argsort(per_position, stable=True)[: n_drop // groups]
    return sorted(int(p) + g * size for g in range(groups) for p in positions)


@contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Turn any failure inside Torch-Pruning while doing ``what`` into a one-line UserError."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{what} failed: {type(exc).__name__}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def _node_label(node: Any, graph: Any) -> str:
    names = getattr(graph, "_module2name", {})
    if node.module in names:
        return repr(names[node.module])
    frontier, seen = list(node.inputs), set()
    for _ in range(8):  # walk back through unnamed ops (activations, adds) to a named layer
        named = [names[n.module] for n in frontier if n.module in names]
        if named:
            return f"{node.name} after {', '.join(map(repr, named))}"
        seen.update(frontier)
        frontier = [i for n in frontier for i in n.inputs if i not in seen]
    return str(node.name)


def _failing_node(exc: BaseException, graph: Any) -> str:
    """' at <node>' for the innermost Torch-Pruning graph node in the failing frames, if any."""
    from torch_pruning.dependency.node import Node

    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        for value in frame.f_locals.values():
            if isinstance(value, Node):
                return f" at {_node_label(value, graph)}"
    return ""
