"""Image-folder trees (``train/<class>/*``, ``test/<class>/*``) decoded once and cached as .npz."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from autoprune.data._base import DataSplits, Split, default_cache_dir, make_splits, split_off
from autoprune.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
)
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2  # carved from a flat DIR/<class>/ tree that has no test/ folder
TEST_SEED = 20240601  # fixed: the test split never depends on the search seed
CACHE_FORMAT = 1


def _classes(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> tuple[list[str], list[int], int, int]:
    """Image files under folder/<class>/ (sorted), their labels, max mtime_ns and total bytes."""
    paths: list[str] = []
    labels: list[int] = []
    mtime = 0
    size = 0
    for label, cls in enumerate(classes):
        d = folder / cls
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            entries = sorted(
                (
                    e
                    for e in it
                    if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file()
                ),
                key=lambda e: e.name,
            )
        for e in entries:
            st = e.stat()
            mtime = max(mtime, st.st_mtime_ns)
            size += st.st_size
            paths.append(e.path)
            labels.append(label)
    return paths, labels, mtime, size


def _decode_one(path: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            if size is not None and rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types for broken files
        raise UserError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def decode_images(
    paths: list[str], size: tuple[int, int] | None, *, progress: bool = True
) -> np.ndarray:
    """Decode ``paths`` with Pillow into an N x H x W x 3 uint8 array, resized to ``size`` (W, H).

    Without ``size`` every image takes the size of the first one. Decoding runs in this thread:
    for small images a thread pool was slower (the GIL is held outside libjpeg), and forking
    workers from a process that holds torch is not worth the risk for a one-time cost.
    """
    if not paths:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    first = _decode_one(paths[0], size)
    h, w = first.shape[:2]
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    out[0] = first
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("decoding images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=Console(stderr=True), transient=True, disable=not progress
    ) as bar:
        task = bar.add_task("decode", total=len(paths), completed=1)
        for i in range(1, len(paths)):
            out[i] = _decode_one(paths[i], (w, h))
            if i % 512 == 0:
                bar.update(task, completed=i + 1)
        bar.update(task, completed=len(paths))
    return out


def _cache_path(root: Path, cache_dir: Path, key: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name) or "root"
    return cache_dir / "data" / f"imagefolder-{stem}-{key}.npz"


def _load_cached(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("images", "labels", "is_test")}
    except Exception:  # missing or damaged cache: decode again
        return None


def _save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_imagefolder_splits(
    root: str | Path,
    *,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DataSplits:
    """An image-folder tree as DataSplits; decoded arrays are cached under ``cache_dir/data``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    train_dir, test_dir = root / "train", root / "test"
    flat = not train_dir.is_dir()
    classes = _classes(root if flat else train_dir)
    if not classes:
        raise UserError(f"{root} has no class folders (expected train/<class>/* or <class>/*)")
    if len(classes) < 2:
        raise UserError(f"{root} has one class folder ({classes[0]}); a classifier needs at least two")
    paths, labels, mtime, nbytes = _scan(root if flat else train_dir, classes)
    is_test = [False] * len(paths)
    if not flat and test_dir.is_dir():
        unknown = sorted(set(_classes(test_dir)) - set(classes))
        if unknown:
            raise UserError(f"{test_dir} has classes missing from train/: {', '.join(unknown)}")
        tpaths, tlabels, tmtime, tbytes = _scan(test_dir, classes)
        paths += tpaths
        labels += tlabels
        is_test += [True] * len(tpaths)
        mtime, nbytes = max(mtime, tmtime), nbytes + tbytes
    elif not flat:
        raise UserError(f"{root} has train/ but no test/ folder")
    if not paths:
        raise UserError(f"{root} contains no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")

    size = None if image_size is None else (image_size, image_size)
    key_text = f"{CACHE_FORMAT}|{root}|{len(paths)}|{mtime}|{nbytes}|{size}|{'/'.join(classes)}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache = _cache_path(root, Path(cache_dir) if cache_dir else default_cache_dir(), key)
    arrays = _load_cached(cache)
    if arrays is None or arrays["images"].shape[0] != len(paths):
        images = decode_images(paths, size, progress=progress)
        arrays = {
            "images": images,
            "labels": np.asarray(labels, dtype=np.int64),
            "is_test": np.asarray(is_test, dtype=bool),
        }
        try:
            _save_cached(cache, arrays)
        except OSError:  # a read-only cache only costs speed
            pass

    images_t = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous()
    labels_t = torch.from_numpy(arrays["labels"]).to(torch.int64)
    test_mask = torch.from_numpy(arrays["is_test"])
    everything = Split(images_t, labels_t)
    if flat:
        train, test = split_off(everything, TEST_FRACTION, TEST_SEED)
    else:
        train = everything.take(torch.nonzero(~test_mask).flatten())
        test = everything.take(torch.nonzero(test_mask).flatten())
    return make_splits(
        f"imagefolder:{root}",
        train,
        test,
        len(classes),
        seed=seed,
        val_fraction=VAL_FRACTION if val_fraction is None else val_fraction,
        augment=True,
    )
