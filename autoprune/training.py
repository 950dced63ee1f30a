"""Training a dense model from scratch: the cached reference of a task and ``autoprune train``.

Kept apart from ``autoprune.task`` (which decides when a dense model is trained, cached or
loaded) because it is the one long loop of the project: resumable per epoch, with a progress bar.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autoprune import meter
from autoprune.data import DataSplits, Split, batches
from autoprune.errors import UserError


def train_dense(
    model: nn.Module,
    data: DataSplits,
    *,
    epochs: int,
    seed: int,
    split: Split | None = None,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = False,
    description: str = "training",
    resume_state: dict[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> nn.Module:
    """Train ``model`` in place on ``split`` (default: train) and return it in eval mode.

    SGD with Nesterov momentum, ``lr`` scaled by batch_size/128, cosine decay per step, weight
    decay, augmentation when ``data.augment``. Batches are drawn from generators seeded by
    ``seed`` and the epoch, so a run is reproducible given the model's initial weights.

    Long trainings are resumable: after each epoch ``on_epoch(epochs_done, state)`` gets the
    model, optimizer and schedule state; passing that ``state`` back as ``resume_state``
    continues from the next epoch with the same batches, so an interrupted run ends where an
    uninterrupted one would.

    On a CUDA ``device`` (``autoprune.device``) the split and the model move there for the
    training, forward passes run in bfloat16 autocast, and the model comes back to the CPU.
    """
    from autoprune.device import autocast, resolve

    where = resolve(device)
    split = data.train if split is None else split
    if where.type != "cpu":
        split = Split(split.images.to(where), split.labels.to(where))
        model.to(where)
    if len(split) == 0:
        raise UserError("cannot train on an empty split")
    drop_last = len(split) >= 2 * batch_size
    steps_per_epoch = len(split) // batch_size if drop_last else math.ceil(len(split) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=lr * batch_size / 128,
        momentum=momentum,
        nesterov=True,
        weight_decay=weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    start = 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["schedule"])
        start = int(resume_state["epochs_done"])
    model.train()
    with _progress_bar(progress, description, total, done=start * steps_per_epoch) as advance:
        for epoch in range(start, epochs):
            for x, y in batches(
                data,
                split,
                batch_size,
                seed=seed * 100_003 + epoch,
                shuffle=True,
                augment=data.augment,
                drop_last=drop_last,
            ):
                with meter.step(where):
                    with autocast(where):
                        logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                advance(epoch, float(loss.detach()))
            if on_epoch is not None:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "schedule": sched.state_dict(), "epochs_done": epoch + 1}
                on_epoch(epoch + 1, state)
    return model.to("cpu").eval()


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str, total: int, done: int = 0) -> Iterator[Any]:
    if not enabled:
        yield lambda epoch, loss: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from autoprune.progress import (
        make_console,  # late: progress imports the trial, which imports the task
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        console=make_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, completed=done, epoch=0, loss=float("nan"))
        yield lambda epoch, loss: bar.update(task, advance=1, epoch=epoch + 1, loss=loss)
