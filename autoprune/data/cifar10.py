"""CIFAR-10 in its original *python* format, read with an unpickler that only builds numpy arrays."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.data._base import DataSplits, Split, make_splits, resize_uint8
from autoprune.errors import UserError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
VAL_FRACTION = 0.1

# (module, name) pairs a pickle of plain numpy arrays needs; everything else is refused.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("codecs", "encode"),
}


def _resolve(kind: str, name: str) -> Any:
    if kind == "numpy":
        return getattr(np, name)
    if kind == "codecs":
        import codecs

        return codecs.encode
    try:  # numpy >= 2 keeps these in numpy._core; importing numpy.core there warns
        import numpy._core.multiarray as multiarray
        import numpy._core.numeric as numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray  # type: ignore[no-redef]
        import numpy.core.numeric as numeric  # type: ignore[no-redef]
    return getattr(multiarray if kind == "multiarray" else numeric, name)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and numpy arrays; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise UserError(
                f"{self.source} is not a plain CIFAR-10 batch: it refers to {module}.{name}, "
                "which autoprune will not load (only numpy arrays are allowed)"
            )
        return _resolve(*target)


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`; any failure is a one-line UserError."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, str(path)).load()
    except UserError:
        raise
    except Exception as e:  # corrupt files raise all sorts of things
        raise UserError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from None


def _get(batch: Any, key: str, path: Path) -> Any:
    if isinstance(batch, dict):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
    raise UserError(f"{path} is not a CIFAR-10 batch: it has no {key!r} entry")


def read_batch(path: Path) -> Split:
    """One batch file as a Split of 3 x 32 x 32 uint8 images."""
    batch = safe_load(path)
    data = np.asarray(_get(batch, "data", path))
    labels = np.asarray(_get(batch, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(
            f"{path}: expected uint8 data of shape N x 3072, got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: expected {data.shape[0]} integer labels, got {labels.shape}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, torch.from_numpy(labels.astype(np.int64)))


def find_batches_dir(root: Path) -> Path:
    """The folder holding data_batch_1..5 and test_batch (``root`` or its cifar-10-batches-py/)."""
    if not root.is_dir():
        raise UserError(f"CIFAR-10 directory {root} does not exist")
    for d in (root, root / "cifar-10-batches-py"):
        if all((d / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
            return d
    train = root / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        raise UserError(
            f"{root} looks like an image-folder tree (train/<class>/...), not the CIFAR-10 python "
            f"format; use imagefolder:{root}"
        )
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (root / f).is_file()]
    raise UserError(
        f"{root} is not a CIFAR-10 python-format directory: missing {', '.join(missing)} "
        "(expected data_batch_1..5 and test_batch, possibly inside cifar-10-batches-py/)"
    )


def _concat(parts: list[Split]) -> Split:
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def load_cifar10_splits(
    root: str | Path,
    *,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
) -> DataSplits:
    """CIFAR-10 from ``root``; val is a stratified ``val_fraction`` (default 0.1) of the train set."""
    d = find_batches_dir(Path(root).expanduser())
    train = _concat([read_batch(d / f) for f in TRAIN_FILES])
    test = read_batch(d / TEST_FILE)
    labels = torch.cat([train.labels, test.labels])
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{d}: CIFAR-10 labels must be in 0..9")
    if image_size is not None and image_size != 32:
        train = Split(resize_uint8(train.images, image_size), train.labels)
        test = Split(resize_uint8(test.images, image_size), test.labels)
    return make_splits(
        f"cifar10:{Path(root).expanduser().resolve()}",
        train,
        test,
        10,
        seed=seed,
        val_fraction=VAL_FRACTION if val_fraction is None else val_fraction,
        augment=True,
    )
