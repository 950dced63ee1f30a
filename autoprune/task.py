"""The task: a dense model and its data, rebuilt in any process from a small picklable recipe.

Without a checkpoint the dense model is trained once and cached under
``<cache_dir>/dense/<model>-<data>-<hash12>.pt`` (state dict and accuracies, loaded with
``weights_only=True``); every later call, in any process, loads it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune import meter
from autoprune.data import DataSplits, Split, batches, default_cache_dir, load_data
from autoprune.errors import UserError
from autoprune.models import build_model, load_checkpoint
from autoprune.training import train_dense

TRAIN_FORMAT = 1  # bump when train_dense changes, so stale cached models are not reused
# Dense-training epochs when the recipe leaves them unset, by data kind (the part before ":").
# Digits reach >= 98% val accuracy in 8-10 epochs; 30 would take minutes on a 2-core CPU.
DEFAULT_DENSE_EPOCHS = {"digits": 10}
FALLBACK_DENSE_EPOCHS = 30


@dataclass(frozen=True)
class TaskRecipe:
    """Everything needed to rebuild a task; picklable and hashable (workers get this, not models)."""

    model: str = "resnet20"
    data: str = "digits"
    checkpoint: str | None = None
    image_size: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    dense_epochs: int | None = None  # None -> the data set's default (DEFAULT_DENSE_EPOCHS)
    train_limit: int | None = None
    val_limit: int | None = None
    # Set for a task built from live objects (``autoprune.search(model, datasets)``): a token that
    # keys the task this process holds (``register_task``); such a task cannot be rebuilt elsewhere.
    live: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON/YAML-friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRecipe:
        """Inverse of :meth:`to_dict`; an unknown key or a wrongly typed value is a UserError."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key not in fields:
                raise UserError(f"unknown task setting {key!r}; known: {', '.join(fields)}")
            if key in ("model", "data") and not isinstance(value, str):
                raise UserError(f"task setting {key} must be a string, got {value!r}")
            if (
                key in ("checkpoint", "cache_dir", "live")
                and value is not None
                and not isinstance(value, str)
            ):
                raise UserError(f"task setting {key} must be a path string, got {value!r}")
            if key in ("image_size", "seed", "dense_epochs", "train_limit", "val_limit"):
                optional = key != "seed"
                ok = isinstance(value, int) and not isinstance(value, bool)
                if not (ok and value >= 0) and not (optional and value is None):
                    raise UserError(
                        f"task setting {key} must be a non-negative integer, got {value!r}"
                    )
        return cls(**d)


@dataclass
class Task:
    """A trained dense model (eval mode) with its data. Deep-copy ``model`` before changing it.

    The dense model's accuracies are measured on first use: the coordinator reports them, while
    a worker that only scores trials never needs them (at CIFAR scale they cost a fresh worker
    about 10 s of evaluating 15,000 images).
    """

    recipe: TaskRecipe
    model: nn.Module
    data: DataSplits
    input_shape: tuple[int, int, int]
    known_accuracy: dict[str, float] = dataclasses.field(default_factory=dict)  # split name -> dense accuracy

    @property
    def dense_val_accuracy(self) -> float:
        return self._dense_accuracy("val")

    @property
    def dense_test_accuracy(self) -> float:
        return self._dense_accuracy("test")

    def _dense_accuracy(self, split: str) -> float:
        if split not in self.known_accuracy:
            self.known_accuracy[split] = accuracy(self.model, self.data, getattr(self.data, split))
        return self.known_accuracy[split]

    def example_inputs(self, batch: int = 1) -> torch.Tensor:
        """Zeros of shape (batch, C, H, W)."""
        return torch.zeros(batch, *self.input_shape)


def cache_dir(recipe_or_none: TaskRecipe | None = None) -> Path:
    """The recipe's cache dir, else ``$AUTOPRUNE_CACHE``, else ``~/.cache/autoprune``."""
    if recipe_or_none is not None and recipe_or_none.cache_dir:
        return Path(recipe_or_none.cache_dir).expanduser()
    return default_cache_dir()


def accuracy(model: nn.Module, data: DataSplits, split: Split, batch_size: int = 256) -> float:
    """Fraction of ``split`` classified correctly (eval mode, no grad; the mode is restored)."""
    if len(split) == 0:
        raise UserError("cannot measure accuracy on an empty split")
    was_training = model.training
    model.eval()
    correct = 0
    device = meter.device_of(model)
    items = batches(data, split, batch_size, seed=0, shuffle=False)
    try:
        with torch.no_grad():
            while True:
                with meter.step(device):  # drawing the batch is work on the CPU too
                    batch = next(items, None)
                    if batch is None:
                        break
                    correct += int((model(batch[0]).argmax(1) == batch[1]).sum())
    finally:
        model.train(was_training)
    return correct / len(split)


def dense_epochs(recipe: TaskRecipe, data: DataSplits) -> int:
    """The recipe's dense epochs, or the default for its data kind (digits 10, otherwise 30)."""
    if recipe.dense_epochs is not None:
        return recipe.dense_epochs
    return DEFAULT_DENSE_EPOCHS.get(data.name.partition(":")[0], FALLBACK_DENSE_EPOCHS)


def _data_fingerprint(data: DataSplits) -> str:
    h = hashlib.sha256()
    imgs = data.train.images
    step = max(1, imgs.shape[0] // 64)
    h.update(str(tuple(imgs.shape)).encode())
    h.update(imgs[::step].contiguous().numpy().tobytes())
    h.update(data.train.labels.numpy().tobytes())
    return h.hexdigest()


def training_key(recipe: TaskRecipe, data: DataSplits, device: str = "cpu") -> str:
    """12 hex digits over everything that affects the trained dense weights (a CUDA training,
    in bfloat16 autocast, is not the CPU's: it gets a key of its own; the CPU's keys are as ever)."""
    fields = {
        "format": TRAIN_FORMAT,
        "model": recipe.model,
        "data": data.name,
        "input_shape": data.input_shape,
        "seed": recipe.seed,
        "dense_epochs": dense_epochs(recipe, data),
        "train_limit": recipe.train_limit,
        "train_data": _data_fingerprint(data),
    }
    if not device.startswith("cpu"):
        fields["device"] = device.partition(":")[0]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def dense_cache_path(recipe: TaskRecipe, data: DataSplits, device: str = "cpu") -> Path:
    """``<cache_dir>/dense/<model>-<dataname>-<hash12>.pt``."""
    kind, _, where = data.name.partition(":")
    dataname = f"{kind}-{Path(where).name}" if where else kind
    stem = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{recipe.model}-{dataname}")
    return cache_dir(recipe) / "dense" / f"{stem}-{training_key(recipe, data, device)}.pt"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so concurrent workers train a missing model once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, at worst duplicated work
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_cached(path: Path, model: nn.Module) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"], strict=True)
        float(blob["val_accuracy"]), float(blob["test_accuracy"])
        return blob
    except Exception:  # damaged or stale cache entry: train again
        return None


def _write_atomic(path: Path, blob: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


_TASKS: dict[TaskRecipe, Task] = {}


def clear_task_cache() -> None:
    """Forget the tasks built in this process (tests use it)."""
    _TASKS.clear()


def register_task(task: Task) -> None:
    """Make ``task`` (built from live objects, ``task.recipe.live`` set) what ``load_task`` returns
    for its recipe in this process: how the inline executor's trials reach a user's own model."""
    if task.recipe.live is None:
        raise ValueError("only a task built from live objects (recipe.live set) is registered")
    _TASKS[task.recipe] = task


def split_seed(recipe: TaskRecipe) -> int:
    """The seed the validation split is carved with: the search's, except for a checkpoint that
    ``autoprune train`` made on the same data, whose record (``<checkpoint>.json``) names the seed
    its own split was carved with. Carving another split would score candidates on images the
    dense model was trained on (``--seed 1`` against weights trained with ``--seed 0``)."""
    if recipe.checkpoint is None:
        return recipe.seed

    try:
        record = json.loads(Path(recipe.checkpoint).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return recipe.seed
    if not isinstance(record, dict) or not isinstance(record.get("seed"), int):
        return recipe.seed
    return record["seed"] if _same_data(str(record.get("data", "")), recipe.data) else recipe.seed


def _same_data(a: str, b: str) -> bool:
    """Two data specs name the same data (``kind:path`` with paths compared resolved)."""
    kind_a, _, where_a = a.partition(":")
    kind_b, _, where_b = b.partition(":")
    if kind_a != kind_b:
        return False
    return where_a == where_b or (bool(where_a) and Path(where_a).resolve() == Path(where_b).resolve())


def load_task(recipe: TaskRecipe, *, progress: bool = False, device: str = "cpu") -> Task:
    """Build (once per process) the task described by ``recipe``; see the module docstring.

    The returned Task is shared by every caller in this process: copy its model before pruning.
    ``device`` is where a missing dense model is trained (the task itself lives on the CPU).
    """
    cached = _TASKS.get(recipe)
    if cached is not None:
        return cached
    if recipe.live is not None:
        raise UserError(
            f"the task {recipe.model} on {recipe.data} was built from a live model or datasets (the Python API), "
            "which only the process that built it holds; give a model spec and a data spec (--model, --data, "
            "--checkpoint) to rebuild it here"
        )
    data = load_data(
        recipe.data,
        image_size=recipe.image_size,
        seed=split_seed(recipe),
        cache_dir=cache_dir(recipe),
        progress=progress,
    )
    data = data.with_limits(recipe.train_limit, recipe.val_limit, recipe.seed)
    c, h, w = data.input_shape
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, num_classes=data.num_classes, in_channels=c)
    if recipe.checkpoint is not None:
        load_checkpoint(model, recipe.checkpoint, spec=recipe.model)
        known: dict[str, float] = {}  # measured when first asked for
    else:
        known = _dense_model(recipe, data, model, progress, device)
    task = Task(recipe, model.eval(), data, (c, h, w), known)
    _TASKS[recipe] = task
    return task


def _dense_model(
    recipe: TaskRecipe, data: DataSplits, model: nn.Module, progress: bool, device: str = "cpu"
) -> dict[str, float]:
    """Load the cached dense weights into ``model``, or train and cache them; the accuracies the
    cache holds (val only where it was measured on the same validation subset)."""
    from autoprune.device import resolve

    path = dense_cache_path(recipe, data, str(resolve(device)))
    epochs = dense_epochs(recipe, data)
    initial = copy.deepcopy(model.state_dict())
    with _file_lock(path.with_name(path.name + ".lock")):
        blob = _read_cached(path, model)
        if blob is None:
            model.load_state_dict(initial)
            from autoprune.progress import make_console

            make_console(stderr=True).print(
                f"training the dense {recipe.model} on {data.name} once "
                f"({epochs} epochs, {len(data.train)} images); cached at {path}",
                highlight=False,
                soft_wrap=True,
            )
            train_dense(
                model,
                data,
                epochs=epochs,
                seed=recipe.seed,
                progress=progress,
                description=f"training {recipe.model}",
                device=device,
            )
            blob = {
                "state_dict": model.state_dict(),
                "val_accuracy": accuracy(model, data, data.val),
                "test_accuracy": accuracy(model, data, data.test),
                "val_limit": recipe.val_limit,
                "recipe": recipe.to_dict(),
            }
            _write_atomic(path, blob)
    model.eval()
    known = {"test": float(blob["test_accuracy"])}
    if blob.get("val_limit", None) == recipe.val_limit:  # else: same weights, another val subset
        known["val"] = float(blob["val_accuracy"])
    return known
