"""Apply a policy physically (channels removed, not masked), and save/load slimmed models.

Slimmed models are stored as the Torch-Pruning pruning history plus a state dict, so loading
rebuilds the original architecture, replays the history and loads tensors with
``torch.load(..., weights_only=True)``: no code from the file is ever executed.
"""

from __future__ import annotations

import copy
import gc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autoprune.breakage import forward_failure
from autoprune.errors import UserError
from autoprune.graph import build_graph, grouped_drop, root_group, user_errors
from autoprune.space import Policy, SearchSpace, architecture_fingerprint

CRITERIA = ("magnitude", "taylor", "bn")
FORMAT = "autoprune.slimmed/1"


def importance(criterion: str) -> Callable[[Any], torch.Tensor]:
    """Torch-Pruning's group importance for a criterion name (``magnitude``, ``taylor``, ``bn``)."""
    import torch_pruning as tp

    if criterion == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "bn":
        return tp.importance.BNScaleImportance()
    raise UserError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def _taylor_gradients(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    if batch is None:
        raise UserError("the taylor criterion needs a batch of labelled data to compute gradients")
    x, y = batch
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    model.train(was_training)


def apply_policy(
    model: nn.Module,
    space: SearchSpace,
    policy: Policy,
    example_inputs: torch.Tensor,
    *,
    criterion: str = "magnitude",
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    inplace: bool = False,
    collect: bool = True,
) -> tuple[nn.Module, list]:
    """Remove the channels ``policy`` asks for; returns (slimmed model, pruning history).

    Channel importance is computed for every slot on the dense weights before anything is removed,
    so the result does not depend on the order in which slots are pruned. ``batch`` is needed only
    for the Taylor criterion (one backward pass). ``collect=False`` leaves the used graph to the
    caller's next ``gc.collect()``: a full collection took 0.65 s in a process holding pymoo, so
    EMO-PMS's stage scorer slims a generation of candidates and then collects once.
    """
    space.check(policy)
    if not inplace:
        model = copy.deepcopy(model)
    scorer = importance(criterion)
    graph = build_graph(model, example_inputs)
    if criterion == "taylor":
        _taylor_gradients(model, batch)
    modules = dict(model.named_modules())
    ratios = policy.as_dict()
    plans = []
    with torch.no_grad():
        for slot in space.slots:
            kept = slot.kept(ratios.get(slot.name, 0.0))
            if kept >= slot.channels:
                continue
            root = modules[slot.name]
            with user_errors(f"scoring the channels of slot {slot.name!r}"):
                scores = scorer(root_group(graph, root, list(range(slot.channels))))
            if scores is None:  # no weights the criterion understands: fall back to magnitude
                scores = root.weight.detach().flatten(1).norm(dim=1)
            # grouped convs / heads: the same positions go from every group (kept % groups == 0)
            plans.append((slot.name, root, grouped_drop(scores, slot.channels - kept, slot.groups)))
    for name, root, idxs in plans:
        with user_errors(f"pruning slot {name!r} (freeze it through --space to go on)"):
            root_group(graph, root, idxs).prune()
    model.zero_grad(set_to_none=True)
    history = [list(h) for h in graph.pruning_history()]
    if collect:
        _free(graph)
    else:
        del graph
    failure = forward_failure(model, example_inputs)
    if failure:
        pruned = ", ".join(repr(n) for n, _, _ in plans)
        raise UserError(
            f"the pruned model's forward pass fails {failure}; freeze the slot feeding that module "
            f"through --space (pruned here: {pruned})"
        )
    return model, history


def _free(graph: Any) -> None:
    """Collect a used graph now: its cycles hold the traced activations and, through autograd, the
    dense tensors pruning replaced (a model's worth of weights) until the next full collection."""
    del graph
    gc.collect()


def kept_widths(model: nn.Module, space: SearchSpace) -> dict[str, int]:
    """Actual output width of every slot's root module in a (slimmed) model."""
    modules = dict(model.named_modules())
    widths = {}
    for slot in space.slots:
        m = modules[slot.name]
        widths[slot.name] = int(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
    return widths


def save_slimmed(
    path: str | Path,
    model: nn.Module,
    history: list,
    *,
    fingerprint: str,
    input_shape: tuple[int, ...],
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a slimmed model as pruning history + state dict (loadable with weights_only=True)."""
    payload = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "input_shape": list(input_shape),
        "pruning": history,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_slimmed(path: str | Path) -> dict[str, Any]:
    """The raw payload of a slimmed-model file, checked for format."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"slimmed model {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{path} is not a readable autoprune model ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an autoprune slimmed model (expected format {FORMAT})")
    return payload


def load_slimmed(path: str | Path, dense_model: nn.Module) -> nn.Module:
    """Rebuild a slimmed model: the dense architecture, the pruning history, then the weights."""
    payload = read_slimmed(path)
    if payload["fingerprint"] != architecture_fingerprint(dense_model):
        raise UserError(f"{path} was pruned from another architecture than the model given")
    model = copy.deepcopy(dense_model).eval()
    example = torch.randn(1, *payload["input_shape"])
    graph = build_graph(model, example)
    with user_errors(f"replaying the pruning history of {path}"):
        graph.load_pruning_history([tuple(h) for h in payload["pruning"]])
    try:
        state = OrderedDict(payload["state_dict"])
        # module versions (torchvision's MNASNet refuses a state dict without them) as the
        # architecture itself records them: the file holds tensors only
        state._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the replayed pruning ({str(exc).splitlines()[0]})") from exc
    _free(graph)
    return model
