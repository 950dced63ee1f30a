"""Splits of uint8 images held in memory, deterministic batching and vectorised augmentation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from autoprune.errors import UserError


def default_cache_dir() -> Path:
    """``$AUTOPRUNE_CACHE`` if set, else ``~/.cache/autoprune``."""
    env = os.environ.get("AUTOPRUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoprune"


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation of ``range(len(labels))`` whose every prefix is (close to) class-stratified.

    Items are shuffled with a generator seeded by ``seed``; the k-th item of a class with c
    members gets the key (k + 0.5) / c, and a stable sort on the keys interleaves the classes in
    proportion to their sizes.
    """
    n = int(labels.numel())
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    lab = labels[perm].numpy()
    keys = np.empty(n, dtype=np.float64)
    for c in np.unique(lab):
        where = np.nonzero(lab == c)[0]
        keys[where] = (np.arange(where.size) + 0.5) / where.size
    order = np.argsort(keys, kind="stable")
    return perm[torch.from_numpy(order)]


@dataclass(frozen=True)
class Split:
    """Images (uint8, N x C x H x W) and their labels (int64, N)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, index: torch.Tensor) -> Split:
        """The items at ``index`` (kept in the given order)."""
        return Split(self.images[index].contiguous(), self.labels[index].contiguous())

    def subset(self, n: int, seed: int) -> Split:
        """A deterministic class-stratified subset of ``n`` items (all of them if n >= len)."""
        if n >= len(self):
            return self
        if n < 0:
            raise UserError(f"a subset size must be >= 0, got {n}")
        index, _ = torch.sort(stratified_order(self.labels, seed)[:n])
        return self.take(index)


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held): a stratified fraction of ``split`` held out, deterministic from ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"a held-out fraction must be between 0 and 1, got {fraction}")
    order = stratified_order(split.labels, seed)
    n_held = min(len(split) - 1, max(1, round(fraction * len(split))))
    held, _ = torch.sort(order[:n_held])
    rest, _ = torch.sort(order[n_held:])
    return split.take(rest), split.take(held)


def resize_uint8(
    images: torch.Tensor, size: int | tuple[int, int], chunk: int = 4096
) -> torch.Tensor:
    """Bilinear resize of uint8 N x C x H x W images (antialiased when shrinking), in chunks."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    shrink = hw[0] < images.shape[-2] or hw[1] < images.shape[-1]
    out = torch.empty((images.shape[0], images.shape[1], *hw), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].float()
        y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (exact, from histograms)."""
    if images.shape[0] == 0:
        raise UserError("the training split is empty")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = float((p * values).sum())
        var = float((p * (values - mean) ** 2).sum())
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))
    return tuple(means), tuple(stds)


@dataclass(frozen=True)
class DataSplits:
    """Train/val/test splits of one data set at the task resolution.

    ``val`` is carved from the training images (deterministic from the seed) and is what searches
    score on; ``test`` is for final figures only.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """float32 images: (x / 255 - mean) / std per channel."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
        return (images_uint8.to(torch.float32).div_(255.0) - mean).div_(std)

    def with_limits(self, train_limit: int | None, val_limit: int | None, seed: int) -> DataSplits:
        """A copy whose train/val splits are stratified subsets of at most the given sizes."""
        train = self.train if train_limit is None else self.train.subset(train_limit, seed)
        val = self.val if val_limit is None else self.val.subset(val_limit, seed + 1)
        return DataSplits(
            self.name, train, val, self.test, self.num_classes, self.mean, self.std, self.augment
        )


def check_splits(name: str, train: Split, test: Split) -> None:
    """Refuse data a search cannot mean anything on: fewer than two classes, or an empty split."""
    if len(train) < 2:
        raise UserError(f"data {name}: the training split has {len(train)} images; at least 2 are needed")
    if len(test) == 0:
        raise UserError(f"data {name}: the test split is empty")
    classes = torch.unique(train.labels).numel()
    if classes < 2:
        raise UserError(f"data {name}: the training images are all of one class; a classifier needs at least two")


def make_splits(
    name: str,
    train_full: Split,
    test: Split,
    num_classes: int,
    *,
    seed: int,
    val_fraction: float,
    augment: bool,
) -> DataSplits:
    """Carve val from ``train_full`` and compute normalisation statistics on what remains."""
    check_splits(name, train_full, test)
    train, val = split_off(train_full, val_fraction, seed)
    mean, std = channel_stats(train.images)
    return DataSplits(name, train, val, test, num_classes, mean, std, augment)


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of H/8, i.e. 4 px at 32 px) and horizontal flip of a uint8 batch."""
    b, c, h, w = images.shape
    pad = max(1, round(h / 8))
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    return padded[
        torch.arange(b)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def batches(
    data: DataSplits,
    split: Split,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``split``: (normalised float32 x, int64 y), deterministic given ``seed``."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(int(seed))
    n = len(split)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        x = split.images[idx]
        if augment:
            x = augment_batch(x, g)
        yield data.normalize(x), split.labels[idx]


def endless_batches(
    data: DataSplits, split: Split, batch_size: int, *, seed: int, augment: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches forever; epoch e is shuffled with ``seed + e``.

    Full batches only, unless the split is smaller than one batch (then the whole split each time).
    """
    if len(split) == 0:
        raise UserError("cannot draw batches from an empty split")
    drop_last = len(split) >= batch_size
    epoch = 0
    while True:
        yield from batches(
            data,
            split,
            batch_size,
            seed=seed + epoch,
            shuffle=True,
            augment=augment,
            drop_last=drop_last,
        )
        epoch += 1
