"""Which slots break a model when pruned, found before any search so they can be frozen.

A user's model may run after pruning some slots and fail after others (a reshape to a fixed
width, a channel shuffle); ``breaking_slots`` prunes every slot at its largest ratio once and, only
if the forward pass then fails, bisects to the culprits, undoing each pruning in place.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoprune.graph import build_graph, first_line, grouped_drop, root_group

if TYPE_CHECKING:
    from autoprune.space import Slot


def forward_failure(model: nn.Module, example_inputs: torch.Tensor) -> str | None:
    """None if ``model`` runs on ``example_inputs``; else where and why its forward pass fails."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []
    failed: list[str] = []
    handles = []

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(names.get(module, "?"))

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is reported
        failed.append(f"in module {stack[-1] or '(top)'!r}" if stack else "")
        failed.append(f"{type(exc).__name__}: {first_line(exc)}")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return " ".join(p for p in failed if p) or None


def _prune_breaks(model: nn.Module, example_inputs: torch.Tensor, slots: Sequence[Slot]) -> str | None:
    """Why pruning ``slots`` at their largest ratios breaks the model, else None. The model is
    pruned in place and put back as it was (``_undone``), so no copy of it is made."""
    graph = None
    with _undone(model):
        try:
            modules = dict(model.named_modules())
            graph = build_graph(model, example_inputs)
            with torch.no_grad():
                for slot in slots:
                    kept = slot.kept(slot.choices[-1])
                    if kept < slot.channels:
                        drop = grouped_drop(torch.arange(slot.channels), slot.channels - kept, slot.groups)
                        root_group(graph, modules[slot.name], drop).prune()
            failure = forward_failure(model, example_inputs)
            return f"the pruned model's forward pass fails {failure}" if failure else None
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to prune is a reason to freeze
            return f"pruning it fails ({type(exc).__name__}: {first_line(exc)})"
        finally:
            # a graph is a web of cycles holding the traced activations and the pruned tensors:
            # free each at once, or a bisection over many slots piles them up
            del graph
            gc.collect()


@contextmanager
def _undone(model: nn.Module) -> Iterator[None]:
    """Every module's attributes, parameters, buffers and children put back as they were on
    leaving the block. Torch-Pruning prunes by replacing tensors and setting attributes
    (``out_channels``, ``normalized_shape``, ...), never by writing into a tensor, so this
    undoes a pruning exactly, and tracing's ``model.eval()`` too."""
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in model.modules()]
    try:
        yield
    finally:
        for m, attrs, params, buffers, children in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for live, was in ((m._parameters, params), (m._buffers, buffers), (m._modules, children)):
                live.clear()
                live.update(was)


def breaking_slots(model: nn.Module, example_inputs: torch.Tensor, slots: Sequence[Slot]) -> dict[str, str]:
    """Slots whose pruning breaks the model, found by bisection: name -> why.

    Every slot is pruned at its largest ratio (in place, then undone), once; only if that fails are the
    culprits looked for, so a model that prunes cleanly costs one graph build and forward pass.
    """
    active, found = list(slots), {}
    for _ in range(len(slots)):
        if not active or _prune_breaks(model, example_inputs, active) is None:
            break
        culprits = _bisect(model, example_inputs, active)
        if not culprits:  # only a combination fails: freeze the last slot and look again
            culprits = {active[-1].name: "pruning it together with the other slots breaks the model"}
        found.update(culprits)
        active = [s for s in active if s.name not in culprits]
    return found


def _bisect(model: nn.Module, example_inputs: torch.Tensor, slots: Sequence[Slot]) -> dict[str, str]:
    if len(slots) == 1:
        reason = _prune_breaks(model, example_inputs, slots)
        return {slots[0].name: reason} if reason else {}
    half = len(slots) // 2
    out = {}
    for part in (slots[:half], slots[half:]):
        if _prune_breaks(model, example_inputs, part) is not None:
            out.update(_bisect(model, example_inputs, part))
    return out
