"""A user's own torch datasets as ``DataSplits``: what ``autoprune.search(model, (train, val, test))``
searches on.

Every item is read once into memory as uint8, as the built-in data sets are, so a search's batches
are deterministic from the seed and cheap. Items are ``(image, label)``: an image is a C x H x W
tensor in [0, 1] (``transforms.ToTensor()``) or uint8, or a PIL image; autoprune normalises with
the training split's per-channel statistics itself, so give images un-normalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from autoprune.data._base import DataSplits, Split, channel_stats, check_splits, split_off
from autoprune.errors import UserError

VAL_FRACTION = 0.1


def _image(item: Any, where: str) -> torch.Tensor:
    if not isinstance(item, torch.Tensor):
        array = np.asarray(item)  # a PIL image: H x W (x C)
        if array.ndim not in (2, 3):
            raise UserError(f"{where}: an image must be a C x H x W tensor or a PIL image, got {type(item).__name__}")
        item = torch.from_numpy(array if array.ndim == 3 else array[:, :, None]).permute(2, 0, 1)
        if item.dtype != torch.uint8:
            raise UserError(f"{where}: a PIL image must hold 8-bit pixels, got {array.dtype}")
    if item.dim() != 3:
        raise UserError(f"{where}: an image must be C x H x W, got shape {tuple(item.shape)}")
    if item.dtype == torch.uint8:
        return item
    if not item.is_floating_point():
        raise UserError(f"{where}: images must be uint8 or float in [0, 1], got {item.dtype}")
    low, high = float(item.min()), float(item.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise UserError(
            f"{where}: image values lie in [{low:.3g}, {high:.3g}], not [0, 1]; give un-normalised images "
            "(transforms.ToTensor() without Normalize): autoprune normalises with the training split's statistics"
        )
    return (item * 255).round_().clamp_(0, 255).to(torch.uint8)


def read_split(dataset: Any, name: str) -> Split:
    """Every ``(image, label)`` item of a map-style or iterable dataset, as one uint8 ``Split``."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    try:
        items = iter(dataset)
    except TypeError:
        raise UserError(f"the {name} data is a {type(dataset).__name__}, not a dataset of (image, label) items") from None
    for i, item in enumerate(items):
        where = f"the {name} data, item {i}"
        if not isinstance(item, Sequence) or len(item) < 2:
            raise UserError(f"{where}: expected an (image, label) pair, got {type(item).__name__}")
        image, label = item[0], item[1]
        images.append(_image(image, where))
        try:
            labels.append(int(label))
        except (TypeError, ValueError):
            raise UserError(f"{where}: a label must be a class index, got {label!r}") from None
        if images[-1].shape != images[0].shape:
            raise UserError(f"{where}: image shape {tuple(images[-1].shape)} differs from the first item's "
                            f"{tuple(images[0].shape)}; resize every image to one size (e.g. transforms.Resize)")
    if not images:
        raise UserError(f"the {name} data is empty")
    return Split(torch.stack(images).contiguous(), torch.tensor(labels, dtype=torch.int64))


def as_splits(datasets: Any) -> tuple[Any, Any | None, Any]:
    """(train, val or None, test) from ``{"train", "val", "test"}``, ``(train, val, test)`` or
    ``(train, test)`` (validation then held out of train)."""
    if isinstance(datasets, Mapping):
        unknown = set(datasets) - {"train", "val", "test"}
        if unknown or "train" not in datasets or "test" not in datasets:
            raise UserError(f"data as a mapping needs the keys train and test (and optionally val), got {sorted(datasets)}")
        return datasets["train"], datasets.get("val"), datasets["test"]
    if isinstance(datasets, (tuple, list)) and len(datasets) in (2, 3):
        return (datasets[0], None, datasets[1]) if len(datasets) == 2 else tuple(datasets)  # type: ignore[return-value]
    raise UserError("data must be a spec string ('digits', 'imagefolder:DIR'), a (train, val, test) or (train, test) "
                    f"tuple of datasets, or a mapping with train/val/test; got {type(datasets).__name__}")


def from_datasets(datasets: Any, *, seed: int = 0, augment: bool = False, name: str = "datasets") -> DataSplits:
    """``DataSplits`` of a user's datasets (see ``as_splits`` for the shapes accepted).

    Without a validation set, ``VAL_FRACTION`` of train is held out (stratified, from ``seed``).
    ``augment`` turns on the random crop and flip the built-in image data sets train with.
    """
    train_ds, val_ds, test_ds = as_splits(datasets)
    train, test = read_split(train_ds, "train"), read_split(test_ds, "test")
    check_splits(name, train, test)
    if val_ds is None:
        train, val = split_off(train, VAL_FRACTION, seed)
    else:
        val = read_split(val_ds, "val")
    shapes = {tuple(s.images.shape[1:]) for s in (train, val, test)}
    if len(shapes) > 1:
        raise UserError(f"train, val and test images differ in shape ({sorted(shapes)}); resize them to one size")
    num_classes = int(max(int(s.labels.max()) for s in (train, val, test))) + 1
    mean, std = channel_stats(train.images)
    return DataSplits(name, train, val, test, num_classes, mean, std, augment)
