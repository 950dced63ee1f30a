"""The Python API: ``search``, ``apply``, ``export`` and ``load`` for a user's own model and data.

``autoprune search`` on the command line is a thin layer over the same function
(``search_run.run_search``), so the same settings and seed give the same policies and accuracies
either way. A model or data given as live objects (an ``nn.Module``, torch datasets) is held by
this process: trials run on the ``inline`` executor. To run trials in parallel (``processes``,
``ray``), workers rebuild the task from specs: a model spec (``pkg.module:factory``) with a
state-dict checkpoint (or ``builder=`` with a live model, whose state dict is saved for them), and
a data spec (``imagefolder:DIR``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.search_run import SearchResult, run_search
from autoprune.settings import SearchSettings, settings_from_dict
from autoprune.space import Policy
from autoprune.task import Task, TaskRecipe, accuracy, cache_dir, register_task

__all__ = ["SearchResult", "apply", "export", "search"]

Evaluate = Callable[[nn.Module], float]
Finetune = Callable[[nn.Module, nn.Module, int], Any]


def search(model: nn.Module | str = "resnet20", data: Any = "digits", *, target: str = "latency",
           budget: float | str | None = None, searcher: str = "tpe", trials: int = 20, evaluate: Evaluate | None = None,
           finetune: Finetune | None = None, builder: str | None = None, augment: bool = False,
           verbose: bool = True, **options: Any) -> SearchResult:
    """Search per-group pruning ratios of ``model`` that meet ``budget`` of ``target``; fine-tune,
    export and report the best, as ``autoprune search`` does.

    ``model``: a trained ``nn.Module`` (copied, never changed) or a model spec (``resnet20``,
    ``torchvision:resnet18``, ``pkg.module:factory``). ``data``: a spec (``digits``,
    ``imagefolder:DIR``) or torch datasets of (image, label), ``(train, val, test)``,
    ``(train, test)`` or a dict (see ``autoprune.data.datasets``); ``augment`` crops and flips
    them in fine-tunes. ``evaluate(model) -> float`` (higher is better) replaces val accuracy as
    the score; ``finetune(student, teacher, steps)`` replaces distillation. ``builder``, a
    ``pkg.module:factory`` that rebuilds ``model``'s architecture, lets a live model run on the
    ``processes`` or ``ray`` executor. ``options`` are any other ``autoprune search`` setting by
    its flag's name (``fidelity="kd:30"``, ``final_steps=100``, ``seed=1``, ``run_dir=...``);
    an unknown or ill-typed one is a ``UserError`` naming it. ``budget`` defaults to 0.5 of dense;
    with ``objectives="accuracy,latency"`` the search returns a front instead (``result.front``;
    no model) and ``budget`` left out bounds nothing.
    """
    from autoprune.progress import make_console

    values = {"target": target, "budget": budget, "searcher": searcher, "trials": trials, **options}
    live_model = isinstance(model, nn.Module)
    if not live_model and not isinstance(model, str):
        raise UserError(f"model must be an nn.Module or a model spec string, got {type(model).__name__}")
    if builder is not None and not live_model:
        raise UserError("builder= goes with a live nn.Module model; with a model spec, pass checkpoint= instead")
    if live_model and "space" not in options:
        from autoprune.pipeline import default_rules_for

        values["space"] = default_rules_for(model)
    if live_model and builder is not None:  # workers rebuild it: builder + its saved state dict
        values.update(model=builder, checkpoint=str(_save_state(model, options.get("cache_dir"))))
        live_model = False
    elif not live_model:
        values["model"] = model
    if isinstance(data, str):
        values["data"] = data
    settings = settings_from_dict(values, "autoprune.search")
    task = None
    if live_model or not isinstance(data, str):
        task = live_task(model if live_model else None, data, settings, evaluate=evaluate, augment=augment)
        settings = settings.replace(model=task.recipe.model, data=task.recipe.data)
    console = make_console(stderr=True, quiet=not verbose)
    return run_search(settings, console, "python: autoprune.search(...)", task=task, evaluate=evaluate, finetune=finetune,
                      table_to_stdout=False)


def _save_state(model: nn.Module, cache: str | None) -> Path:
    """``model``'s state dict under the cache, named by its content (workers load it by path)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    blob = buffer.getvalue()
    path = (Path(cache).expanduser() if cache else cache_dir()) / "live" / f"{hashlib.sha256(blob).hexdigest()[:16]}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return path


def live_task(model: nn.Module | None, data: Any, settings: SearchSettings, *, evaluate: Evaluate | None = None,
              augment: bool = False) -> Task:
    """The task of a live model and/or live data, registered so that this process's trials find it.

    With ``model`` None the settings' model spec is built and trained (or its checkpoint loaded)
    as the CLI does; with a data spec string the data is loaded as the CLI does.
    """
    from autoprune.data import load_data
    from autoprune.data.datasets import from_datasets
    from autoprune.models import build_model, load_checkpoint
    from autoprune.task import _dense_model

    seed = settings.seed
    if isinstance(data, str):
        splits = load_data(data, image_size=settings.image_size, seed=seed, cache_dir=settings.cache_dir, progress=True)
        data_name = data
    else:
        if settings.image_size is not None:
            raise UserError("image_size applies to a data spec; resize your datasets' images instead")
        splits = from_datasets(data, seed=seed, augment=augment)
        data_name = f"live:datasets({len(splits.train)}+{len(splits.val)}+{len(splits.test)})"
    splits = splits.with_limits(settings.train_limit, settings.val_limit, seed)
    c, h, w = splits.input_shape
    name = f"live:{type(model).__name__}" if model is not None else settings.model
    recipe = TaskRecipe(model=name, data=data_name, checkpoint=settings.checkpoint if model is None else None,
                        image_size=settings.image_size, seed=seed, cache_dir=settings.cache_dir,
                        dense_epochs=settings.dense_epochs, train_limit=settings.train_limit,
                        val_limit=settings.val_limit, live=uuid.uuid4().hex[:12])
    if model is None:
        torch.manual_seed(seed)
        dense = build_model(settings.model, num_classes=splits.num_classes, in_channels=c)
        if settings.checkpoint is not None:
            load_checkpoint(dense, settings.checkpoint, spec=settings.model)
        else:
            _dense_model(recipe, splits, dense, progress=True, device=settings.device)
    else:
        dense = copy.deepcopy(model)
    dense.eval()
    _check_fits(dense, (c, h, w), splits.num_classes)
    if evaluate is not None:
        with torch.no_grad():
            val = float(evaluate(dense))
    else:
        val = accuracy(dense, splits, splits.val)
    task = Task(recipe, dense, splits, (c, h, w), {"val": val})  # the user's score where given; test when asked
    register_task(task)
    return task


def _check_fits(model: nn.Module, shape: tuple[int, int, int], classes: int) -> None:
    """One forward pass on zeros: a model that does not take these images, or gives fewer outputs
    than the data has classes, is refused in one line here rather than deep inside a trial."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as exc:  # noqa: BLE001 - whatever the user's model raises
        raise UserError(f"the model does not run on the data's images (2 x {' x '.join(map(str, shape))}): "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the model's output on a batch of 2 is {got}; a classifier of the data's {classes} classes "
                        f"gives (2, {classes})")


def apply(model: nn.Module, policy: Policy | SearchResult | str | Path, data: Any, *, finetune_steps: int = 600,
          lr: float = 0.01, seed: int = 0, augment: bool = False, finetune: Finetune | None = None) -> nn.Module:
    """``policy`` (a ``policy.yaml``, a ``Policy`` or a ``SearchResult``) applied to the dense
    ``model`` (not changed): slimmed, BN-recalibrated and fine-tuned for ``finetune_steps`` on
    ``data`` as the search's final fine-tune does. Returns the slimmed model in eval mode."""
    from autoprune.evaluators import DistillConfig
    from autoprune.pipeline import default_rules_for
    from autoprune.policy_io import load_policy
    from autoprune.rules import load_rules
    from autoprune.space import SearchSpace
    from autoprune.trial import ScoringConfig, fine_tune, slim

    if finetune_steps < 0:
        raise UserError(f"finetune_steps must be at least 0, got {finetune_steps}")
    provenance: dict[str, Any] = {}
    if isinstance(policy, SearchResult):
        policy = policy.policy
    elif isinstance(policy, (str, Path)):
        policy, provenance = load_policy(policy)
    settings = SearchSettings(seed=seed, lr=lr)
    task = live_task(model, data, settings, augment=augment)
    rules_name = provenance.get("search_space") or default_rules_for(model)
    rules = load_rules(rules_name).with_granularity(provenance.get("granularity", "slot"))
    space = SearchSpace.from_model(task.model, task.example_inputs(), rules)
    space.check(policy)
    criterion = provenance.get("criterion", "magnitude")
    torch.manual_seed(seed)
    slimmed, _ = slim(task, space, policy, criterion, seed)
    scoring = ScoringConfig(criterion=criterion, distill=DistillConfig(lr=lr), finetune=finetune)
    fine_tune(slimmed, task, scoring, finetune_steps, seed)
    return slimmed.eval()


def export(source: SearchResult | str | Path, out: str | Path, fmt: str | None = None, *,
           inputs: torch.Tensor | None = None, trust_factory: bool = False) -> Any:
    """Write a search's slimmed model (a ``SearchResult`` or a ``model.pt`` path) to ``out`` as
    torch, ONNX or TorchScript (``fmt``, default by suffix), checked against the slimmed model on
    ``inputs`` (default: random ones). Returns the check (``ExportCheck``)."""
    from autoprune.model_io import export_model, output_format, read, write

    if isinstance(source, SearchResult):
        slimmed = read(source.run_dir / "model.pt", dense_model=source.dense)
        return write(slimmed, out, output_format(out, fmt), inputs=inputs)
    return export_model(source, out, fmt, inputs=inputs, trust_factory=trust_factory)
