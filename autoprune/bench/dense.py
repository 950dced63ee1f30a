"""``autoprune train``: the project's own training command for the dense reference models.

Trains a built-in model on the training split only (the validation split is carved from the
training images with the seed, and the test split is evaluated once at the end), writes the
state dict to ``--out`` and a sidecar ``<out>.json`` with the exact command, the accuracies, the
epochs, the time taken and the versions. ``autoprune bench`` reads the sidecar to say how its
dense models were made; every later run loads the weights instead of retraining.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.errors import UserError


@dataclass(frozen=True)
class TrainSpec:
    """What ``autoprune train`` trains (defaults match the bench recipes)."""

    model: str
    data: str
    out: Path
    epochs: int = 30
    seed: int = 0
    image_size: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    train_limit: int | None = None
    cache_dir: str | None = None
    threads: int | None = None
    device: str = "auto"  # not a resume field: the saved state continues on any device
    init: str | None = None  # weights of an earlier `autoprune train` to continue from (a new schedule)


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def partial_path(checkpoint: Path) -> Path:
    """Where an unfinished training keeps its state after each epoch (removed when it ends)."""
    return checkpoint.with_suffix(".partial.pt")


# The spec fields a partial training must share with the command that continues it.
_RESUME_FIELDS = ("model", "data", "epochs", "seed", "image_size", "batch_size", "lr", "train_limit", "init")


def _resume_state(spec: TrainSpec, log) -> dict[str, Any] | None:
    """The saved state of an interrupted training of this spec, or None to start afresh."""
    import torch

    path = partial_path(spec.out)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to remove
        raise UserError(f"cannot read the partial training {path} ({exc}); delete it to start afresh") from None
    wanted = {k: getattr(spec, k) for k in _RESUME_FIELDS}
    if saved.get("spec") != wanted:
        diff = ", ".join(f"{k}={saved.get('spec', {}).get(k)!r}" for k in _RESUME_FIELDS
                         if saved.get("spec", {}).get(k) != wanted[k])
        raise UserError(f"{path} holds a partial training with other settings ({diff}); "
                        "give the same settings to continue it, or delete it to start afresh")
    log(f"continuing the training in {path} after epoch {saved['state']['epochs_done']} of {spec.epochs}")
    return saved


def _save_partial(spec: TrainSpec, state: dict[str, Any], seconds: float) -> None:
    import torch

    path = partial_path(spec.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"spec": {k: getattr(spec, k) for k in _RESUME_FIELDS}, "state": state,
                "seconds": seconds}, tmp)
    os.replace(tmp, path)


def read_sidecar(checkpoint: Path) -> dict[str, Any]:
    """The training record next to a checkpoint, or {} when there is none (or it is damaged)."""
    path = sidecar_path(checkpoint)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _init_record(spec: TrainSpec) -> dict[str, Any]:
    """The training record of ``--init``: it must come from ``autoprune train`` on the same data,
    split seed, model and resolution, or the held-out validation images may have been trained on."""
    init = Path(spec.init or "")
    if not init.is_file():
        raise UserError(f"--init {spec.init}: no such file; give the weights of an earlier autoprune train")
    record = read_sidecar(init)
    if not record:
        raise UserError(f"--init {spec.init}: no training record {sidecar_path(init)} beside it; --init continues "
                        "a model made by autoprune train, whose record says how its validation split was carved")
    differ = [f"{key} {record.get(key)!r} (here {getattr(spec, key)!r})" for key in ("model", "data", "seed", "image_size")
              if record.get(key) != getattr(spec, key)]
    if differ:
        raise UserError(f"--init {spec.init} was trained with other settings: {', '.join(differ)}; give the same "
                        "--model, --data, --seed and --image-size, so the validation split stays unseen")
    return record


def train_command_for(settings, checkpoint: str) -> str:
    """The ``autoprune train`` command that makes ``checkpoint`` for these search settings."""
    args = ["autoprune", "train", "--model", settings.model, "--data", settings.data,
            "--epochs", str(settings.dense_epochs), "--seed", str(settings.seed), "--out", checkpoint]
    if settings.image_size:
        args += ["--image-size", str(settings.image_size)]
    return shlex.join(args)


def train_reference(spec: TrainSpec, command: str, *, log=print) -> dict[str, Any]:
    """Train, evaluate once on val and test, save the state dict and the sidecar; the record."""
    import torch

    from autoprune.data import load_data
    from autoprune.device import resolve
    from autoprune.models import build_model, load_checkpoint
    from autoprune.task import accuracy
    from autoprune.training import train_dense

    resolve(spec.device)  # a bad --device fails before the data is read
    if spec.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {spec.epochs}")
    if spec.threads is not None and spec.threads < 1:
        raise UserError(f"--threads must be at least 1, got {spec.threads}")
    torch.set_num_threads(spec.threads or max(1, os.cpu_count() or 1))
    data = load_data(spec.data, image_size=spec.image_size, seed=spec.seed, cache_dir=spec.cache_dir)
    data = data.with_limits(spec.train_limit, None, spec.seed)
    c, _, _ = data.input_shape
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, num_classes=data.num_classes, in_channels=c)
    before = _init_record(spec) if spec.init else None
    if spec.init:
        load_checkpoint(model, spec.init, spec=spec.model)
        log(f"starting from {spec.init} ({before['epochs']} epochs, test {before['test_accuracy']:.4f}): "
            f"a new schedule of {spec.epochs} epochs from lr {spec.lr}")
    log(f"training {spec.model} on {data.name}: {len(data.train)} training images ({len(data.val)} held out for "
        f"validation, {len(data.test)} test), {spec.epochs} epochs; the state is saved after each epoch "
        f"in {partial_path(spec.out)}, so the same command continues an interrupted run")
    saved = _resume_state(spec, log)
    earlier = float(saved["seconds"]) if saved else 0.0
    started = time.perf_counter()

    def checkpoint(epochs_done: int, state: dict[str, Any]) -> None:
        _save_partial(spec, state, earlier + time.perf_counter() - started)
        log(f"epoch {epochs_done}/{spec.epochs} done ({(earlier + time.perf_counter() - started) / 60:.1f} min)")

    train_dense(model, data, epochs=spec.epochs, seed=spec.seed, batch_size=spec.batch_size, lr=spec.lr,
                progress=True, description=f"training {spec.model}",
                resume_state=saved["state"] if saved else None, on_epoch=checkpoint, device=spec.device)
    seconds = earlier + time.perf_counter() - started
    record = {
        "command": command, "model": spec.model, "data": spec.data, "seed": spec.seed, "epochs": spec.epochs,
        "batch_size": spec.batch_size, "lr": spec.lr, "image_size": spec.image_size, "train_limit": spec.train_limit,
        "train_images": len(data.train), "val_images": len(data.val), "test_images": len(data.test),
        "val_accuracy": accuracy(model, data, data.val), "test_accuracy": accuracy(model, data, data.test),
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "device": str(resolve(spec.device)),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": _versions(),
    }
    if before is not None:  # the whole history: what this run continued, and the totals
        record["init"] = {"checkpoint": spec.init, **{k: v for k, v in before.items() if k != "versions"}}
        record["total_epochs"] = int(before.get("total_epochs", before["epochs"])) + spec.epochs
        record["total_train_seconds"] = round(float(before.get("total_train_seconds", before["train_seconds"])) + seconds, 1)
    spec.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), spec.out)
    sidecar_path(spec.out).write_text(json.dumps(record, indent=2) + "\n")
    partial_path(spec.out).unlink(missing_ok=True)
    log(f"wrote {spec.out} (val {record['val_accuracy']:.4f}, test {record['test_accuracy']:.4f}, "
        f"{seconds / 60:.1f} min) and {sidecar_path(spec.out)}")
    return record


def _versions() -> dict[str, str]:
    from autoprune.bench.machine import package_versions

    return package_versions()
